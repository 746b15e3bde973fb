-- Folds a reporter's points ledger: entries past the newest `keep` leave the list and their
-- points join the ledger's carried total, so that the ledger stays small and the total stays
-- exact. Atomic: an award pushed meanwhile is either in the list or already folded.
-- KEYS: 1 ledger list (`ms|incident|points|category`, newest first), 2 carried totals hash
-- ARGV: 1 keep, 2 the ledger's field in the hash
-- Returns how many entries were folded.
local keep = tonumber(ARGV[1])
local old = redis.call('LRANGE', KEYS[1], keep, -1)
if #old == 0 then
  return 0
end
local sum = 0
for _, e in ipairs(old) do
  sum = sum + (tonumber(string.match(e, '^[^|]*|[^|]*|(-?%d+)')) or 0)
end
redis.call('HINCRBY', KEYS[2], ARGV[2], sum)
redis.call('LTRIM', KEYS[1], 0, keep - 1)
return #old
