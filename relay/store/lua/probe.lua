-- Whether any of the targets has a delivery due now (relay.store.deliveries).
-- KEYS: the due set of each target; ARGV: now.
-- Returns the index of the first target with work due, 0 when none has.
for i, key in ipairs(KEYS) do
  if #redis.call('ZRANGEBYSCORE', key, '-inf', ARGV[1], 'LIMIT', 0, 1) > 0 then return i end
end
return 0
