-- A department acts on an incident it is the primary handler of: accept, resolve or return.
-- KEYS: 1 incident hash, 2 timeline, 3 sla zset, 4 ingest stream
-- ARGV: 1 action (accept|resolve|return), 2 department, 3 incident id, 4 timeline event bytes
-- Returns {1, status} applied, {0, status} already in the target state (idempotent repeat),
-- {-1} unknown incident, {-2, dept} not the primary department, {-3, status} wrong state.
local cur = redis.call('HMGET', KEYS[1], 'status', 'dept', 'gen', 'report', 'returned_by')
local status, dept = cur[1], cur[2]
if not status then
  return {-1, ''}
end
local action = ARGV[1]
local target = ({accept = 'accepted', resolve = 'resolved', ['return'] = 'returned'})[action]
if action == 'return' and cur[5] and string.find(',' .. cur[5] .. ',', ',' .. ARGV[2] .. ',', 1, true) then
  return {0, status}
end
if dept ~= ARGV[2] then
  return {-2, dept or ''}
end
if status == target then
  return {0, status}
end
local allowed = {
  accept = {dispatched = true},
  resolve = {dispatched = true, accepted = true},
  ['return'] = {dispatched = true, accepted = true},
}
if not allowed[action][status] then
  return {-3, status}
end
local t = redis.call('TIME')
local now = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
local id = ARGV[3]
redis.call('RPUSH', KEYS[2], now .. '|' .. ARGV[4])
if action == 'accept' then
  redis.call('HSET', KEYS[1], 'status', 'accepted', 'accepted_at', now)
  redis.call('ZREM', KEYS[3], id .. ':accept')
elseif action == 'resolve' then
  redis.call('HSET', KEYS[1], 'status', 'resolved', 'resolved_at', now)
  redis.call('ZREM', KEYS[3], id .. ':accept', id .. ':resolve')
else
  local gen = tostring(tonumber(cur[3]) + 1)
  local returned = cur[5]
  if returned and returned ~= '' then returned = returned .. ',' .. dept else returned = dept end
  redis.call('HSET', KEYS[1], 'status', 'returned', 'gen', gen, 'returned_by', returned)
  redis.call('HDEL', KEYS[1], 'dept')
  redis.call('ZREM', KEYS[3], id .. ':accept', id .. ':resolve')
  redis.call('XADD', KEYS[4], '*', 'id', id, 'g', gen, 't', now, 'r', cur[4], 'x', returned)
end
return {1, target}
