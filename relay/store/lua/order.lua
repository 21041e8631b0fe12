-- FIFO per key (relay.store.control): only the head of each key's queue is in the due set.
-- `heads` is relay:order:{target} (head id -> key digest, and WAITING -> deliveries waiting
-- behind heads); a key's queue is the list heads .. ':' .. digest. The queue's name is built
-- here from the digest, not passed in KEYS: relay runs on one Redis (or a Sentinel group),
-- never a Cluster, and the digest is only known inside the script.

-- order_push: a delivery joins the end of its key's queue; it is due at `score` when it is
-- the head (the queue was empty), else it waits, out of the due set, for the ones before it.
local function order_push(heads, due, id, digest, score)
  if redis.call('RPUSH', heads .. ':' .. digest, id) == 1 then
    redis.call('HSET', heads, id, digest)
    redis.call('ZADD', due, score, id)
  else
    redis.call('HINCRBY', heads, WAITING, 1)
  end
end

-- order_done: a head's delivery is over (delivered, dead, gone, a duplicate, or its event
-- expired): it leaves its queue and the next delivery of its key becomes due at `now`.
-- Nothing happens for a delivery that is not a head (unordered, or already advanced).
-- Returns the id of the delivery made due, if any.
local function order_done(heads, due, id, now)
  local digest = redis.call('HGET', heads, id)
  if not digest then return nil end
  redis.call('HDEL', heads, id)
  local queue = heads .. ':' .. digest
  if redis.call('LINDEX', queue, 0) == id then
    redis.call('LPOP', queue)
  else
    redis.call('LREM', queue, 1, id)
  end
  local next_id = redis.call('LINDEX', queue, 0)
  if next_id then
    redis.call('HSET', heads, next_id, digest)
    redis.call('HINCRBY', heads, WAITING, -1)
    redis.call('ZADD', due, now, next_id)
  end
  return next_id
end
