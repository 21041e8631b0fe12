-- Put many dead deliveries back, each only if it is still as the caller read it (its state and
-- attempt counter unchanged: no worker or other replay changed it since), atomically per call
-- (relay.ops.deliveries.bulk). A replayed delivery is pending with a fresh attempt budget, out of
-- the dead-letter store, and due now, or, for an ordered target, at the end of its FIFO key's
-- queue (order.lua comes first). Its event, attempt log and enrichment record live a full
-- retention period from now (GT: only ever lengthened, never on a key without expiry).
-- The codec's names (STATE, ATTEMPTS, REASON, BEFORE_REPLAY, PENDING, REPLAYED_STAT) come from
-- the preamble relay.store.scripts puts first.
-- KEYS: the dead-letter zset, the due-targets set, then per delivery: event hash, attempt log,
--       enrichment record, target stats, the target's due set, its order hash
-- ARGV: retention s, now, then per delivery: event id, target, the state read, the attempt
--       counter read ("" absent), attempts made (the new before-replay count), FIFO key digest
--       ("" unordered), dead member
-- Returns per delivery: 1 replayed, 0 changed since it was read (read it again).
local retention, now = ARGV[1], ARGV[2]
local out, counts, targets = {}, {}, {}
for i = 1, (#KEYS - 2) / 6 do
  local k, a = 6 * i - 3, 7 * i - 4
  local hash, stats = KEYS[k], KEYS[k + 3]
  local id, t = ARGV[a], ARGV[a + 1]
  local got = redis.call('HMGET', hash, STATE .. t, ATTEMPTS .. t)
  if (got[1] or '') ~= ARGV[a + 2] or (got[2] or '') ~= ARGV[a + 3] then
    out[i] = 0
  else
    redis.call('HSET', hash, BEFORE_REPLAY .. t, ARGV[a + 4], STATE .. t, PENDING, REASON .. t, '')
    redis.call('ZREM', KEYS[1], ARGV[a + 6])
    counts[stats] = (counts[stats] or 0) + 1
    for j = k, k + 2 do redis.call('EXPIRE', KEYS[j], retention, 'GT') end
    if ARGV[a + 5] ~= '' then
      order_push(KEYS[k + 5], KEYS[k + 4], id, ARGV[a + 5], now)
    else
      redis.call('ZADD', KEYS[k + 4], now, id)
    end
    targets[t] = true
    out[i] = 1
  end
end
for stats, n in pairs(counts) do redis.call('HINCRBY', stats, REPLAYED_STAT, n) end
local names = {}
for t in pairs(targets) do names[#names + 1] = t end
if #names > 0 then redis.call('SADD', KEYS[2], unpack(names)) end
return out
