-- Accepts one report: idempotency check, incident record, timeline, ingest entry, atomically.
-- KEYS: 1 idempotency key, 2 incident hash, 3 timeline list, 4 ingest stream, 5 events stream
-- ARGV: 1 payload hash, 2 incident id, 3 report bytes, 4 idempotency ttl (s), 5 timeline event bytes,
--       6 events stream max length, 7 W3C traceparent ('' = none)
-- Returns {0, id} new, {1, id} retry of the same payload, {2, id} same key with another payload.
local prev = redis.call('GET', KEYS[1])
if prev then
  local sep = string.find(prev, '|', 1, true)
  local id = string.sub(prev, sep + 1)
  if string.sub(prev, 1, sep - 1) == ARGV[1] then
    return {1, id}
  end
  return {2, id}
end
local t = redis.call('TIME')
local now = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'EX', ARGV[4])
redis.call('HSET', KEYS[2], 'report', ARGV[3], 'status', 'reported', 'gen', '0', 'reported_at', now)
redis.call('RPUSH', KEYS[3], now .. '|' .. ARGV[5])
redis.call('XADD', KEYS[4], '*', 'id', ARGV[2], 'g', '0', 't', now, 'r', ARGV[3], 'tp', ARGV[7])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[6], '*', 'id', ARGV[2], 's', 'reported', 'd', '', 'r', '',
  'e', ARGV[5])
return {0, ARGV[2]}
