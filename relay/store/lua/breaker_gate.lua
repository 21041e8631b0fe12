-- Whether each target's breaker lets its deliveries be claimed now (relay.store.breakers, whose
-- pure `gate_of` states the same rule): 0 closed (claim as usual), 1 open and this caller took
-- the probe (claim one delivery), 2 open and the next probe is not due (claim none). Taking the
-- probe sets the probe key for one interval, so across every worker one probe starts per interval.
-- KEYS: per target, its breaker hash then its probe key
-- ARGV: the probe key's value (the caller's token), then per target its probe interval (ms)
local out = {}
for i = 1, #KEYS / 2 do
  if redis.call('HEXISTS', KEYS[2 * i - 1], OPENED_AT) == 0 then
    out[i] = 0
  elseif redis.call('SET', KEYS[2 * i], ARGV[1], 'NX', 'PX', ARGV[i + 1]) then
    out[i] = 1
  else
    out[i] = 2
  end
end
return out
