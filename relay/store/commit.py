"""The intake commit as one Lua call: every event of a batch in a single Redis command.

Per event the commit writes its hash (with an expiry), one entry per routed target in that
target's due set, its index entries and counters, and, for a deduplicated source, claims the
dedupe key (`SET NX GET EX`) and counts a repeat. One script call per batch keeps the arguments
flat strings (packed by hiredis in C) and the reply one list, with the per-event work inside
Redis. The script (lua/commit.lua) is atomic, like the MULTI around it.

The receiver's link (relay.receiver.link) sends the script whole (EVAL, about 5 KB) once per
connection, then by its digest (EVALSHA). The MULTI pipelines (a sync client, the spool's drain)
always send it whole: a Redis that restarted or flushed its script cache would fail an EVALSHA
inside MULTI with NOSCRIPT while the rest of the transaction ran.

`commit_arguments` is pure: it turns a batch into the script's KEYS and ARGV (layout below),
so the contract between Python and Lua is tested without Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from relay.core.ids import id_to_bytes
from relay.store import keys, scripts
from relay.store.records import EVENT_FIELDS, DeliveryState, Event, attempts_field, state_field

#: KEYS: [1] the events index's minutes (its minute lists, relay.store.events_index, are named
#:   in the script), [2] unrouted index, [3] due-targets set, [4] the RQ queue (only
#:   read: its length), then per event in order: its hash, its source's counters, its dedupe
#:   key (when it has one), one due set per target, each followed by the target's order hash
#:   when the delivery is ordered (FIFO per key: relay.store.control).
#: ARGV: [1] hash TTL in seconds, [2] trim index entries scored below this, [3] the hash's
#:   field names (`pack_record` of EVENT_FIELDS), [4] and [5] the prefixes of the per-target
#:   state and attempts fields, [6] the state of a new delivery, then one record per event
#:   (`pack_record`): id, its compact form (the events index's entry: ids.id_to_bytes), dedupe
#:   window in seconds ("0": no dedupe key), the hash's values in the order of [3], each whole
#:   (its `received` is the event's score in the indexes; "": the field is left out), the
#:   target names, and when a delivery is ordered, "" and one FIFO key digest per target.
#:   The script cuts a long body or headers into parts itself, by records.split_value's rule,
#:   so the hash is field for field what records.Event.to_redis gives: cutting a 0.9 KB body
#:   in Python cost the receiver about a sixth of its instructions per request, and Redis has
#:   CPU to spare.
#: Returns the queue's length (the kicks waiting, read in the same atomic step), then one
#: string per event that has a dedupe key, in order: the id of the event that claimed the key
#: first, or "" if this event is the first. A repeat (an earlier id that is not the event's
#: own: a re-commit of the same event is no repeat) counts in its source's `duplicates`
#: counter, in the same atomic step.
COMMIT_LUA = scripts.COMMIT
#: The script's parser of one `pack_record` argument (tested on its own against Python's).
ITEMS_LUA = scripts.ITEMS


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
        """The whole call as one Redis command: EVAL (the link turns it into EVALSHA once the
        script went out on its connection: see the module's docstring)."""
        return ("EVAL", COMMIT_LUA, len(self.keys), *self.keys, *self.args)


def commit_arguments(
    batch: Sequence[Request], retention: float, now: float, queue_key: str
) -> CommitCall:
    """KEYS and ARGV of the commit script for `batch` (layout: COMMIT_LUA).

    `queue_key` is the RQ queue whose length the script returns (`Queue.key`).
    """
    ttl = max(1, int(retention))
    call_keys = [keys.EVENTS_MINUTES, keys.UNROUTED, keys.DUE_TARGETS, queue_key]
    args: list[str | bytes] = [str(ttl), repr(now - retention), *_BATCH_CONSTANTS]
    dedupe: list[tuple[int, int]] = []
    routed = False
    for r, request in enumerate(batch):
        for e, event in enumerate(request.events):
            if event.targets:
                routed = True
            if not event.dedupe_key and not event.order:
                # The usual event: its keys and the parts of its record that it shares with
                # every event of its source, method and targets come from a _Shared.
                shared = _shared(event)
                call_keys.append(keys.event_key(event.id))
                call_keys.extend(shared.keys)
                args.append(shared.record(event))
                continue
            call_keys.append(keys.event_key(event.id))
            call_keys.append(keys.source_stats_key(event.source))
            window = b"0"
            if event.dedupe_key:
                call_keys.append(event.dedupe_key)
                window = str(max(1, request.dedupe_window)).encode()
                dedupe.append((r, e))
            if event.order:
                _ordered_keys(call_keys, event)
            else:
                call_keys.extend(keys.due_key(target) for target in event.targets)
            args.append(pack_record(record_items(event, window)))
    return CommitCall(call_keys, args, dedupe, routed)


def record_items(event: Event, window: bytes) -> tuple[bytes, ...]:
    """The items of an event's record (layout: COMMIT_LUA), `window` its dedupe window."""
    return (
        event.id.encode(),
        id_to_bytes(event.id),
        window,
        *event.redis_values(),
        *map(str.encode, event.targets),
        *_order_items(event.order),
    )


class _Shared(NamedTuple):
    """What the records and keys of events without a dedupe key or FIFO order share, per
    source, method and targets: made once, then each record is one `%` and one join.

    `pack_record` of a record's thirteen or so items cost each event a length and a number
    formatted per item; here only the items that differ from one event to the next are
    measured (tests/test_intake.py checks the bytes and keys against `pack_record`'s).
    """

    keys: tuple[str, ...]  # the source's counters, then each target's due set
    head: bytes  # the lengths line, the shared items' lengths written in, "%d" for the others
    source: bytes  # window ("0") and source
    method: bytes
    tail: bytes  # the targets' JSON, the empty dedupe key, the target names

    def record(self, event: Event) -> bytes:
        """The event's record: `pack_record(record_items(event, b"0"))`."""
        kind, received, ctype, headers = event.own_values()
        body = event.body
        event_id = event.id.encode()
        compact = id_to_bytes(event.id)
        lengths = (len(event_id), len(compact), len(kind), len(received), len(ctype))
        head = self.head % (*lengths, len(headers), len(body))
        parts = (event_id, compact, self.source, kind, received, ctype, self.method)
        return head + b"".join((*parts, headers, body, self.tail))


#: _Shared per (source, method, targets): names from routes.toml, so few; bounded all the same.
_SHARED: dict[tuple[str, str, tuple[str, ...]], _Shared] = {}
SHARED_MAX = 1024


def _shared(event: Event) -> _Shared:
    found = _SHARED.get((event.source, event.method, event.targets))
    if found is not None:
        return found
    items = record_items(event, b"0")
    # Items 0, 1, 4, 5, 6, 8 and 9 (id, compact id, type, received, content type, headers,
    # body) differ between events; the others are the same for every event of the key.
    varying = {0, 1, 4, 5, 6, 8, 9}
    lengths = ["%d" if i in varying else str(len(item)) for i, item in enumerate(items)]
    shared = _Shared(
        keys=(keys.source_stats_key(event.source), *map(keys.due_key, event.targets)),
        head=(",".join(lengths) + "\n").encode(),
        source=items[2] + items[3],
        method=items[7],
        tail=b"".join(items[10:]),
    )
    if len(_SHARED) < SHARED_MAX:
        _SHARED[event.source, event.method, event.targets] = shared
    return shared


def _ordered_keys(call_keys: list[str], event: Event) -> None:
    """The due set of each target, followed by its order hash when the delivery is ordered."""
    for target, digest in zip(event.targets, event.order, strict=True):
        call_keys.append(keys.due_key(target))
        if digest:
            call_keys.append(keys.order_key(target))


def _order_items(order: Sequence[str]) -> tuple[bytes, ...]:
    """ "" then each target's FIFO key digest, when any delivery is ordered; () otherwise."""
    return (b"", *(digest.encode() for digest in order)) if order else ()


def pack_record(items: Sequence[bytes]) -> bytes:
    """Items as one argument: their lengths in decimal, comma-separated, a newline, then their
    bytes one after the other.

    One argument per event rather than one per item, since redis.asyncio packs each argument in
    Python; and the layout is built in C (one `%` of a head made once per item count, `join`),
    not a Python loop over the items.
    """
    count = len(items)
    head = _HEADS.get(count)
    if head is None:
        head = _HEADS[count] = ",".join(["%d"] * count).encode() + b"\n"
    return head % tuple(map(len, items)) + b"".join(items)


#: `pack_record`'s head for each item count seen: "%d,%d,...\n" (a record has a dozen items and
#: one more per target, so there are few).
_HEADS: dict[int, bytes] = {}


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
    state_field("").encode(),
    attempts_field("").encode(),
    DeliveryState.PENDING.encode(),
)
