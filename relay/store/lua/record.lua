-- Record the state changes of many deliveries in one call, each only if its attempt is still
-- the current one: state, attempt log, counters, dead-letter entry, and the next due time or
-- removal from the due set, all atomic, so a stale duplicate never overwrites a newer outcome
-- (relay.store.deliveries). A recorded attempt frees its concurrency slot; a delivery that is
-- over lets the next one of its FIFO key go (order.lua, which comes before this file).
-- Deliveries are checked and their event hashes written one after another, in order, so two
-- records of the same delivery in one call behave as two calls would; what many deliveries
-- share (the counters, the due sets, the in-flight sets, the dead-letter store, the expiry of
-- an event's keys) is written once per call at the end, which is most of what batching saves.
-- The codec's names (STATE, ATTEMPTS, REASON, ORDER, ATTEMPT, PART, PARTS_MAX, DONE,
-- DEAD_LETTER, ATTEMPTS_STAT, FAILURES_STAT) are defined by the preamble relay.store.scripts
-- puts before this file.
-- KEYS: the dead-letter zset, then per delivery: event hash, attempt log (the list of an event
--       stored before 2026-12: no longer written), target stats, the target's due set, its
--       in-flight set, its order hash
-- ARGV: retention s, now, then per delivery: target, attempt, state, reason, attempt record
--       (AttemptRecord.to_field; "" for none), dead member, counter ("" for none), failed
--       ("1"/"0"), counts as attempt ("1"/"0"), next due time ("" when the delivery is over), whether the attempt
--       holds a concurrency slot to free ("1"/"0": only when its claim took one)
-- Returns per delivery: 1 applied, 0 stale (or already over), -1 the event is gone.
local retention, now = ARGV[1], ARGV[2]
local out, counts, dues, flights, expiring, dead = {}, {}, {}, {}, {}, {}

local function count(stats, field)
  local c = counts[stats]
  if not c then
    c = {}
    counts[stats] = c
  end
  c[field] = (c[field] or 0) + 1
end

-- The due set's final word on an id: a score, or false for off the set (the last one wins).
local function set_due(due, id, score)
  local d = dues[due]
  if not d then
    d = {ids = {}, at = {}}
    dues[due] = d
  end
  if d.at[id] == nil then d.ids[#d.ids + 1] = id end
  d.at[id] = score
end

local function free_slot(flight, id)
  local f = flights[flight]
  if not f then
    f = {}
    flights[flight] = f
  end
  f[#f + 1] = id
end

-- A head's delivery is over: the next of its key is due now, over any write this call has
-- still to make for it (as if that write had been made already).
local function release_head(heads, due, id)
  local next_id = order_done(heads, due, id, now)
  local d = dues[due]
  if next_id and d and d.at[next_id] ~= nil then d.at[next_id] = now end
end

for i = 1, (#KEYS - 1) / 6 do
  local k, a = 6 * i - 4, 11 * i - 8
  local hash, log, stats, due, flight, heads = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3],
    KEYS[k + 4], KEYS[k + 5]
  local t, attempt, member = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 5]
  local id = member:sub(1, #member - #t - 1)
  local slotted = ARGV[a + 10] == '1'
  -- One HMGET for the state, the attempt counter and the FIFO key (absent: unordered). The
  -- state is written at intake, so only a missing one needs EXISTS to tell a gone event.
  local got = redis.call('HMGET', hash, STATE .. t, ATTEMPTS .. t, ORDER .. t)
  local s, ordered = got[1], got[3]
  if not s and redis.call('EXISTS', hash) == 0 then
    set_due(due, id, false)
    if slotted then free_slot(flight, id) end
    release_head(heads, due, id)
    out[i] = -1
  elseif s and DONE[s] then
    set_due(due, id, false)
    if slotted then free_slot(flight, id) end
    if ordered then release_head(heads, due, id) end
    out[i] = 0
  elseif tonumber(got[2] or '0') ~= attempt - 1 then
    out[i] = 0
  else
    if slotted then free_slot(flight, id) end
    local state = ARGV[a + 2]
    local fields = {STATE .. t, state, REASON .. t, ARGV[a + 3]}
    if ARGV[a + 8] == '1' then
      fields[5], fields[6] = ATTEMPTS .. t, attempt
      count(stats, ATTEMPTS_STAT)
    end
    local entry = ARGV[a + 4]
    if entry ~= '' then
      -- The attempt is a field of the event hash, in parts of PART bytes when longer, as
      -- relay.store.records.split_value does, so the hash stays a listpack (one key).
      local name = ATTEMPT .. t .. ':' .. attempt
      if #entry <= PART or #entry > PARTS_MAX then
        fields[#fields + 1] = name
        fields[#fields + 1] = entry
      else
        for p = 0, math.ceil(#entry / PART) - 1 do
          fields[#fields + 1] = p == 0 and name or name .. '.' .. p
          fields[#fields + 1] = entry:sub(p * PART + 1, (p + 1) * PART)
        end
      end
    end
    redis.call('HSET', hash, unpack(fields))
    expiring[hash] = true
    if ARGV[a + 6] ~= '' then count(stats, ARGV[a + 6]) end
    if ARGV[a + 7] == '1' then count(stats, FAILURES_STAT) end
    if DEAD_LETTER[state] then
      dead[#dead + 1] = now
      dead[#dead + 1] = member
    end
    if ARGV[a + 9] == '' then
      set_due(due, id, false)
      if ordered then release_head(heads, due, id) end
    else
      set_due(due, id, ARGV[a + 9])
    end
    out[i] = 1
  end
end

-- Once per call, not per delivery.
for key in pairs(expiring) do redis.call('EXPIRE', key, retention) end
for stats, c in pairs(counts) do
  for field, n in pairs(c) do redis.call('HINCRBY', stats, field, n) end
end
for due, d in pairs(dues) do
  local gone, scored = {}, {}
  for _, id in ipairs(d.ids) do
    local score = d.at[id]
    if score then
      scored[#scored + 1] = score
      scored[#scored + 1] = id
    else
      gone[#gone + 1] = id
    end
  end
  if #gone > 0 then redis.call('ZREM', due, unpack(gone)) end
  if #scored > 0 then redis.call('ZADD', due, unpack(scored)) end
end
for flight, ids in pairs(flights) do redis.call('ZREM', flight, unpack(ids)) end
if #dead > 0 then
  redis.call('ZADD', KEYS[1], unpack(dead))
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(now) - tonumber(retention))
end
return out
