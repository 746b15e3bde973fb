-- Trims a stream to its retention window (entries at or after a minimum id) and records the last
-- entry removed as the stream's max-deleted-entry-id, which XTRIM itself leaves alone: a reader
-- whose cursor is older than that id has missed entries and is told so (Store::trimmed_after).
-- KEYS: 1 the stream
-- ARGV: 1 the oldest id kept
-- Returns the number of entries removed.
local last = redis.call('XREVRANGE', KEYS[1], '(' .. ARGV[1], '-', 'COUNT', 1)
if #last == 0 then
  return 0
end
local n = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then
    redis.call('XSETID', KEYS[1], info[i + 1], 'MAXDELETEDID', last[1][1])
  end
end
return n
