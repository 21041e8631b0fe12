-- Record one state change of a delivery, if its attempt is still the current one: state,
-- attempt log, counters, dead-letter entry, and the next due time or removal from the due set,
-- all atomic, so a stale duplicate never overwrites a newer outcome (relay.store.deliveries).
-- A recorded attempt frees its concurrency slot; a delivery that is over lets the next one of
-- its FIFO key go (order.lua, which comes before this file).
-- The codec's names (STATE, ATTEMPTS, REASON, ORDER, DONE, DEAD_LETTER, ATTEMPTS_STAT,
-- FAILURES_STAT) are defined by the preamble relay.store.scripts puts before this file.
-- KEYS: event hash, attempt log, target stats, dead-letter zset, the target's due set, its
--       in-flight set, its order hash
-- ARGV: target, attempt, state, reason, attempt record JSON ("" for none), retention s, now,
--       dead member, counter ("" for none), failed ("1"/"0"), counts as attempt ("1"/"0"),
--       next due time ("" when the delivery is over), whether the attempt holds a concurrency
--       slot to free ("1"/"0": only when its claim took one, so other targets pay nothing)
-- Returns 1 applied, 0 stale (or already over), -1 the event is gone.
local t = ARGV[1]
local attempt = tonumber(ARGV[2])
local id = ARGV[8]:sub(1, #ARGV[8] - #t - 1)
local slotted = ARGV[13] == '1'
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[5], id)
  if slotted then redis.call('ZREM', KEYS[6], id) end
  order_done(KEYS[7], KEYS[5], id, ARGV[7])
  return -1
end
-- One HMGET for the state, the attempt counter and the FIFO key (absent: unordered).
local got = redis.call('HMGET', KEYS[1], STATE .. t, ATTEMPTS .. t, ORDER .. t)
local s, ordered = got[1], got[3]
if s and DONE[s] then
  redis.call('ZREM', KEYS[5], id)
  if slotted then redis.call('ZREM', KEYS[6], id) end
  if ordered then order_done(KEYS[7], KEYS[5], id, ARGV[7]) end
  return 0
end
local n = tonumber(got[2] or '0')
if n ~= attempt - 1 then return 0 end
if slotted then redis.call('ZREM', KEYS[6], id) end
local retention = tonumber(ARGV[6])
if ARGV[11] == '1' then
  redis.call('HSET', KEYS[1], ATTEMPTS .. t, attempt)
  redis.call('HINCRBY', KEYS[3], ATTEMPTS_STAT, 1)
end
redis.call('HSET', KEYS[1], STATE .. t, ARGV[3], REASON .. t, ARGV[4])
redis.call('EXPIRE', KEYS[1], retention)
if ARGV[5] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[5])
  redis.call('EXPIRE', KEYS[2], retention)
end
if ARGV[9] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[9], 1) end
if ARGV[10] == '1' then redis.call('HINCRBY', KEYS[3], FAILURES_STAT, 1) end
if DEAD_LETTER[ARGV[3]] then
  local now = tonumber(ARGV[7])
  redis.call('ZADD', KEYS[4], now, ARGV[8])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - retention)
end
if ARGV[12] == '' then
  redis.call('ZREM', KEYS[5], id)
  if ordered then order_done(KEYS[7], KEYS[5], id, ARGV[7]) end
else
  redis.call('ZADD', KEYS[5], ARGV[12], id)
end
return 1
