-- Accepts a batch of reports of one partition: per report the idempotency check, incident
-- record, timeline, ingest entry and event, all atomically. One call per batch: the cost of a
-- script call (~16 µs) is paid once, not per report.
-- The report's own timeline entry is the record's `tl0` field (the timeline list holds the
-- entries after it): one write fewer per report.
-- Inline routing (`gridroute serve --inline-routing`): a report that comes with its route
-- decision is dispatched in the same call instead of queued in the ingest stream: the record
-- is written once with the report and the dispatch, then the events, the SLA timers, the
-- indexes and the department streams, as `dispatch.lua` writes a first dispatch. Reports that
-- come without one (the accepting process could not route them, or their category detects
-- duplicates) take the ingest stream to the routers as before.
-- KEYS: 1 ingest stream (entries in the packed form of `consumer::pack`), 2 events stream,
--       3 timer set, 4 index of all incidents, then per
--       report: idempotency key, incident hash, and when routed inline the keys of one write
--       of dispatch.lua (incident hash, timeline, department index, geo set (unused), R region
--       indexes, D dispatch streams)
-- ARGV: 1 idempotency ttl (s; '0': none, the claim kept as long as the record), 2 the state of a new incident, 3 the state it is dispatched
--       into (both from the core's lifecycle), then per report: payload hash,
--       incident id, report bytes (without the reporter's contact), timeline event bytes, W3C
--       traceparent ('' = none), the reporter's contact bytes ('' = none: kept only in the
--       record, so that erasing it there erases it everywhere), '1' when routed inline
--       (then the arguments of one write of dispatch.lua follow) else ''
-- Returns, per report, code then id: 0 new, 1 retry of the same payload (the original id),
-- 2 same key with another payload (the original id), 3 new and dispatched inline.
local t = redis.call('TIME')
local now = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
local DISPATCHED = ARGV[3]

-- `gather` and `flush`: batch_index.lua, loaded before this script.

-- First pass: the idempotency claims, and the department index entries of inline dispatches
-- (their time is the record's `dept_at`).
local out, new = {}, {}
local k, a = 5, 4
while k <= #KEYS do
  local hash, id = ARGV[a], ARGV[a + 1]
  local w, r, nt, nd = nil, 0, 0, 0
  if ARGV[a + 6] == '1' then
    w = a + 7
    r, nt, nd = tonumber(ARGV[w + 9]), tonumber(ARGV[w + 14]), tonumber(ARGV[w + 16])
  end
  -- One call checks and claims the key (SET NX GET, Redis 7.0): the old value when it existed.
  local prev
  if ARGV[1] == '0' then
    prev = redis.call('SET', KEYS[k], hash .. '|' .. id, 'NX', 'GET')
  else
    prev = redis.call('SET', KEYS[k], hash .. '|' .. id, 'NX', 'GET', 'EX', ARGV[1])
  end
  local sep = prev and string.find(prev, '|', 1, true)
  -- A key that names this very id was claimed by this call's earlier attempt (a batch call
  -- that failed midway is sent again one report per call, with the same ids): when that
  -- attempt stopped before writing the record, this one writes it.
  if prev and string.sub(prev, sep + 1) == id and string.sub(prev, 1, sep - 1) == hash
      and redis.call('EXISTS', KEYS[k + 1]) == 0 then
    prev = nil
  end
  if prev then
    out[#out + 1] = (string.sub(prev, 1, sep - 1) == hash) and 1 or 2
    out[#out + 1] = string.sub(prev, sep + 1)
  else
    out[#out + 1] = w and 3 or 0
    out[#out + 1] = id
    new[#new + 1] = { k, a, w, r, nt, nd }
    if w then
      gather(KEYS[k + 4], id)
    end
  end
  k = k + 2 + (w and 4 + r + nd or 0)
  a = a + 7 + (w and 18 + 2 * nt + nd or 0)
end
local dept_at = flush()

local timers = {}
for _, n in ipairs(new) do
  local k, a, w, r, nt, nd = unpack(n)
  local id = ARGV[a + 1]
  local set = { 'report', ARGV[a + 2], 'status', ARGV[2], 'gen', '0', 'reported_at', now,
    'tl0', now .. '|' .. ARGV[a + 3] }
  if ARGV[a + 5] ~= '' then
    set[#set + 1] = 'contact'
    set[#set + 1] = ARGV[a + 5]
  end
  redis.call('XADD', KEYS[2], '*', 'id', id, 's', ARGV[2], 'd', '', 'r', '', 'e', ARGV[a + 3])
  if w then
    -- Never dispatched before it was reported: the dispatch time comes from the accepting
    -- process's reading of Redis' clock, `now` from the script's.
    local at = tostring(math.max(tonumber(ARGV[w + 5]), tonumber(now)))
    local dept = ARGV[w + 3]
    set[4] = DISPATCHED
    local more = { 'dept', dept, 'decision', ARGV[w + 4], 'dispatched_at', at,
      'accept_due', ARGV[w + 6], 'resolve_due', ARGV[w + 7], 'timers', ARGV[w + 10],
      'regions', ARGV[w + 11], 'v', '1', 'first_dispatched_at', at,
      'dept_at', dept_at[KEYS[k + 4]], 'ix', '1', 'tl1', at .. '|' .. ARGV[w + 8] }
    for _, v in ipairs(more) do
      set[#set + 1] = v
    end
    if ARGV[w + 17] == '1' then
      set[#set + 1] = 'est'
      set[#set + 1] = '1'
    end
    redis.call('HSET', KEYS[k + 1], unpack(set))
    redis.call('XADD', KEYS[2], '*', 'id', id, 's', DISPATCHED, 'd', dept,
      'r', ARGV[w + 11], 'e', ARGV[w + 8])
    for i = 1, nt do
      timers[#timers + 1] = ARGV[w + 16 + 2 * i]
      timers[#timers + 1] = ARGV[w + 17 + 2 * i]
    end
    gather(KEYS[4], id)
    for i = 1, r do
      gather(KEYS[k + 5 + i], id)
    end
    local payload = w + 18 + 2 * nt
    for i = 0, nd - 1 do
      redis.call('XADD', KEYS[k + 6 + r + i], '*', 'id', id, 'g', '0',
        'd', ARGV[payload + i], 'tp', ARGV[w + 15])
    end
  else
    redis.call('HSET', KEYS[k + 1], unpack(set))
    -- The packed form of `consumer::pack`: one field, which Redis stores and sends, and
    -- the router parses, as two values instead of ten.
    redis.call('XADD', KEYS[1], '*', 'p', '1|' .. id .. '|0|' .. now .. '|' .. ARGV[a + 4]
      .. '|' .. ARGV[a + 2])
  end
end
if #timers > 0 then
  redis.call('ZADD', KEYS[3], unpack(timers))
end
flush()
return out
