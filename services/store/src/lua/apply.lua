-- Applies planned lifecycle changes, each only if its record is still the one the plan was made
-- from (optimistic concurrency on the record's version `v`), and records the request id so a
-- retry changes nothing. The plans themselves (states, deadlines, timers) are computed in Rust
-- by the pure core; this script only checks and applies. One call may carry several plans of
-- one partition (the timers of a partition are applied so): the cost of a call is paid once.
-- KEYS: the keys of every plan, plan after plan (all of one partition); a plan's first key is
--       its incident hash
-- ARGV: 1 plan count, then per plan: key count, expected version ('*' = unconditional),
--       request-id field ('' = none), action, the time the plan was made for (ms; '' = the Redis
--       time now), operation count, then per operation: command, key index (within the plan's
--       keys), argument count, arguments. An argument equal to NOW becomes that time; one
--       starting with NOW| becomes '<ms>|' followed by the rest. One instant for the whole
--       action: its deadlines and its timeline entry agree to the ms.
-- Returns, per plan, two values: 1, now: applied; 0, action: this request id was already
-- applied (by `action`); -1, version: the record changed since it was read; -2, '': the
-- incident does not exist.
local NOW, NOWP = '\0NOW', '\0NOW|'
local redis_now
local function time_now()
  if not redis_now then
    local t = redis.call('TIME')
    redis_now = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
  end
  return redis_now
end

local function check(inc, version, rq)
  if redis.call('EXISTS', inc) == 0 then
    return -2, ''
  end
  if rq ~= '' then
    local prev = redis.call('HGET', inc, rq)
    if prev then
      return 0, prev
    end
  end
  local v = redis.call('HGET', inc, 'v') or '0'
  if version ~= '*' and v ~= version then
    return -1, v
  end
  return 1, nil
end

local out = {}
local base, i = 0, 2
for _ = 1, tonumber(ARGV[1]) do
  local nkeys, version, rq, action, at, nops =
    tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], tonumber(ARGV[i + 5])
  i = i + 6
  local inc = KEYS[base + 1]
  local code, detail = check(inc, version, rq)
  local now = at
  if code == 1 and now == '' then
    now = time_now()
  end
  for _ = 1, nops do
    local cmd, key, n = ARGV[i], KEYS[base + tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
    if code == 1 then
      local args = {}
      for j = 1, n do
        local a = ARGV[i + 2 + j]
        -- Only placeholders start with a zero byte: most arguments are passed as they are,
        -- without a substring made of each.
        if string.byte(a, 1) == 0 then
          if a == NOW then
            a = now
          elseif string.sub(a, 1, 5) == NOWP then
            a = now .. '|' .. string.sub(a, 6)
          end
        end
        args[j] = a
      end
      redis.call(cmd, key, unpack(args))
    end
    i = i + 3 + n
  end
  if code == 1 then
    redis.call('HINCRBY', inc, 'v', 1)
    if rq ~= '' then
      redis.call('HSET', inc, rq, action)
    end
    detail = now
  end
  out[#out + 1] = code
  out[#out + 1] = detail
  base = base + nkeys
end
return out
