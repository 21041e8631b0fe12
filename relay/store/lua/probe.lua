-- Whether any of the targets has a delivery due now that its rate and concurrency would let
-- start (relay.store.deliveries; the limits are relay.store.control's).
-- KEYS: per target: its due set, its rate key, its in-flight set
-- ARGV: now, then per target: whether it has a rate (1/0), its concurrency (0: none)
-- Returns the index of the first target with work it may start, 0 when none has.
local now = tonumber(ARGV[1])
for i = 1, #KEYS / 3 do
  local open = true
  if ARGV[2 * i] == '1' then
    local at = tonumber(redis.call('GET', KEYS[3 * i - 1]) or '0')
    open = at <= now
  end
  local slots = tonumber(ARGV[2 * i + 1])
  if open and slots > 0 then
    open = redis.call('ZCOUNT', KEYS[3 * i], '(' .. ARGV[1], '+inf') < slots
  end
  if open and #redis.call('ZRANGEBYSCORE', KEYS[3 * i - 2], '-inf', ARGV[1], 'LIMIT', 0, 1) > 0 then
    return i
  end
end
return 0
