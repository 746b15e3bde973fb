-- Removes an incident the archive now holds, if its record is still the version archived.
-- Its idempotency claim, when kept with the record (no expiry) and still naming this incident,
-- gets its expiry now: a retry within it is answered with the archived incident.
-- KEYS: 1 record, 2 timeline, 3 merged set, 4 archive work list, 5 closed list,
--       6 idempotency claim (optional)
-- ARGV: 1 version archived, 2 incident id, 3 the claim's expiry (s)
-- Returns 1 removed, 2 removed and its claim given its expiry, -1 the record changed since (it
-- stays), -2 already gone.
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[4], ARGV[2])
  return -2
end
if (redis.call('HGET', KEYS[1], 'v') or '0') ~= ARGV[1] then
  return -1
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
local released = false
if KEYS[6] then
  local claim = redis.call('GET', KEYS[6])
  local tail = '|' .. ARGV[2]
  if claim and string.sub(claim, -#tail) == tail then
    if redis.call('EXPIRE', KEYS[6], ARGV[3], 'NX') == 1 then
      released = true
    end
  end
end
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[2])
return released and 2 or 1
