-- Take the deliveries due now, moving each to the end of its lease in the same due set, so no
-- other worker takes it and it becomes due again if this one dies (relay.store.deliveries).
-- KEYS: the due set of each target
-- ARGV: now, total limit, then per target: limit, lease end
-- Returns one list of event ids per target, in KEYS order.
local now = ARGV[1]
local left = tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  local limit = math.min(tonumber(ARGV[2 * i + 1]), left)
  local ids = {}
  if limit > 0 then
    ids = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, limit)
    local lease = ARGV[2 * i + 2]
    for _, id in ipairs(ids) do redis.call('ZADD', key, lease, id) end
    left = left - #ids
  end
  out[i] = ids
end
return out
