-- Claims due SLA timers of one partition for one replica to fire. Claiming is all this script
-- does: what a timer changes is planned by the core and applied by apply.lua like every other
-- action. A claimed member moves from the timer set to the claimed set, scored by when its
-- lease ends; applying the timer's plan removes it from there. A replica that stops between
-- claim and apply leaves its claims to expire, and the next claim of any replica takes them
-- again (the plan checks the record, so a timer that did fire does nothing the second time).
-- KEYS: 1 the partition's timer set, 2 its claimed set
-- ARGV: 1 most members to claim, 2 lease (ms)
-- Returns {now (ms, the Redis clock), member, member, ...}: expired claims first, then due
-- timers, earliest first.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local limit = tonumber(ARGV[1])
local until_ = now + tonumber(ARGV[2])
local out = { now }
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
for _, m in ipairs(expired) do
  redis.call('ZADD', KEYS[2], until_, m)
  out[#out + 1] = m
end
if #expired < limit then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit - #expired)
  if #due > 0 then
    redis.call('ZREM', KEYS[1], unpack(due))
    local add = {}
    for _, m in ipairs(due) do
      add[#add + 1] = until_
      add[#add + 1] = m
      out[#out + 1] = m
    end
    redis.call('ZADD', KEYS[2], unpack(add))
  end
end
return out
