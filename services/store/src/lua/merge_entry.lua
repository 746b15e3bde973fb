-- Marks a routed report as merged into an open incident, and acknowledges its ingest entry.
-- Runs after the open incident took the duplicate (an applied plan on its own partition).
-- KEYS: 1 ingest stream, 2 incident hash, 3 timeline, 4 events stream
-- ARGV: 1 group, 2 entry id, 3 route generation, 4 open incident id, 5 timeline event bytes,
--       6 decision bytes, 7 region codes, 8 incident id, 9 the states an incident is routed
--       from (comma-separated), 10 the merged state (both from the core's lifecycle)
-- Returns 1 merged, 0 this generation was already handled (a redelivery).
local cur = redis.call('HMGET', KEYS[2], 'status', 'gen')
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
local routable = false
for s in string.gmatch(ARGV[9], '[^,]+') do
  routable = routable or cur[1] == s
end
if not routable or cur[2] ~= ARGV[3] then
  return 0
end
local t = redis.call('TIME')
local now = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
redis.call('HSET', KEYS[2], 'status', ARGV[10], 'merged_into', ARGV[4], 'decision', ARGV[6],
  'regions', ARGV[7])
redis.call('HINCRBY', KEYS[2], 'v', 1)
redis.call('RPUSH', KEYS[3], now .. '|' .. ARGV[5])
redis.call('XADD', KEYS[4], '*', 'id', ARGV[8], 's', ARGV[10], 'd', '',
  'r', ARGV[7], 'e', ARGV[5])
return 1
