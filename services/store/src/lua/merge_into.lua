-- Merges a new report into an open incident of the same category nearby (并案), on the open
-- incident's side: it gains the duplicate, keeps the earlier resolve deadline, and notes it.
-- KEYS: 1 open incident hash, 2 its timeline, 3 its merged set, 4 events stream, 5 timer set
-- ARGV: 1 duplicate id, 2 duplicate's report time (ms), 3 window (ms), 4 timeline event bytes,
--       5 the duplicate's resolve deadline (ms), 6 events stream max length, 7 open incident id
-- Returns 1 merged (or already merged), 0 the incident is no longer open or too old.
local cur = redis.call('HMGET', KEYS[1], 'status', 'reported_at', 'resolve_due', 'dept', 'regions')
local open = {dispatched = true, accepted = true, in_progress = true, reopened = true, suspended = true}
if not cur[1] or not open[cur[1]] then
  return 0
end
if tonumber(cur[2]) < tonumber(ARGV[2]) - tonumber(ARGV[3]) then
  return 0
end
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then
  return 1
end
local t = redis.call('TIME')
local now = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
redis.call('RPUSH', KEYS[2], now .. '|' .. ARGV[4])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'id', ARGV[7], 's', cur[1], 'd', cur[4] or '',
  'r', cur[5] or '', 'e', ARGV[4])
-- The case keeps the earliest deadline.
local due = tonumber(ARGV[5])
if cur[3] and due < tonumber(cur[3]) and cur[1] ~= 'suspended' then
  redis.call('HSET', KEYS[1], 'resolve_due', ARGV[5])
  redis.call('ZADD', KEYS[5], 'XX', ARGV[5], ARGV[7] .. '|urge|' .. (cur[4] or ''))
end
redis.call('HINCRBY', KEYS[1], 'v', 1)
return 1
