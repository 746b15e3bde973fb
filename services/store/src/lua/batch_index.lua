-- Shared by report.lua and dispatch.lua (prepended to each when it is loaded, scripts.rs):
-- index entries gathered per key, in the order keys were first seen, and written by one XADD
-- per index and batch (fields `i <id>`, repeated). A `redis.call` costs about a microsecond
-- of Lua overhead, so one per index and batch instead of several per incident.
local order, ids = {}, {}
local function gather(key, id)
  local list = ids[key]
  if not list then
    list = {}
    ids[key] = list
    order[#order + 1] = key
  end
  list[#list + 1] = 'i'
  list[#list + 1] = id
end
-- Writes the gathered entries; returns each key's entry time (ms, the entry id's first part).
local function flush()
  local at = {}
  for _, key in ipairs(order) do
    at[key] = string.match(redis.call('XADD', key, '*', unpack(ids[key])), '^%d+')
  end
  order, ids = {}, {}
  return at
end

