"""The intake commit as one Lua call: every event of a batch in a single Redis command.

Per event the commit writes its hash (with an expiry), one entry per routed target in that
target's due set, its index entries and counters, and, for a deduplicated source, claims the
dedupe key (`SET NX GET EX`) and counts a repeat. As redis-py commands that was 3 to 5 commands
per event plus a follow-up for the repeat counters; packing them and parsing their replies was
most of the receiver's commit. As one script call per batch, the arguments are flat strings
(packed by hiredis in C), the reply is one list, and the per-event work runs inside Redis, at
about a microsecond a command. The script is atomic, like the MULTI around it.

It is sent with EVAL (about 2 KB a batch), not EVALSHA: a Redis that restarted or flushed its
script cache would fail an EVALSHA inside MULTI with NOSCRIPT while the rest of the
transaction ran, and Redis caches the compiled script by its digest anyway.

`commit_arguments` is pure: it turns a batch into the script's KEYS and ARGV (layout below),
so the contract between Python and Lua is tested without Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from relay.store import keys
from relay.store.event import EVENT_FIELDS, Event

#: KEYS: [1] events index, [2] unrouted index, [3] due-targets set, [4] the RQ queue (only
#:   read: its length), then per event in order: its hash, its source's counters, its dedupe
#:   key (when it has one), one due set per target.
#: ARGV: [1] hash TTL in seconds, [2] trim index entries scored below this, [3] the hash's
#:   field names (`pack_record` of EVENT_FIELDS), [4] and [5] the prefixes of the per-target
#:   state and attempts fields, [6] the state of a new delivery, then one record per event
#:   (`pack_record`): id, dedupe window in seconds ("0": no dedupe key), the hash's values in
#:   the order of [3] (its `received` is the event's score in the indexes), the target names.
#: Returns the queue's length (the kicks waiting, read in the same atomic step), then one
#: string per event that has a dedupe key, in order: the id of the event that claimed the key
#: first, or "" if this event is the first. A repeat (an earlier id that is not the event's
#: own: a re-commit of the same event is no repeat) counts in its source's `duplicates`
#: counter, in the same atomic step.
#: The script's parser of one `pack_record` argument (tested on its own against Python's).
ITEMS_LUA = """
local function items(record)
  local nl = string.find(record, '\\n', 1, true)
  local out, pos = {}, nl + 1
  for len in string.gmatch(string.sub(record, 1, nl - 1), '%d+') do
    local stop = pos + tonumber(len)
    out[#out + 1] = string.sub(record, pos, stop - 1)
    pos = stop
  end
  return out
end
"""

COMMIT_LUA = (
    ITEMS_LUA
    + """
local ttl, trim = ARGV[1], ARGV[2]
local names = items(ARGV[3])
local state_prefix, attempts_prefix, pending = ARGV[4], ARGV[5], ARGV[6]
local nnames, at_received = #names, 0
for f = 1, nnames do
  if names[f] == 'received' then at_received = f end
end
local k = 5
local found, indexed, unrouted, counts, due_targets = {}, {}, {}, {}, {}
for a = 7, #ARGV do
  local it = items(ARGV[a])
  local id, window, received = it[1], it[2], it[2 + at_received]
  local fields = {}
  for f = 1, nnames do
    fields[2 * f - 1] = names[f]
    fields[2 * f] = it[2 + f]
  end
  local first_target = 3 + nnames
  for t = first_target, #it do
    fields[#fields + 1] = state_prefix .. it[t]
    fields[#fields + 1] = pending
    fields[#fields + 1] = attempts_prefix .. it[t]
    fields[#fields + 1] = '0'
  end
  local hash, stats = KEYS[k], KEYS[k + 1]
  k = k + 2
  redis.call('HSET', hash, unpack(fields))
  redis.call('EXPIRE', hash, ttl)
  local count = counts[stats]
  if not count then
    count = {received = 0, unrouted = 0, duplicates = 0}
    counts[stats] = count
  end
  count.received = count.received + 1
  if window ~= '0' then
    local first = redis.call('SET', KEYS[k], id, 'NX', 'GET', 'EX', window)
    if first and first ~= id then
      count.duplicates = count.duplicates + 1
    end
    found[#found + 1] = first or ''
    k = k + 1
  end
  indexed[#indexed + 1] = received
  indexed[#indexed + 1] = id
  if first_target > #it then
    unrouted[#unrouted + 1] = received
    unrouted[#unrouted + 1] = id
    count.unrouted = count.unrouted + 1
  end
  for t = first_target, #it do
    redis.call('ZADD', KEYS[k], received, id)
    due_targets[it[t]] = true
    k = k + 1
  end
end
-- Once per batch, not per event: the indexes, the counters, the due-targets set.
redis.call('ZADD', KEYS[1], unpack(indexed))
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', trim)
if #unrouted > 0 then
  redis.call('ZADD', KEYS[2], unpack(unrouted))
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
  redis.call('SADD', KEYS[3], unpack(targets))
end
table.insert(found, 1, redis.call('LLEN', KEYS[4]))
return found
"""
)


class Request(Protocol):
    """What the commit reads of one request: its events and its source's dedupe window."""

    @property
    def events(self) -> Sequence[Event]: ...

    @property
    def dedupe_window(self) -> int: ...


@dataclass(frozen=True)
class CommitCall:
    """The script's KEYS and ARGV for one batch, and whose dedupe reply is which."""

    keys: list[str]
    args: list[str | bytes]
    #: (request index, event index) of each event with a dedupe key, in reply order.
    dedupe: list[tuple[int, int]]
    #: Whether any event was routed somewhere (only then is a worker kick worth sending).
    routed: bool

    def command(self) -> tuple[str | bytes | int, ...]:
        """The whole call as one Redis command (EVAL: see the module's docstring)."""
        return ("EVAL", COMMIT_LUA, len(self.keys), *self.keys, *self.args)


def commit_arguments(
    batch: Sequence[Request], retention: float, now: float, queue_key: str
) -> CommitCall:
    """KEYS and ARGV of the commit script for `batch` (layout: COMMIT_LUA).

    `queue_key` is the RQ queue whose length the script returns (`Queue.key`).
    """
    ttl = max(1, int(retention))
    call_keys = [keys.EVENTS_INDEX, keys.UNROUTED, keys.DUE_TARGETS, queue_key]
    args: list[str | bytes] = [str(ttl), repr(now - retention), *_BATCH_CONSTANTS]
    dedupe: list[tuple[int, int]] = []
    routed = False
    for r, request in enumerate(batch):
        for e, event in enumerate(request.events):
            call_keys.append(keys.event_key(event.id))
            call_keys.append(keys.source_stats_key(event.source))
            window = b"0"
            if event.dedupe_key:
                call_keys.append(event.dedupe_key)
                window = str(max(1, request.dedupe_window)).encode()
                dedupe.append((r, e))
            if event.targets:
                routed = True
                call_keys.extend(keys.due_key(target) for target in event.targets)
            args.append(
                pack_record(
                    (
                        event.id.encode(),
                        window,
                        *event.redis_values(),
                        *(target.encode() for target in event.targets),
                    )
                )
            )
    return CommitCall(call_keys, args, dedupe, routed)


def pack_record(items: Sequence[bytes]) -> bytes:
    """Items as one argument: their lengths in decimal, comma-separated, a newline, then their
    bytes one after the other.

    One argument per event instead of ~30: redis.asyncio packs commands in Python, about a
    microsecond an argument. And this layout is built by C loops (`map`, `join`) rather than a
    Python loop over the items, which cost about 3% of the receiver's time.
    """
    return ",".join(map(str, map(len, items))).encode() + b"\n" + b"".join(items)


def unpack_record(record: bytes) -> list[bytes]:
    """The inverse of `pack_record` (what the script's `items` does), for tests and tools."""
    head, _, data = record.partition(b"\n")
    out, pos = [], 0
    for size in map(int, filter(None, head.split(b","))):
        out.append(data[pos : pos + size])
        pos += size
    return out


#: ARGV[3] to ARGV[6]: the same for every batch.
_BATCH_CONSTANTS = (
    pack_record([name.encode() for name in EVENT_FIELDS]),
    keys.state_field("").encode(),
    keys.attempts_field("").encode(),
    keys.PENDING.encode(),
)
