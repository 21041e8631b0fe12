-- One page of the events index's minute lists, newest first (relay.store.events_index).
-- KEYS[1]: the sorted set of minutes. ARGV: [1] the lists' name prefix, [2] the newest minute
-- to read ("+inf": from the newest there is; "(m": the minutes before m), [3] the index in that minute's list to read first
-- (-1: its last entry), [4] the oldest minute to read ("-inf": to the oldest), [5] most ids.
-- A list only grows at its end, so an index from its start names the same id for as long as
-- the list lives: a page ends at (minute, index), and the next one starts just before it.
-- Reply: {done, minute, index, id, minute, index, id, ...}; done is 1 when the minutes ran out.
-- Each id is the list's entry, its compact form: the caller turns it into text (ids.id_from_bytes).
local prefix, top, first, low = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local want = tonumber(ARGV[5])
local reply = {0}
local got, offset = 0, 0
while got < want do
  local minutes = redis.call('ZREVRANGEBYSCORE', KEYS[1], top, low, 'LIMIT', offset, 64)
  for _, minute in ipairs(minutes) do
    local key = prefix .. minute
    local last = redis.call('LLEN', key) - 1
    if top ~= '+inf' and tonumber(minute) == tonumber(top) and first >= 0 then
      last = math.min(last, first)
    end
    while last >= 0 and got < want do
      local from = math.max(0, last - (want - got) + 1)
      local ids = redis.call('LRANGE', key, from, last)
      for i = #ids, 1, -1 do
        reply[#reply + 1] = tonumber(minute)
        reply[#reply + 1] = from + i - 1
        reply[#reply + 1] = ids[i]
      end
      got = got + #ids
      last = from - 1
      if #ids == 0 then
        break
      end
    end
    if got >= want then
      return reply -- done or not, the next call tells
    end
  end
  if #minutes < 64 then
    reply[1] = 1
    return reply
  end
  offset = offset + #minutes
end
return reply
