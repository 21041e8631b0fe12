"""The one codec of what relay keeps in Redis: the event hash and the attempt log's records.

Key names are relay.store.keys'; field names, state words and outcomes are here, and the Lua
scripts take them from here too (relay.store.lua). Readers are tolerant, since a record may have
been written by another version of relay: a missing or malformed value reads as "not known".

The event hash (relay:ev:{id}) holds the event's own fields (EVENT_FIELDS) and, per target t:
    s:{t}  its DeliveryState
    n:{t}  attempts made to it, in every round
    r:{t}  why the delivery ended as it did ("" while under way)
    b:{t}  `before_replay`: attempts made before the latest replay (absent: never replayed).
           A round may make attempts while n - b < the target's retry attempts.
The attempt log (relay:att:{id}) holds one AttemptRecord per attempt as JSON, oldest first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from relay.core.states import DeliveryState, Outcome

__all__ = [
    "ATTEMPTS_PREFIX",
    "BEFORE_REPLAY_PREFIX",
    "EVENT_FIELDS",
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
    "attempts_field",
    "before_replay_field",
    "reason_field",
    "state_field",
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

STATE_PREFIX = "s:"
ATTEMPTS_PREFIX = "n:"
REASON_PREFIX = "r:"
BEFORE_REPLAY_PREFIX = "b:"


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


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value is not None else ""


def _int(value: bytes | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


@dataclass(frozen=True)
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

    def redis_values(self) -> tuple[bytes, ...]:
        """The values of the event hash, as bytes, in the order of `EVENT_FIELDS`."""
        return (
            self.source.encode(),
            self.type.encode() if self.type is not None else b"",
            repr(self.received_at).encode(),
            self.content_type.encode(),
            self.method.encode(),
            orjson.dumps(self.headers),
            self.body,
            orjson.dumps(self.targets),
            self.dedupe_key.encode(),
        )

    def to_redis(self) -> dict[str, bytes]:
        """The event's own fields of its hash."""
        return dict(zip(EVENT_FIELDS, self.redis_values(), strict=True))

    @classmethod
    def from_redis(cls, event_id: str, data: Mapping[bytes, bytes]) -> Event:
        """Rebuild an event from its hash as redis-py returns it (bytes keys and values)."""

        def text(name: str) -> str:
            return _text(data.get(name.encode()))

        return cls(
            id=event_id,
            source=text("source"),
            type=text("type") or None,
            received_at=float(text(RECEIVED_FIELD) or 0.0),
            content_type=text("ctype"),
            method=text("method") or "POST",
            headers=tuple((str(k), str(v)) for k, v in orjson.loads(data.get(b"headers", b"[]"))),
            body=data.get(b"body", b""),
            targets=targets_of(data.get(b"targets")),
            dedupe_key=text("dedupe"),
        )


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


@dataclass(frozen=True)
class DeliveryRecord:
    """One target's delivery state, as its four fields of the event hash hold it."""

    state: DeliveryState
    attempts: int  # n: attempts made in all rounds
    reason: str = ""
    before_replay: int = 0  # b: attempts made before the latest replay

    @property
    def done(self) -> bool:
        """Whether the delivery is over (delivered, dead, gone or a duplicate)."""
        return self.state.done

    @property
    def round_attempts(self) -> int:
        """Attempts made in the current round (since the latest replay)."""
        return self.attempts - self.before_replay

    def to_redis(self, target: str) -> dict[str, str]:
        """The target's fields of the event hash (b: only once a replay has set it)."""
        fields = {
            state_field(target): str(self.state),
            attempts_field(target): str(self.attempts),
            reason_field(target): self.reason,
        }
        if self.before_replay:
            fields[before_replay_field(target)] = str(self.before_replay)
        return fields

    @classmethod
    def from_redis(cls, target: str, data: Mapping[bytes, bytes]) -> DeliveryRecord:
        """A target's delivery from the event hash as HGETALL returns it."""
        return cls(
            state=read_state(data.get(state_field(target).encode())),
            attempts=_int(data.get(attempts_field(target).encode())),
            reason=_text(data.get(reason_field(target).encode())),
            before_replay=_int(data.get(before_replay_field(target).encode())),
        )


def _number(value: object) -> float | None:
    """A JSON number, or a string holding one; None otherwise (booleans are not numbers)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _timestamp(value: object) -> float | None:
    """Unix seconds from a number or an ISO-8601 string (a time without offset is UTC)."""
    number = _number(value)
    if number is not None or not isinstance(value, str):
        return number
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()


def _outcome(value: object) -> Outcome:
    try:
        return Outcome(value) if isinstance(value, str) else Outcome.NONE
    except ValueError:
        return Outcome.NONE


@dataclass(frozen=True)
class AttemptRecord:
    """One delivery attempt as the worker records it in the attempt log.

    Stored as JSON with `duration_ms` (rounded to 0.1 ms), `error` null when there was a
    response, and `retry_in_s` (rounded to 1 ms) only when a retry was scheduled.
    """

    target: str
    attempt: int
    at: float | None  # Unix seconds when the attempt started; None when the record lacks it
    duration: float | None  # seconds
    status: int | None  # HTTP status; None when no response came
    error: str  # why no response (timeout, connection refused); "" when there was one
    outcome: Outcome
    response: str  # the first bytes of the target's answer, as text
    retry_in: float | None = None  # seconds until the retry this attempt scheduled

    def __post_init__(self) -> None:
        # Held at the precision stored, so a record reads back equal to the one written.
        if self.duration is not None:
            object.__setattr__(self, "duration", round(self.duration * 1000, 1) / 1000)
        if self.retry_in is not None:
            object.__setattr__(self, "retry_in", round(self.retry_in, 3))
        if not isinstance(self.outcome, Outcome):
            object.__setattr__(self, "outcome", _outcome(self.outcome))

    def to_dict(self) -> dict[str, Any]:
        """The stored JSON object, fields in their stored order."""
        data: dict[str, Any] = {
            "target": self.target,
            "attempt": self.attempt,
            "at": self.at,
            "duration_ms": None if self.duration is None else round(self.duration * 1000, 1),
            "status": self.status,
            "error": self.error or None,
            "outcome": str(self.outcome),
            "response": self.response,
        }
        if self.retry_in is not None:
            data["retry_in_s"] = round(self.retry_in, 3)
        return data

    def to_redis(self) -> bytes:
        """The record as the attempt log stores it."""
        return orjson.dumps(self.to_dict())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping for operators (seconds, not milliseconds)."""
        return {
            "target": self.target,
            "attempt": self.attempt,
            "at": self.at,
            "duration": self.duration,
            "status": self.status,
            "error": self.error,
            "outcome": str(self.outcome),
            "response": self.response,
        }

    @classmethod
    def from_redis(cls, raw: bytes) -> AttemptRecord:
        """Parse one stored record; what is missing or malformed reads as not known."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            return cls.unreadable(f"unreadable attempt record: {raw[:80]!r}")
        # Seconds under `duration` are read too: records written by hand or by other tools.
        duration = _number(data.get("duration"))
        if duration is None and (millis := _number(data.get("duration_ms"))) is not None:
            duration = millis / 1000
        status = data.get("status")
        return cls(
            target=str(data.get("target") or ""),
            attempt=int(_number(data.get("attempt")) or 0),
            at=_timestamp(data.get("at")),
            duration=duration,
            status=status if isinstance(status, int) and not isinstance(status, bool) else None,
            error=str(data.get("error") or ""),
            outcome=_outcome(data.get("outcome")),
            response=str(data.get("response") or ""),
            retry_in=_number(data.get("retry_in_s")),
        )

    @classmethod
    def from_json(cls, raw: bytes) -> AttemptRecord:
        """`from_redis` under the name the operator views call it by."""
        return cls.from_redis(raw)

    @classmethod
    def unreadable(cls, error: str) -> AttemptRecord:
        """The record that stands for one that cannot be read, saying why in `error`."""
        return cls("", 0, None, None, None, error, Outcome.NONE, "")
