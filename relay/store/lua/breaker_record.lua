-- Count attempts' results in a target's circuit breaker, in order, atomically across every
-- worker (relay.store.breakers, whose pure `after_attempt` states the same rules): one call for
-- every result a worker recorded in one tick, as many calls in a row would count them. The
-- field names (FAILURES, OPENED_AT, LAST_ERROR, LAST_AT) come from the preamble that module puts
-- first.
-- Closing makes every held delivery due at once: those waiting for a retry time are moved to
-- now, once, in this call (what the claim then takes stays within the target's rate and
-- concurrency); those in flight (a live lease in the in-flight set, which a claim keeps for a
-- target with a breaker) keep their lease.
-- KEYS: the breaker hash, its probe key, the set of targets with a breaker record, the
--       target's due set, its in-flight set
-- ARGV: target, failures in a row that open it, now, probe interval (ms), then per result:
--       failed ("1"/"0"), what the failed attempt came to
-- Returns per result {transition ("opened", "closed" or ""), failures in a row, opened at
--          ("" if closed), deliveries made due by a closing}
local target, threshold, now, probe = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
-- After a success the breaker has no record: more successes change nothing, and need no command.
local clean = false

local function release_held()
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
  return moved
end

local function count(failed, error)
  if failed == '0' then
    -- A success: the count starts again; an open breaker closes (its probe key goes with it).
    if clean then return {'', 0, '', 0} end
    clean = true
    local was = redis.call('HMGET', KEYS[1], FAILURES, OPENED_AT)
    redis.call('DEL', KEYS[1], KEYS[2])
    redis.call('SREM', KEYS[3], target)
    if not was[2] then return {'', 0, '', 0} end
    return {'closed', tonumber(was[1] or '0'), was[2], release_held()}
  end
  clean = false
  local n = redis.call('HINCRBY', KEYS[1], FAILURES, 1)
  redis.call('HSET', KEYS[1], LAST_ERROR, error, LAST_AT, now)
  redis.call('SADD', KEYS[3], target)
  local opened = redis.call('HGET', KEYS[1], OPENED_AT)
  if opened then return {'', n, opened, 0} end
  if n >= threshold then
    redis.call('HSET', KEYS[1], OPENED_AT, now)
    -- The first probe is due one interval after opening, not at once.
    redis.call('SET', KEYS[2], now, 'PX', probe)
    return {'opened', n, now, 0}
  end
  return {'', n, '', 0}
end

local out = {}
for j = 5, #ARGV, 2 do out[#out + 1] = count(ARGV[j], ARGV[j + 1]) end
return out
