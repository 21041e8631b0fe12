"""The one codec of what relay keeps in Redis: the event hash and the attempt log's records.

Key names are relay.store.keys'; field names, state words and outcomes are here, and the Lua
scripts take them from here too (relay.store.lua). Readers are tolerant, since a record may have
been written by another version of relay: a missing or malformed value reads as "not known".

The event hash (relay:ev:{id}) holds the event's own fields (EVENT_FIELDS; a body or headers
longer than PART bytes in parts, "body", "body.1", ..., so that the hash keeps Redis's compact
listpack encoding) and, per target t:
    s:{t}  its DeliveryState
    n:{t}  attempts made to it, in every round
    r:{t}  why the delivery ended as it did ("" while under way, and for a delivery delivered
           by its last attempt, whose reason that attempt's field says: `stored_reason`)
    b:{t}  `before_replay`: attempts made before the latest replay (absent: never replayed).
           A round may make attempts while n - b < the target's retry attempts.
    o:{t}  the digest of the delivery's FIFO key, for a target with `order` (absent: unordered;
           relay.store.control)
    a:{t}:{n}  its attempt n, an AttemptRecord (`to_field`; in parts like a long body)
Events stored before 2026-12 kept their attempts in a list of their own (relay:att:{id}), read
too until they expire (`attempt_log`). The record lives in relay.store.attempts and is
re-exported here, so readers import the codec from one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import orjson

from relay.core.states import DeliveryState, Outcome
from relay.store.attempts import (
    ATTEMPT_PREFIX,
    AttemptRecord,
    attempt_field,
    attempt_log,
    attempts_in,
)

__all__ = [
    "ATTEMPTS_PREFIX",
    "ATTEMPT_PREFIX",
    "BEFORE_REPLAY_PREFIX",
    "EVENT_FIELDS",
    "ORDER_PREFIX",
    "PART",
    "PARTS_MAX",
    "REASON_PREFIX",
    "RECEIVED_FIELD",
    "STATE_PREFIX",
    "AttemptRecord",
    "DeliveryRecord",
    "DeliveryState",
    "Event",
    "Outcome",
    "SourceStat",
    "TargetStat",
    "attempt_field",
    "attempt_log",
    "attempts_field",
    "attempts_in",
    "before_replay_field",
    "delivered_reason",
    "joined",
    "order_field",
    "read_int",
    "read_state",
    "read_text",
    "reason_field",
    "seconds_text",
    "split_value",
    "state_field",
    "stored_reason",
    "targets_of",
]

#: The event's field whose value (Unix seconds) scores it in the indexes.
RECEIVED_FIELD = "received"
#: The fields of an event's hash, in the order of `Event.redis_values` (the commit script gets
#: the names once per batch and the values once per event).
EVENT_FIELDS = (
    "source",
    "type",
    RECEIVED_FIELD,
    "ctype",
    "method",
    "headers",
    "body",
    "targets",
    "dedupe",
)

#: Redis keeps a hash compact (a listpack: about half the bytes of a hashtable) while each of
#: its fields and values is at most `hash-max-listpack-value` bytes (64 by default) and it has
#: at most `hash-max-listpack-entries` fields (128). A longer value of SPLIT_FIELDS (a body of a
#: few hundred bytes) is therefore stored in parts of PART bytes: the first under the field's
#: own name, the rest under "{name}.1", "{name}.2", ... (`split_value`, and the intake commit's
#: script, lua/commit.lua, by the same rule; `joined` reads both this and a hash written before
#: 2026-12, whose whole value is under the name).
PART = 64
#: A value longer than this is stored whole (the hash becomes a hashtable, as it would anyway:
#: its parts would take more fields than a listpack holds).
PARTS_MAX = 2048
SPLIT_FIELDS = frozenset({"headers", "body"})
#: The one field stored even when empty (a replay tells a stored event by it); any other field
#: whose value is empty (a POST's method, no headers, no dedupe key, no type) is left out, and
#: reads as its default, so the hash spends no entries on them.
BODY_FIELD = "body"

STATE_PREFIX = "s:"
ATTEMPTS_PREFIX = "n:"
REASON_PREFIX = "r:"
BEFORE_REPLAY_PREFIX = "b:"
ORDER_PREFIX = "o:"


class TargetStat(StrEnum):
    """The counters of relay:stats:target:{name}, counted since the start."""

    DELIVERED = Outcome.DELIVERED.value
    DEAD = Outcome.DEAD.value
    GONE = Outcome.GONE.value
    ATTEMPTS = "attempts"  # HTTP attempts made
    FAILURES = "failures"  # attempts that did not deliver
    REPLAYED = "replayed"  # dead letters put back by `relay replay`


class SourceStat(StrEnum):
    """The counters of relay:stats:source:{name}, counted since the start."""

    RECEIVED = "received"
    DUPLICATES = "duplicates"  # inbound duplicates (a dedupe key seen within its window)
    UNROUTED = "unrouted"  # events no route matched


def state_field(target: str) -> str:
    """Field of the event hash with a target's delivery state."""
    return STATE_PREFIX + target


def attempts_field(target: str) -> str:
    """Field of the event hash with the number of attempts made to a target."""
    return ATTEMPTS_PREFIX + target


def reason_field(target: str) -> str:
    """Field of the event hash with why a delivery ended as it did."""
    return REASON_PREFIX + target


def before_replay_field(target: str) -> str:
    """Field of the event hash with the attempts made before the latest replay of a target."""
    return BEFORE_REPLAY_PREFIX + target


def order_field(target: str) -> str:
    """Field of the event hash with the digest of a delivery's FIFO key (ordered targets)."""
    return ORDER_PREFIX + target


def read_text(value: object) -> str:
    """A Redis reply as text ("" when absent)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def read_int(value: object) -> int:
    """A Redis counter or field as an int (0 when absent or not a whole number)."""
    try:
        return int(read_text(value) or 0)
    except ValueError:
        return 0


def split_value(name: str, value: bytes) -> list[tuple[str, bytes]]:
    """The (field, value) pairs that store `value` under `name`: parts of PART bytes when it is
    longer than PART (and at most PARTS_MAX), so the event hash stays a listpack."""
    if len(value) <= PART or len(value) > PARTS_MAX:
        return [(name, value)]
    return [
        (f"{name}.{i}" if i else name, value[at : at + PART])
        for i, at in enumerate(range(0, len(value), PART))
    ]


def joined(data: Mapping[bytes, bytes], name: str) -> bytes | None:
    """The value stored under `name` in parts (`split_value`) or whole; None when absent."""
    value = data.get(name.encode())
    if value is None:
        return None
    parts, i = [value], 1
    while (part := data.get(f"{name}.{i}".encode())) is not None:
        parts.append(part)
        i += 1
    return b"".join(parts) if i > 1 else value


def seconds_text(seconds: float) -> bytes:
    """`repr(seconds).encode()`, the stored form of a time in Unix seconds.

    orjson writes the same shortest round-trip digits as repr at a seventh of the cost (the
    receiver writes one per event), but spells numbers below 1e-4 without an exponent, and
    infinities and NaN as null: repr writes those.
    """
    if 1.0 <= seconds < 1e16:
        return orjson.dumps(seconds)
    return repr(seconds).encode()


@dataclass(frozen=True, init=False)
class Event:
    """One inbound event; `body` is the exact bytes the provider sent (or its split part)."""

    id: str
    source: str
    type: str | None  # None when the request carried no event type (recorded as unrouted)
    received_at: float  # Unix seconds
    content_type: str
    method: str
    headers: tuple[tuple[str, str], ...]  # provider headers kept for forwarding and inspection
    body: bytes
    targets: tuple[str, ...]  # matched at intake: in-flight events keep the routes they started on
    dedupe_key: str = ""  # Redis key of the inbound dedupe value, "" when the source has none
    #: Per target (aligned with `targets`), the digest of its FIFO key; "" for an unordered
    #: delivery, () when none is ordered. Written as the o:{t} fields (relay.store.commit).
    order: tuple[str, ...] = ()

    def __init__(
        self,
        id: str,
        source: str,
        type: str | None,
        received_at: float,
        content_type: str,
        method: str,
        headers: tuple[tuple[str, str], ...],
        body: bytes,
        targets: tuple[str, ...],
        dedupe_key: str = "",
        order: tuple[str, ...] = (),
    ) -> None:
        """The fields in their order (the dataclass's own __init__, written out).

        The receiver makes an event per request. A frozen dataclass's generated __init__ sets
        each field with `object.__setattr__`, about a thousand instructions a field; filling
        the instance's dict directly (which a frozen dataclass does not forbid) costs a tenth.
        """
        fields = self.__dict__
        fields["id"] = id
        fields["source"] = source
        fields["type"] = type
        fields["received_at"] = received_at
        fields["content_type"] = content_type
        fields["method"] = method
        fields["headers"] = headers
        fields["body"] = body
        fields["targets"] = targets
        fields["dedupe_key"] = dedupe_key
        fields["order"] = order

    def redis_fields(self) -> tuple[tuple[bytes, ...], tuple[tuple[str, bytes], ...]]:
        """The values of the event hash, as bytes, in the order of `EVENT_FIELDS` (of a split
        value its first part), and the (field, value) pairs of the further parts."""
        values: list[bytes] = []
        more: list[tuple[str, bytes]] = []
        for name, value in zip(EVENT_FIELDS, self.redis_values(), strict=True):
            if name in SPLIT_FIELDS:
                first, *rest = split_value(name, value)
                values.append(first[1])
                more.extend(rest)
            else:
                values.append(value)
        return tuple(values), tuple(more)

    def redis_values(self) -> tuple[bytes, ...]:
        """The values of the event hash, as bytes, in the order of `EVENT_FIELDS`, each whole
        (the intake commit's script cuts a long one into parts itself: relay.store.commit)."""
        return (
            self.source.encode(),
            self.type.encode() if self.type is not None else b"",
            seconds_text(self.received_at),
            self.content_type.encode(),
            b"" if self.method == "POST" else self.method.encode(),
            orjson.dumps(self.headers) if self.headers else b"",
            self.body,
            orjson.dumps(self.targets),
            self.dedupe_key.encode(),
        )

    def own_values(self) -> tuple[bytes, bytes, bytes, bytes]:
        """`redis_values`' type, received, ctype and headers: the values (besides the body)
        that differ from one event of a source, method and targets to the next."""
        kind = self.type
        headers = self.headers
        return (
            kind.encode() if kind is not None else b"",
            seconds_text(self.received_at),
            self.content_type.encode(),
            orjson.dumps(headers) if headers else b"",
        )

    def to_redis(self) -> dict[str, bytes]:
        """The event's own fields of its hash, as the commit writes them (a long body or headers
        in parts, no empty field but the body)."""
        values, more = self.redis_fields()
        fields = dict(zip(EVENT_FIELDS, values, strict=True))
        kept = {k: v for k, v in fields.items() if v or k == BODY_FIELD}
        return {**kept, **dict(more)}

    @classmethod
    def from_redis(cls, event_id: str, data: Mapping[bytes, bytes]) -> Event:
        """Rebuild an event from its hash as redis-py returns it (bytes keys and values)."""

        def text(name: str) -> str:
            return read_text(data.get(name.encode()))

        return cls(
            id=event_id,
            source=text("source"),
            type=text("type") or None,
            received_at=float(text(RECEIVED_FIELD) or 0.0),
            content_type=text("ctype"),
            method=text("method") or "POST",
            headers=tuple(
                (str(k), str(v)) for k, v in orjson.loads(joined(data, "headers") or b"[]")
            ),
            body=joined(data, "body") or b"",
            targets=targets_of(data.get(b"targets")),
            dedupe_key=text("dedupe"),
            order=_order_of(data, targets_of(data.get(b"targets"))),
        )


def _order_of(data: Mapping[bytes, bytes], targets: tuple[str, ...]) -> tuple[str, ...]:
    order = tuple(read_text(data.get(order_field(t).encode())) for t in targets)
    return order if any(order) else ()


def targets_of(raw: bytes | None) -> tuple[str, ...]:
    """The `targets` field of an event hash (() when absent or unreadable)."""
    if not raw:
        return ()
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ()
    return tuple(str(t) for t in value) if isinstance(value, list) else ()


def read_state(raw: bytes | None) -> DeliveryState:
    """A stored state word: PENDING when absent, UNKNOWN for a word this version does not write."""
    if raw is None or raw == b"":
        return DeliveryState.PENDING
    try:
        return DeliveryState(raw.decode("utf-8", "replace"))
    except ValueError:
        return DeliveryState.UNKNOWN


def delivered_reason(status: int | None) -> str:
    """The reason of a delivery its attempt delivered with HTTP `status` (worker.outcome)."""
    return f"delivered: HTTP {status}"


def stored_reason(state: DeliveryState, reason: str, entry: AttemptRecord | None) -> str:
    """The reason as the event hash stores it: "" when it is the one the attempt's own field
    gives back (`delivered_reason` of its status), so a delivery does not store it twice
    (`DeliveryRecord.from_redis` derives it again)."""
    if (
        state is DeliveryState.DELIVERED
        and entry is not None
        and reason == delivered_reason(entry.status)
    ):
        return ""
    return reason


def _derived_reason(target: str, data: Mapping[bytes, bytes], attempts: int) -> str:
    """The reason of a delivered delivery stored as "": its last attempt's."""
    raw = joined(data, attempt_field(target, attempts))
    if raw is None:
        return ""
    return delivered_reason(AttemptRecord.from_field(target, attempts, raw).status)


@dataclass(frozen=True)
class DeliveryRecord:
    """One target's delivery state, as its four fields of the event hash hold it."""

    state: DeliveryState
    attempts: int  # n: attempts made in all rounds
    reason: str = ""
    before_replay: int = 0  # b: attempts made before the latest replay
    order_key: str = ""  # o: the digest of its FIFO key ("" unordered)

    @property
    def done(self) -> bool:
        """Whether the delivery is over (delivered, dead, gone or a duplicate)."""
        return self.state.done

    @property
    def round_attempts(self) -> int:
        """Attempts made in the current round (since the latest replay)."""
        return self.attempts - self.before_replay

    def to_redis(self, target: str) -> dict[str, str]:
        """The target's fields of the event hash (b: only once a replay has set it, o: only
        for an ordered delivery)."""
        fields = {
            state_field(target): str(self.state),
            attempts_field(target): str(self.attempts),
            reason_field(target): self.reason,
        }
        if self.before_replay:
            fields[before_replay_field(target)] = str(self.before_replay)
        if self.order_key:
            fields[order_field(target)] = self.order_key
        return fields

    @classmethod
    def from_redis(cls, target: str, data: Mapping[bytes, bytes]) -> DeliveryRecord:
        """A target's delivery from the event hash as HGETALL returns it."""
        state = read_state(data.get(state_field(target).encode()))
        attempts = read_int(data.get(attempts_field(target).encode()))
        reason = read_text(data.get(reason_field(target).encode()))
        if not reason and state is DeliveryState.DELIVERED:
            reason = _derived_reason(target, data, attempts)
        return cls(
            state=state,
            attempts=attempts,
            reason=reason,
            before_replay=read_int(data.get(before_replay_field(target).encode())),
            order_key=read_text(data.get(order_field(target).encode())),
        )
