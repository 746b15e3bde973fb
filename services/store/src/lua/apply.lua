-- Applies one planned lifecycle change, only if the record is still the one the plan was made
-- from (optimistic concurrency on the record's version `v`), and records the request id so a
-- retry changes nothing. The plan itself (states, deadlines, timers) is computed in Rust by the
-- pure core; this script only checks and applies.
-- KEYS: 1 incident hash, then every other key the operations name (all of the same partition)
-- ARGV: 1 expected version ('*' = unconditional), 2 request-id field ('' = none), 3 action,
--       4 the time the plan was made for (ms; '' = the Redis time now), 5 operation count, then
--       per operation: command, key index, argument count, arguments. An argument equal to NOW
--       becomes that time; one starting with NOW| becomes '<ms>|' followed by the rest. One
--       instant for the whole action: its deadlines and its timeline entry agree to the ms.
-- Returns {1, now} applied, {0, action} this request id was already applied (by `action`),
-- {-1, version} the record changed since it was read, {-2, ''} the incident does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-2, ''}
end
if ARGV[2] ~= '' then
  local prev = redis.call('HGET', KEYS[1], ARGV[2])
  if prev then
    return {0, prev}
  end
end
local v = redis.call('HGET', KEYS[1], 'v') or '0'
if ARGV[1] ~= '*' and v ~= ARGV[1] then
  return {-1, v}
end
local now = ARGV[4]
if now == '' then
  local t = redis.call('TIME')
  now = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
end
local NOW, NOWP = '\0NOW', '\0NOW|'
local i = 6
for _ = 1, tonumber(ARGV[5]) do
  local cmd, key, n = ARGV[i], KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
  local args = {}
  for j = 1, n do
    local a = ARGV[i + 2 + j]
    if a == NOW then
      a = now
    elseif string.sub(a, 1, 5) == NOWP then
      a = now .. '|' .. string.sub(a, 6)
    end
    args[j] = a
  end
  redis.call(cmd, key, unpack(args))
  i = i + 3 + n
end
redis.call('HINCRBY', KEYS[1], 'v', 1)
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
end
return {1, now}
