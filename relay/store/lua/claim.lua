-- Take the deliveries due now, moving each to the end of its lease in the same due set, so no
-- other worker takes it and it becomes due again if this one dies (relay.store.deliveries),
-- within each target's rate and concurrency (relay.store.control), atomically with the take.
-- KEYS: per target: its due set, its rate key, its in-flight set
-- ARGV: now, total limit, then per target: limit, lease end, rate interval (s; 0: no rate),
--       rate tolerance (s), concurrency (0: none), whether to keep its leases in the in-flight
--       set without a concurrency ("1": a target with a breaker, whose closing must tell a
--       delivery in flight from one waiting for its retry time; breaker_record.lua)
-- Returns per target, in KEYS order: {event ids, held, wait ms}, where held is HELD_RATE or
-- HELD_CONCURRENCY when deliveries are due but that limit let none start (0 otherwise) and
-- wait is when the rate allows the next start. HELD_* come from the preamble.
local now = tonumber(ARGV[1])
local left = tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS / 3 do
  local due, rate, flight = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local a = 6 * i - 3
  local limit = math.min(tonumber(ARGV[a]), left)
  local lease = ARGV[a + 1]
  local interval, tolerance, slots = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local tracked = slots > 0 or ARGV[a + 5] == '1'
  local held, wait, base = 0, 0, now
  if limit > 0 and tracked and slots == 0 then
    redis.call('ZREMRANGEBYSCORE', flight, '-inf', ARGV[1])  -- leases of workers that died
  end
  if limit > 0 and slots > 0 then
    -- Slots of attempts whose lease ended (their worker died) come back first.
    redis.call('ZREMRANGEBYSCORE', flight, '-inf', ARGV[1])
    local free = slots - redis.call('ZCARD', flight)
    if free <= 0 then
      held, limit = HELD_CONCURRENCY, 0
    elseif free < limit then
      limit = free
    end
  end
  if limit > 0 and interval > 0 then
    -- GCRA: the stored time is when the next start is allowed; a start up to `tolerance` late
    -- is made up for (the time moves on from the allowed time, not from now).
    base = math.max(tonumber(redis.call('GET', rate) or '0'), now - tolerance)
    if base > now then
      held, wait, limit = HELD_RATE, base - now, 0
    else
      limit = math.min(limit, math.floor((now - base) / interval) + 1)
    end
  end
  local ids = {}
  if limit > 0 then
    ids = redis.call('ZRANGEBYSCORE', due, '-inf', ARGV[1], 'LIMIT', 0, limit)
    if #ids > 0 then
      -- One ZADD for every id taken, not one per id.
      local leased = {}
      for j, id in ipairs(ids) do
        leased[2 * j - 1], leased[2 * j] = lease, id
      end
      redis.call('ZADD', due, unpack(leased))
      if tracked then redis.call('ZADD', flight, unpack(leased)) end
    end
    if interval > 0 and #ids > 0 then
      local at = base + #ids * interval
      local ttl = math.ceil((at - now + tolerance) * 1000) + 1000
      redis.call('SET', rate, string.format('%.6f', at), 'PX', ttl)
    end
    left = left - #ids
  elseif held ~= 0 and #redis.call('ZRANGEBYSCORE', due, '-inf', ARGV[1], 'LIMIT', 0, 1) == 0 then
    held, wait = 0, 0  -- nothing is due: nothing is held
  end
  out[i] = {ids, held, math.ceil(wait * 1000)}
end
return out
