-- Count one attempt's result in a target's circuit breaker, atomically across every worker
-- (relay.store.breakers, whose pure `after_attempt` states the same rules). The field names
-- (FAILURES, OPENED_AT, LAST_ERROR, LAST_AT) come from the preamble that module puts first.
-- Closing makes every held delivery due at once: those waiting for a retry time are moved to
-- now, once, in this call (what the claim then takes stays within the target's rate and
-- concurrency); those in flight (a live lease in the in-flight set, which a claim keeps for a
-- target with a breaker) keep their lease.
-- KEYS: the breaker hash, its probe key, the set of targets with a breaker record, the
--       target's due set, its in-flight set
-- ARGV: target, failed ("1"/"0"), failures in a row that open it, now, probe interval (ms),
--       what the failed attempt came to
-- Returns {transition ("opened", "closed" or ""), failures in a row, opened at ("" if closed),
--          deliveries made due by a closing}
if ARGV[2] == '0' then
  -- A success: the count starts again; an open breaker closes (its probe key goes with it).
  local was = redis.call('HMGET', KEYS[1], FAILURES, OPENED_AT)
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[1])
  if not was[2] then return {'', 0, '', 0} end
  local now = ARGV[4]
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)  -- leases of workers that died
  local leased = {}
  for _, id in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do leased[id] = true end
  local moved, batch = 0, {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '(' .. now, '+inf')) do
    if not leased[id] then
      batch[#batch + 1], batch[#batch + 2] = now, id
      moved = moved + 1
      if #batch >= 2000 then  -- unpack has a bound: a long backlog goes in parts
        redis.call('ZADD', KEYS[4], 'XX', unpack(batch))
        batch = {}
      end
    end
  end
  if #batch > 0 then redis.call('ZADD', KEYS[4], 'XX', unpack(batch)) end
  return {'closed', tonumber(was[1] or '0'), was[2], moved}
end
local n = redis.call('HINCRBY', KEYS[1], FAILURES, 1)
redis.call('HSET', KEYS[1], LAST_ERROR, ARGV[6], LAST_AT, ARGV[4])
redis.call('SADD', KEYS[3], ARGV[1])
local opened = redis.call('HGET', KEYS[1], OPENED_AT)
if opened then return {'', n, opened, 0} end
if n >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], OPENED_AT, ARGV[4])
  -- The first probe is due one interval after opening, not at once.
  redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
  return {'opened', n, ARGV[4], 0}
end
return {'', n, '', 0}
