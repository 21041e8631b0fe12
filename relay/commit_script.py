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

from relay import keys
from relay.envelope import Event

#: KEYS: [1] events index, [2] unrouted index, [3] due-targets set, then per event in order:
#:   its hash, its source's counters, its dedupe key (when it has one), one due set per target.
#: ARGV: [1] hash TTL in seconds, [2] trim index entries scored below this, then one record per
#:   event (`pack_record`): id, received (score), dedupe window in seconds ("0": no dedupe
#:   key), target count, the target names, hash field count, field/value pairs.
#: Returns one string per event that has a dedupe key, in order: the id of the event that
#: claimed the key first, or "" if this event is the first. A repeat (an earlier id that is not
#: the event's own: a re-commit of the same event is no repeat) counts in its source's
#: `duplicates` counter, in the same atomic step.
COMMIT_LUA = """
local function items(record)
  local out, pos, size = {}, 1, #record
  while pos <= size do
    local b1, b2, b3, b4 = string.byte(record, pos, pos + 3)
    local len = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
    out[#out + 1] = string.sub(record, pos + 4, pos + 3 + len)
    pos = pos + 4 + len
  end
  return out
end
local ttl, trim = ARGV[1], ARGV[2]
local k = 4
local found, indexed, unrouted, counts, due_targets = {}, {}, {}, {}, {}
for a = 3, #ARGV do
  local it = items(ARGV[a])
  local id, received, window = it[1], it[2], it[3]
  local ntargets = tonumber(it[4])
  local nfields = tonumber(it[5 + ntargets])
  local first_field = 6 + ntargets
  local hash, stats = KEYS[k], KEYS[k + 1]
  k = k + 2
  redis.call('HSET', hash, unpack(it, first_field, first_field + 2 * nfields - 1))
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
  if ntargets == 0 then
    unrouted[#unrouted + 1] = received
    unrouted[#unrouted + 1] = id
    count.unrouted = count.unrouted + 1
  end
  for t = 5, 4 + ntargets do
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
local names = {}
for name in pairs(due_targets) do
  names[#names + 1] = name
end
if #names > 0 then
  redis.call('SADD', KEYS[3], unpack(names))
end
return found
"""


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


def commit_arguments(batch: Sequence[Request], retention: float, now: float) -> CommitCall:
    """KEYS and ARGV of the commit script for `batch` (layout: COMMIT_LUA)."""
    ttl = max(1, int(retention))
    call_keys = [keys.EVENTS_INDEX, keys.UNROUTED, keys.DUE_TARGETS]
    args: list[str | bytes] = [str(ttl), repr(now - retention)]
    dedupe: list[tuple[int, int]] = []
    routed = False
    for r, request in enumerate(batch):
        for e, event in enumerate(request.events):
            call_keys.append(keys.event_key(event.id))
            call_keys.append(keys.source_stats_key(event.source))
            window = "0"
            if event.dedupe_key:
                call_keys.append(event.dedupe_key)
                window = str(max(1, request.dedupe_window))
                dedupe.append((r, e))
            call_keys.extend(keys.due_key(target) for target in event.targets)
            routed = routed or bool(event.targets)
            fields = event.to_redis()
            items: list[str | bytes] = [event.id, repr(event.received_at), window]
            items.append(str(len(event.targets)))
            items += event.targets
            items.append(str(len(fields) + 2 * len(event.targets)))
            for name, value in fields.items():
                items += (name, value)
            for target in event.targets:
                items += (keys.state_field(target), keys.PENDING, keys.attempts_field(target), "0")
            args.append(pack_record(items))
    return CommitCall(call_keys, args, dedupe, routed)


def pack_record(items: Sequence[str | bytes]) -> bytes:
    """Items as one argument: each a 4-byte big-endian length, then its bytes (str as UTF-8).

    One argument per event instead of ~30: redis.asyncio packs commands in Python, about a
    microsecond an argument, so this alone took a tenth of the receiver's time.
    """
    parts: list[bytes] = []
    for item in items:
        data = item.encode() if isinstance(item, str) else item
        parts += (len(data).to_bytes(4, "big"), data)
    return b"".join(parts)


def unpack_record(record: bytes) -> list[bytes]:
    """The inverse of `pack_record` (what the script's `items` does), for tests and tools."""
    out, pos = [], 0
    while pos < len(record):
        size = int.from_bytes(record[pos : pos + 4], "big")
        out.append(record[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return out
