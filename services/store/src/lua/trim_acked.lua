-- Trims an ingest stream's acknowledged entries from its head. Every entry older than the
-- group's oldest pending entry (or, with none pending, than its last delivered one) has been
-- delivered and acknowledged; entries delivered and not acknowledged, and entries not yet
-- delivered, are never removed. `MINID ~` removes whole stream nodes only: a small fraction of
-- what deleting the same entries one by one costs (docs/PERFORMANCE.md, "Acknowledged ingest
-- entries trimmed"). Redis 7.0 has no acknowledgement-aware trimming of its own.
-- KEYS: 1 the ingest stream
-- ARGV: 1 the consumer group
-- Returns the number of entries removed.
local bound = redis.call('XPENDING', KEYS[1], ARGV[1])[2]
if not bound then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local name, last
    for i = 1, #g, 2 do
      if g[i] == 'name' then
        name = g[i + 1]
      elseif g[i] == 'last-delivered-id' then
        last = g[i + 1]
      end
    end
    if name == ARGV[1] then
      bound = last
    end
  end
end
if not bound then
  return 0
end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', bound)
