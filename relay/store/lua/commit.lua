-- The intake commit: every event of a batch in one call (relay.store.commit documents KEYS and
-- ARGV). items.lua, order.lua and the preamble of relay.store.scripts (RECEIVED_FIELD, the
-- event hash's field scoring the indexes; BODY_FIELD, the one field written when empty;
-- RECEIVED, UNROUTED, DUPLICATES, the source counters; ORDER, the prefix of the FIFO key
-- field; EVENTS_BUCKET and MINUTE, the events index's minute lists; PART, PARTS_MAX and SPLIT,
-- the rule for a long value of the event hash, relay.store.records.split_value's) come first.
-- A command with a list of any length as its arguments, in chunks: Lua's unpack takes at most
-- about 8,000 values, and one request may split into more events than that.
local CHUNK = 1000 -- even: a ZADD's list is (score, member) pairs
local function call_chunked(command, key, list)
  for first = 1, #list, CHUNK do
    redis.call(command, key, unpack(list, first, math.min(#list, first + CHUNK - 1)))
  end
end
local ttl, trim = ARGV[1], ARGV[2]
local names = items(ARGV[3])
local state_prefix, attempts_prefix, pending = ARGV[4], ARGV[5], ARGV[6]
local nnames, at_received, split = #names, 0, {}
for f = 1, nnames do
  if names[f] == RECEIVED_FIELD then at_received = f end
  split[f] = SPLIT[names[f]] or false
end
-- "body.1", "body.2", ...: made once per call and field, not once per part of every event.
local part_names = {}
local function part_name(name, i)
  local names_of = part_names[name]
  if not names_of then
    names_of = {}
    part_names[name] = names_of
  end
  local found = names_of[i]
  if not found then
    found = name .. '.' .. i
    names_of[i] = found
  end
  return found
end
local k = 5
local found, indexed, unrouted, counts, due_targets = {}, {}, {}, {}, {}
for a = 7, #ARGV do
  local it = items(ARGV[a])
  local id, entry, window, received = it[1], it[2], it[3], it[3 + at_received]
  local fields, parts = {}, {}
  for f = 1, nnames do
    local name, value = names[f], it[3 + f]
    if split[f] and #value > PART and #value <= PARTS_MAX then
      -- A long body or headers in parts of PART bytes, so the hash stays a listpack: the first
      -- under the field's name, the rest ("body.1", ...) after the event's own fields, in the
      -- order relay.store.records.Event.to_redis gives them (the hash's layout is the same
      -- whichever writes it).
      fields[#fields + 1] = name
      fields[#fields + 1] = string.sub(value, 1, PART)
      local i = 0
      for at = PART + 1, #value, PART do
        i = i + 1
        parts[#parts + 1] = part_name(name, i)
        parts[#parts + 1] = string.sub(value, at, at + PART - 1)
      end
    elseif value ~= '' or name == BODY_FIELD then
      -- An empty value is its field's default (relay.store.records): not written.
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
  end
  for m = 1, #parts do
    fields[#fields + 1] = parts[m]
  end
  -- The target names, then, when a target is ordered, '' and one key digest per target.
  local first_target, last_target, digests = 4 + nnames, #it, nil
  for t = first_target, #it do
    if it[t] == '' then
      last_target, digests = t - 1, t + 1 - first_target
      break
    end
  end
  for t = first_target, last_target do
    fields[#fields + 1] = state_prefix .. it[t]
    fields[#fields + 1] = pending
    fields[#fields + 1] = attempts_prefix .. it[t]
    fields[#fields + 1] = '0'
    if digests and it[t + digests] ~= '' then
      fields[#fields + 1] = ORDER .. it[t]
      fields[#fields + 1] = it[t + digests]
    end
  end
  local hash, stats = KEYS[k], KEYS[k + 1]
  k = k + 2
  redis.call('HSET', hash, unpack(fields))
  redis.call('EXPIRE', hash, ttl)
  local count = counts[stats]
  if not count then
    count = {[RECEIVED] = 0, [UNROUTED] = 0, [DUPLICATES] = 0}
    counts[stats] = count
  end
  count[RECEIVED] = count[RECEIVED] + 1
  if window ~= '0' then
    local first = redis.call('SET', KEYS[k], id, 'NX', 'GET', 'EX', window)
    if first and first ~= id then
      count[DUPLICATES] = count[DUPLICATES] + 1
    end
    found[#found + 1] = first or ''
    k = k + 1
  end
  -- The events index: the list of the event's minute (relay.store.events_index), which holds
  -- the id's compact form (relay.core.ids.id_to_bytes, made in Python: no base32 here).
  local minute = string.format('%d', math.floor(tonumber(received) / MINUTE))
  local bucket = indexed[minute]
  if not bucket then
    bucket = {}
    indexed[minute] = bucket
  end
  bucket[#bucket + 1] = entry
  if first_target > last_target then
    unrouted[#unrouted + 1] = received
    unrouted[#unrouted + 1] = id
    count[UNROUTED] = count[UNROUTED] + 1
  end
  for t = first_target, last_target do
    local digest = digests and it[t + digests] or ''
    if digest == '' then
      redis.call('ZADD', KEYS[k], received, id)
      k = k + 1
    else
      -- FIFO per key: due now only at the head of its key's queue (order.lua); the target's
      -- order hash follows its due set in KEYS.
      order_push(KEYS[k + 1], KEYS[k], id, digest, received)
      k = k + 2
    end
    due_targets[it[t]] = true
  end
end
-- Once per batch, not per event: the indexes, the counters, the due-targets set.
for minute, ids in pairs(indexed) do
  local bucket = EVENTS_BUCKET .. minute
  call_chunked('RPUSH', bucket, ids)
  redis.call('EXPIRE', bucket, tonumber(ttl) + MINUTE)
  redis.call('ZADD', KEYS[1], minute, minute)
end
-- A minute whose events are all older than the retention period leaves the index.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. math.floor(tonumber(trim) / MINUTE))
if #unrouted > 0 then
  call_chunked('ZADD', KEYS[2], unrouted)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', trim)
end
for stats, count in pairs(counts) do
  for field, n in pairs(count) do
    if n > 0 then
      redis.call('HINCRBY', stats, field, n)
    end
  end
end
local targets = {}
for name in pairs(due_targets) do
  targets[#targets + 1] = name
end
if #targets > 0 then
  call_chunked('SADD', KEYS[3], targets)
end
table.insert(found, 1, redis.call('LLEN', KEYS[4]))
return found
