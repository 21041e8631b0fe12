-- A replayed delivery of an ordered target joins the end of its key's queue: it goes after
-- what is already waiting for its key, and is due now only if nothing is (order.lua comes
-- first; relay.ops.deliveries.replay).
-- KEYS: the target's order hash, its due set; ARGV: event id, key digest, now
order_push(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
return 1
