-- Fires the due timers of one partition. Claiming a timer (ZREM) and applying its effect happen
-- in this one script, with the Redis clock: each timer fires exactly once, whichever replica
-- runs the script and whatever its own clock says.
-- KEYS: 1 the partition's timer set. The incident, timeline, events and dispatch keys are
--       derived from the partition prefix: they share its hash tag, so they live in its slot.
-- ARGV: 1 partition key prefix (e.g. 'gr:{p0}:'), 2 most timers to fire, 3 dispatch stream
--       max length, 4 events stream max length
-- Returns a flat list: kind, department, lateness (ms), for every timer that took effect.
local P = ARGV[1]
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local nows = string.format('%d', now)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))

local function varint(n)
  local s = ''
  while n >= 128 do
    s = s .. string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  return s .. string.char(n)
end
local function str(num, s)
  if s == nil or s == '' then return '' end
  return string.char(num * 8 + 2) .. varint(#s) .. s
end

-- kind prefix -> states in which it applies, timeline kind, dispatch kind code, flag, text
local ACTIVE = {dispatched = true, accepted = true, in_progress = true, reopened = true}
local SPEC = {
  accept = {{dispatched = true, reopened = true}, 'accept_overdue', 6, 'accept_breached',
    'the accept deadline has passed'},
  warn = {ACTIVE, 'warning', 2, nil, '%s%% of the time allowed to resolve has passed'},
  urge = {ACTIVE, 'urged', 3, 'resolve_breached', 'the resolve deadline has passed (催办)'},
  supervise = {ACTIVE, 'supervised', 4, 'supervised',
    'overdue case under supervision, level %s (督办)'},
  public = {ACTIVE, 'public_report', 5, 'public_report', 'overdue case reported publicly (通报)'},
  verify = {{resolved = true}, 'verify_overdue', 7, nil, 'verification is overdue'},
}

local limit = tonumber(ARGV[2])
local out = {}
local i = 1
while i <= #due do
  local member, score = due[i], tonumber(due[i + 1])
  i = i + 2
  redis.call('ZREM', KEYS[1], member)
  local id, kind, target = string.match(member, '^([^|]*)|([^|]*)|(.*)$')
  local prefix, arg = string.match(kind or '', '^(%a+)(%d*)$')
  local spec = SPEC[prefix or '']
  local inc = P .. 'inc:' .. (id or '')
  local cur = redis.call('HMGET', inc, 'status', 'fired', 'dept', 'regions', 'timers')
  if spec and cur[1] and spec[1][cur[1]] then
    local text = string.format(spec[5], arg)
    local fired = cur[2]
    if fired and fired ~= '' then fired = fired .. ',' .. kind else fired = kind end
    redis.call('HSET', inc, 'fired', fired)
    if spec[4] then
      redis.call('HSET', inc, spec[4], arg ~= '' and arg or '1')
    end
    redis.call('HINCRBY', inc, 'v', 1)
    local ev = str(2, spec[2]) .. str(3, 'sla-timer') .. str(4, kind .. ': ' .. text) .. str(5, target)
    redis.call('RPUSH', P .. 'tl:' .. id, nows .. '|' .. ev)
    redis.call('XADD', P .. 'events', 'MAXLEN', '~', ARGV[4], '*', 'id', id, 's', cur[1],
      'd', cur[3] or '', 'r', cur[4] or '', 'e', ev)
    local notice = str(2, id) .. str(3, target) .. string.char(80) .. varint(spec[3]) .. str(11, text)
    redis.call('XADD', P .. 'dispatch:' .. target, 'MAXLEN', '~', ARGV[3], '*', 'id', id, 'd', notice)
    out[#out + 1] = kind
    out[#out + 1] = target
    out[#out + 1] = now - score
    -- The next step of the schedule takes this one's place.
    local rest, head_due, head_member, dropped = {}, nil, nil, false
    for e in string.gmatch(cur[5] or '', '[^,]+') do
      local k, tg, d = string.match(e, '^([^|]*)|(.*)|(%d+)$')
      if not dropped and k == kind and tg == target then
        dropped = true
      else
        rest[#rest + 1] = e
        local dn = tonumber(d)
        if dn and (head_due == nil or dn < head_due) then
          head_due, head_member = dn, id .. '|' .. k .. '|' .. tg
        end
      end
    end
    if dropped then
      redis.call('HSET', inc, 'timers', table.concat(rest, ','))
      if head_member then
        redis.call('ZADD', KEYS[1], head_due, head_member)
        if head_due <= now and #due < 2 * limit then
          due[#due + 1] = head_member
          due[#due + 1] = tostring(head_due)
        end
      end
    end
  end
end
return out
