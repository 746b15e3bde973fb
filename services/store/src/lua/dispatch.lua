-- Dispatches a batch of routed ingest entries of one partition, each exactly once: record,
-- timeline, event, SLA timer, indexes, department streams, and the ack of the ingest entry
-- happen together or not at all. One call per batch: the cost of a script call is paid once.
-- Indexes are streams (append-only, O(1)): the incident enters the `all` and region indexes
-- when it is first routed (`ix` in the record), and its department's index at each assignment
-- (`dept_at` in the record tells a list which entry counts). One index entry per index and
-- batch lists every incident of the batch (fields `i <id>`, repeated): a `redis.call` costs
-- about a microsecond of Lua overhead, so one per index and batch instead of six per
-- incident.
-- Delays from report to index entry beyond a minute raise the partition's index lag
-- (`ZADD GT`), so that time-window lists know how far past a window to look.
-- KEYS: 1 ingest stream, 2 timer set, 3 index of all incidents, 4 events stream, 5 index lag,
--       then per write: incident hash, timeline, department index, duplicate-detection geo
--       set (or the incident hash again when the category has none), R region indexes, D
--       dispatch streams
-- ARGV: 1 group, 2 the states an incident is routed from (comma-separated), 3 the state it is
--       dispatched into, 4 the fields a re-route clears (comma-separated; all three from the
--       core's lifecycle),
--       then per write:
--       +0 entry id, +1 route generation, +2 incident id, +3 department, +4 decision bytes,
--       +5 dispatch time (ms), +6 accept due (ms), +7 resolve due (ms), +8 timeline event
--       bytes, +9 R, +10 timer schedule ('kind|target|due,...'), +11 region codes,
--       +12 longitude ('' = no duplicate detection), +13 latitude, +14 T (0 or 1: the head
--       timer), +15 W3C traceparent of the dispatch ('' = none), +16 D, +17 '1' when a
--       deadline is an estimate (past the calendar's horizon; record field `est`) else '',
--       then T pairs (due, member), then D dispatch payloads (heads: the report and the decision
--       are read from the record on delivery, with the entry's generation `g`)
-- Returns per write 1 when dispatched, 0 when this generation was already dispatched (a
-- redelivery). Every entry of the batch is acknowledged at the end; the routers trim
-- acknowledged entries from the stream's head later (`trim_acked.lua`).

local routable, clears = {}, {}
for s in string.gmatch(ARGV[2], '[^,]+') do
  routable[s] = true
end
for f in string.gmatch(ARGV[4], '[^,]+') do
  clears[#clears + 1] = f
end
local DISPATCHED = ARGV[3]

-- `gather` and `flush`: batch_index.lua, loaded before this script.

-- First pass: which writes dispatch (state as before the batch; a second write of the same
-- generation in one batch is a redelivery), and the department index entries.
local out, acked, todo, seen = {}, {}, {}, {}
local k, a = 6, 5
while k <= #KEYS do
  local id, gen = ARGV[a + 2], ARGV[a + 1]
  local r, nt, nd = tonumber(ARGV[a + 9]), tonumber(ARGV[a + 14]), tonumber(ARGV[a + 16])
  acked[#acked + 1] = ARGV[a]
  local cur = redis.call('HMGET', KEYS[k], 'status', 'gen', 'v', 'first_dispatched_at', 'ix',
    'reported_at')
  if not routable[cur[1] or ''] or cur[2] ~= gen or seen[id .. '|' .. gen] then
    out[#out + 1] = 0
  else
    seen[id .. '|' .. gen] = true
    out[#out + 1] = 1
    todo[#todo + 1] = { k, a, r, nt, nd, cur }
    gather(KEYS[k + 2], id)
  end
  k = k + 4 + r + nd
  a = a + 18 + 2 * nt + nd
end
-- The department index entries first: an entry's time is the `dept_at` that makes it count.
local dept_at = flush()

-- The batch's head timers, added by one ZADD at the end: a `redis.call` costs about a
-- microsecond of Lua overhead beyond the command.
local timers = {}
for _, w in ipairs(todo) do
  local k, a, r, nt, nd, cur = unpack(w)
  local inc, tl = KEYS[k], KEYS[k + 1]
  local id, dept, now = ARGV[a + 2], ARGV[a + 3], ARGV[a + 5]
  local entry = now .. '|' .. ARGV[a + 8]
  local set = { 'status', DISPATCHED, 'dept', dept, 'decision', ARGV[a + 4],
    'dispatched_at', now, 'accept_due', ARGV[a + 6], 'resolve_due', ARGV[a + 7],
    'timers', ARGV[a + 10], 'regions', ARGV[a + 11], 'v', (tonumber(cur[3]) or 0) + 1,
    'first_dispatched_at', cur[4] or now, 'dept_at', dept_at[KEYS[k + 2]], 'ix', '1' }
  if ARGV[a + 17] == '1' then
    set[#set + 1] = 'est'
    set[#set + 1] = '1'
  end
  if ARGV[a + 12] ~= '' then
    set[#set + 1] = 'geo'
    set[#set + 1] = KEYS[k + 3]
  end
  if cur[2] == '0' then
    -- The first dispatch's timeline entry lives in the record, like the report's (`tl0`): most
    -- incidents then need no timeline list until a department acts.
    set[#set + 1] = 'tl1'
    set[#set + 1] = entry
    redis.call('HSET', inc, unpack(set))
  else
    redis.call('HSET', inc, unpack(set))
    -- A re-route: the previous department's acceptance and escalations do not carry over.
    redis.call('HDEL', inc, unpack(clears))
    if ARGV[a + 17] ~= '1' then
      redis.call('HDEL', inc, 'est')
    end
    redis.call('RPUSH', tl, entry)
  end
  redis.call('XADD', KEYS[4], '*', 'id', id, 's', DISPATCHED,
    'd', dept, 'r', ARGV[a + 11], 'e', ARGV[a + 8])
  for i = 1, nt do
    timers[#timers + 1] = ARGV[a + 16 + 2 * i]
    timers[#timers + 1] = ARGV[a + 17 + 2 * i]
  end
  local late = tonumber(now) - (tonumber(cur[6]) or tonumber(now))
  if late > 60000 then
    redis.call('ZADD', KEYS[5], 'GT', late, cur[5] and 'assign' or 'first')
  end
  if not cur[5] then
    gather(KEYS[3], id)
    for i = 1, r do
      gather(KEYS[k + 3 + i], id)
    end
  end
  if ARGV[a + 12] ~= '' then
    redis.call('GEOADD', KEYS[k + 3], ARGV[a + 12], ARGV[a + 13], id)
  end
  local payload = a + 18 + 2 * nt
  for i = 0, nd - 1 do
    redis.call('XADD', KEYS[k + 4 + r + i], '*', 'id', id, 'g', ARGV[a + 1],
      'd', ARGV[payload + i], 'tp', ARGV[a + 15])
  end
end
if #timers > 0 then
  redis.call('ZADD', KEYS[2], unpack(timers))
end
flush()
if #acked > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(acked))
end
return out
