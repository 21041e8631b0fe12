-- Release a claimed delivery that will not be attempted because there is nothing left to do
-- (its event expired, it is over already, or it is an inbound duplicate): off the due set, its
-- concurrency slot freed, and the next delivery of its FIFO key due (relay.store.deliveries).
-- order.lua comes first.
-- KEYS: the target's due set, in-flight set, order hash; ARGV: event id, now
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
order_done(KEYS[3], KEYS[1], ARGV[1], ARGV[2])
return 1
