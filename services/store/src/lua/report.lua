-- Accepts a batch of reports of one partition: per report the idempotency check, incident
-- record, timeline, ingest entry and event, all atomically. One call per batch: the cost of a
-- script call (~16 µs) is paid once, not per report.
-- The report's own timeline entry is the record's `tl0` field (the timeline list holds the
-- entries after it): one write fewer per report.
-- KEYS: 1 ingest stream, 2 events stream, then per report: idempotency key, incident hash
-- ARGV: 1 idempotency ttl (s), 2 the state of a new incident (from the core's lifecycle), then
--       per report: payload hash,
--       incident id, report bytes (without the reporter's contact), timeline event bytes, W3C
--       traceparent ('' = none), the reporter's contact bytes ('' = none: kept only in the
--       record, so that erasing it there erases it everywhere)
-- Returns, per report, code then id: 0 new, 1 retry of the same payload (the original id),
-- 2 same key with another payload (the original id).
local t = redis.call('TIME')
local now = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
local out = {}
local n = (#KEYS - 2) / 2
for i = 0, n - 1 do
  local k, a = 3 + 2 * i, 3 + 6 * i
  local hash, id = ARGV[a], ARGV[a + 1]
  -- One call checks and claims the key (SET NX GET, Redis 7.0): the old value when it existed.
  local prev = redis.call('SET', KEYS[k], hash .. '|' .. id, 'NX', 'GET', 'EX', ARGV[1])
  if prev then
    local sep = string.find(prev, '|', 1, true)
    out[#out + 1] = (string.sub(prev, 1, sep - 1) == hash) and 1 or 2
    out[#out + 1] = string.sub(prev, sep + 1)
  else
    if ARGV[a + 5] == '' then
      redis.call('HSET', KEYS[k + 1], 'report', ARGV[a + 2], 'status', ARGV[2], 'gen', '0',
        'reported_at', now, 'tl0', now .. '|' .. ARGV[a + 3])
    else
      redis.call('HSET', KEYS[k + 1], 'report', ARGV[a + 2], 'status', ARGV[2], 'gen', '0',
        'reported_at', now, 'tl0', now .. '|' .. ARGV[a + 3], 'contact', ARGV[a + 5])
    end
    redis.call('XADD', KEYS[1], '*', 'id', id, 'g', '0', 't', now, 'r', ARGV[a + 2],
      'tp', ARGV[a + 4])
    redis.call('XADD', KEYS[2], '*', 'id', id, 's', ARGV[2], 'd', '',
      'r', '', 'e', ARGV[a + 3])
    out[#out + 1] = 0
    out[#out + 1] = id
  end
end
return out
