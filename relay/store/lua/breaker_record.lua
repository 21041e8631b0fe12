-- Count one attempt's result in a target's circuit breaker, atomically across every worker
-- (relay.store.breakers, whose pure `after_attempt` states the same rules). The field names
-- (FAILURES, OPENED_AT, LAST_ERROR, LAST_AT) come from the preamble that module puts first.
-- KEYS: the breaker hash, its probe key, the set of targets with a breaker record
-- ARGV: target, failed ("1"/"0"), failures in a row that open it, now, probe interval (ms),
--       what the failed attempt came to
-- Returns {transition ("opened", "closed" or ""), failures in a row, opened at ("" if closed)}
if ARGV[2] == '0' then
  -- A success: the count starts again; an open breaker closes (its probe key goes with it).
  local was = redis.call('HMGET', KEYS[1], FAILURES, OPENED_AT)
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[1])
  if was[2] then return {'closed', tonumber(was[1] or '0'), was[2]} end
  return {'', 0, ''}
end
local n = redis.call('HINCRBY', KEYS[1], FAILURES, 1)
redis.call('HSET', KEYS[1], LAST_ERROR, ARGV[6], LAST_AT, ARGV[4])
redis.call('SADD', KEYS[3], ARGV[1])
local opened = redis.call('HGET', KEYS[1], OPENED_AT)
if opened then return {'', n, opened} end
if n >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], OPENED_AT, ARGV[4])
  -- The first probe is due one interval after opening, not at once.
  redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
  return {'opened', n, ARGV[4]}
end
return {'', n, ''}
