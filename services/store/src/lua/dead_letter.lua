-- Moves an ingest entry to the dead-letter stream with the reason, and, when the entry names an
-- existing incident, notes it on the incident's timeline so that GetIncident shows why it was
-- not routed.
-- KEYS: 1 ingest stream, 2 dead-letter stream, [3 incident hash, 4 timeline]
-- ARGV: 1 group, 2 entry id, 3 reason code, 4 detail, 5 deliveries, 6 original fields (bytes),
--       7 timeline event bytes
local t = redis.call('TIME')
local now = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
redis.call('XADD', KEYS[2], '*', 'entry', ARGV[2], 'reason', ARGV[3], 'detail', ARGV[4],
  'deliveries', ARGV[5], 'fields', ARGV[6], 'time', now)
-- Checked first: a script that fails halfway is not rolled back, and the record may be the
-- very thing that is broken.
if #KEYS >= 4 and redis.call('TYPE', KEYS[3]).ok == 'hash'
    and (redis.call('TYPE', KEYS[4]).ok == 'list' or redis.call('TYPE', KEYS[4]).ok == 'none') then
  redis.call('HSET', KEYS[3], 'dead_letter', ARGV[3])
  redis.call('RPUSH', KEYS[4], now .. '|' .. ARGV[7])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
