-- Dispatches one routed ingest entry exactly once: record, timeline, event, SLA timers, indexes,
-- department streams, and the ack of the ingest entry happen together or not at all.
-- KEYS: 1 ingest stream, 2 incident hash, 3 timeline, 4 timer set, 5 index of all incidents,
--       6 department index, 7 events stream, 8 duplicate-detection geo set (or the incident
--       hash again when the category has none), 9..(8+R) region indexes, then one dispatch
--       stream per department
-- ARGV: 1 group, 2 entry id, 3 route generation, 4 incident id, 5 department, 6 decision bytes,
--       7 dispatch time (ms), 8 accept due (ms), 9 resolve due (ms), 10 timeline event bytes,
--       11 R, 12 dispatch stream max length, 13 timer list ('kind|dept,...'), 14 region codes,
--       15 longitude ('' = no duplicate detection), 16 latitude, 17 events stream max length,
--       18 T (timers), 19 W3C traceparent of the dispatch ('' = none), then T pairs (due, member),
--       then one dispatch payload per stream
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
  'dispatched_at', ARGV[7], 'accept_due', ARGV[8], 'resolve_due', ARGV[9], 'timers', ARGV[13],
  'regions', ARGV[14])
redis.call('HSETNX', KEYS[2], 'first_dispatched_at', ARGV[7])
redis.call('HDEL', KEYS[2], 'fired', 'accepted_at')
redis.call('HINCRBY', KEYS[2], 'v', 1)
redis.call('RPUSH', KEYS[3], ARGV[7] .. '|' .. ARGV[10])
redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[17], '*', 'id', id, 's', 'dispatched', 'd', ARGV[5],
  'r', ARGV[14], 'e', ARGV[10])
local nt = tonumber(ARGV[18])
for i = 1, nt do
  redis.call('ZADD', KEYS[4], ARGV[18 + 2 * i], ARGV[19 + 2 * i])
end
redis.call('ZADD', KEYS[5], 0, id)
redis.call('ZADD', KEYS[6], 0, id)
if ARGV[15] ~= '' then
  redis.call('GEOADD', KEYS[8], ARGV[15], ARGV[16], id)
  redis.call('HSET', KEYS[2], 'geo', KEYS[8])
end
local r = tonumber(ARGV[11])
for i = 1, r do
  redis.call('ZADD', KEYS[8 + i], 0, id)
end
local first = 9 + r
local payload = 20 + 2 * nt
for k = first, #KEYS do
  redis.call('XADD', KEYS[k], 'MAXLEN', '~', ARGV[12], '*', 'id', id, 'd', ARGV[payload + k - first],
    'tp', ARGV[19])
end
ack()
return 1
