-- Publishes a routing table version: stores its sources (once per version), makes it the one
-- in force, records the history, and notifies every replica.
-- KEYS: 1 current version, 2 history list, 3 this version's sources hash
-- ARGV: 1 version, 2 grids.geojson ('' when the version is already stored), 3 rules.yaml,
--       4 who and why (a JSON object, written by the Rust side: no field can forge another), 5 unused, 6 notification channel, 7 '1' = only if no table is in force
--       (bootstrap), 8 key prefix of version hashes, 9 history length kept, 10 calendar.yaml,
--       11 regions.geojson
-- Returns {1, previous} published, {0, current} already in force, {2, current} bootstrap
-- found a table in force, {-1, ''} unknown version.
local cur = redis.call('GET', KEYS[1])
if ARGV[7] == '1' and cur then
  return {2, cur}
end
if redis.call('EXISTS', KEYS[3]) == 0 then
  if ARGV[2] == '' then
    return {-1, ''}
  end
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[3], 'grids', ARGV[2], 'rules', ARGV[3], 'calendar', ARGV[10], 'regions', ARGV[11],
    'stored_at', string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000)))
end
if cur == ARGV[1] then
  return {0, cur}
end
local t = redis.call('TIME')
local now = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
redis.call('SET', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[1] .. '|' .. now .. '|' .. ARGV[4])
-- Forget the sources of versions that fell out of the history (and are not in force).
local keep = tonumber(ARGV[9])
local dropped = redis.call('LRANGE', KEYS[2], keep, -1)
redis.call('LTRIM', KEYS[2], 0, keep - 1)
local kept = {}
for _, e in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  kept[string.match(e, '^[^|]*')] = true
end
for _, e in ipairs(dropped) do
  local v = string.match(e, '^[^|]*')
  if not kept[v] then
    redis.call('DEL', ARGV[8] .. v)
  end
end
redis.call('PUBLISH', ARGV[6], ARGV[1])
return {1, cur or ''}
