-- The listing's rows of one page of events, in one call: for each event hash (KEYS), its
-- source, type, received time and targets, then the state and attempts of each target.
-- A target list is the JSON array of names the commit wrote; target names are plain words
-- (letters, digits, _ . -), so the names are the quoted strings of the array.
--
-- ARGV narrows the reply, never more than the caller's own filters would (the caller applies
-- every filter again): [1] source, [2] target, [3] delivery state, [4] "1" for unrouted events
-- only, [5] and [6] the received time's bounds (inclusive; the listing walks the minute lists
-- by whole minutes); "" for any. A row they leave out is answered 0, so the caller still learns nothing
-- more is there; an expired event (no fields) is answered {false, false, false, false, {}}.
-- Reply per key: {source, type, received, targets, {state, attempts, ...}} (false for a
-- missing field), or 0.
local want_source, want_target, want_state, only_unrouted = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local from, to = tonumber(ARGV[5]), tonumber(ARGV[6])
local rows = {}
for i, key in ipairs(KEYS) do
    local row = redis.call('HMGET', key, 'source', 'type', RECEIVED_FIELD, 'targets')
    local names = {}
    if row[4] then
        for name in string.gmatch(row[4], '"([^"]*)"') do
            names[#names + 1] = name
        end
    end
    local keep = row[1] == false or row[1] == nil or want_source == '' or row[1] == want_source
    local at = row[1] and tonumber(row[3])
    if keep and at and ((from and at < from) or (to and at > to)) then
        keep = false
    end
    if keep and only_unrouted == '1' then
        keep = #names == 0
    end
    if keep and want_target ~= '' then
        keep = false
        for _, name in ipairs(names) do
            if name == want_target then
                keep = true
            end
        end
    end
    local states = {}
    if keep and #names > 0 then
        local fields = {}
        for _, name in ipairs(names) do
            fields[#fields + 1] = STATE .. name
            fields[#fields + 1] = ATTEMPTS .. name
        end
        states = redis.call('HMGET', key, unpack(fields))
        if want_state ~= '' and row[1] then
            keep = false
            for j, name in ipairs(names) do
                -- An absent state field reads as pending (relay.store.records.read_state).
                local state = states[2 * j - 1] or STATE_PENDING
                if state == want_state and (want_target == '' or name == want_target) then
                    keep = true
                end
            end
        end
        for j = 1, #fields do
            states[j] = states[j] or false
        end
    elseif keep and want_state ~= '' and row[1] then
        keep = false -- a state asked for, and no target to have it
    end
    if keep then
        -- `or false`: a nil would end the Lua array there (false becomes a nil reply).
        rows[i] = {row[1] or false, row[2] or false, row[3] or false, row[4] or false, states}
    else
        rows[i] = 0
    end
end
return rows
