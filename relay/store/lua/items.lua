-- items(record): the parts of one `pack_record` argument (relay.store.commit), in order.
local function items(record)
  local nl = string.find(record, '\n', 1, true)
  local out, pos = {}, nl + 1
  for len in string.gmatch(string.sub(record, 1, nl - 1), '%d+') do
    local stop = pos + tonumber(len)
    out[#out + 1] = string.sub(record, pos, stop - 1)
    pos = stop
  end
  return out
end
