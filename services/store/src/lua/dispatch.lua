-- Dispatches one routed ingest entry exactly once: record, timeline, SLA timers, indexes,
-- department streams, and the ack of the ingest entry happen together or not at all.
-- KEYS: 1 ingest stream, 2 incident hash, 3 timeline, 4 sla zset, 5 index of all incidents,
--       6 department index, 7..(6+R) region indexes, then one dispatch stream per department
-- ARGV: 1 group, 2 entry id, 3 route generation, 4 incident id, 5 department, 6 decision bytes,
--       7 dispatch time (ms), 8 accept due (ms), 9 resolve due (ms), 10 timeline event bytes,
--       11 R, 12 dispatch stream max length, 13.. one dispatch payload per dispatch stream
-- Returns 1 when dispatched, 0 when this generation was already dispatched (a redelivery).
local cur = redis.call('HMGET', KEYS[2], 'status', 'gen')
local function ack()
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
end
if (cur[1] ~= 'reported' and cur[1] ~= 'returned') or cur[2] ~= ARGV[3] then
  ack()
  return 0
end
local id = ARGV[4]
redis.call('HSET', KEYS[2], 'status', 'dispatched', 'dept', ARGV[5], 'decision', ARGV[6],
  'dispatched_at', ARGV[7], 'accept_due', ARGV[8], 'resolve_due', ARGV[9])
redis.call('RPUSH', KEYS[3], ARGV[7] .. '|' .. ARGV[10])
redis.call('ZADD', KEYS[4], ARGV[8], id .. ':accept', ARGV[9], id .. ':resolve')
redis.call('ZADD', KEYS[5], 0, id)
redis.call('ZADD', KEYS[6], 0, id)
local r = tonumber(ARGV[11])
for i = 1, r do
  redis.call('ZADD', KEYS[6 + i], 0, id)
end
local first = 7 + r
for k = first, #KEYS do
  redis.call('XADD', KEYS[k], 'MAXLEN', '~', ARGV[12], '*', 'id', id, 'd', ARGV[13 + k - first])
end
ack()
return 1
