-- Removes an incident the archive now holds, if its record is still the version archived.
-- KEYS: 1 record, 2 timeline, 3 merged set, 4 archive work list, 5 closed list
-- ARGV: 1 version archived, 2 incident id
-- Returns 1 removed, -1 the record changed since (it stays), -2 already gone.
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[4], ARGV[2])
  return -2
end
if (redis.call('HGET', KEYS[1], 'v') or '0') ~= ARGV[1] then
  return -1
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[2])
return 1
