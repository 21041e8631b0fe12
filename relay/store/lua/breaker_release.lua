-- Give back probes taken for nothing (relay.store.breakers): the claim that took them found no
-- delivery due, so the next claim may probe at once instead of an interval later. A probe key
-- is deleted only while it still holds this caller's value.
-- KEYS: the probe keys; ARGV: the value the caller set them to
local given = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then given = given + redis.call('DEL', key) end
end
return given
