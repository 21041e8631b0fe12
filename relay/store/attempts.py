"""The attempt log's record: one AttemptRecord per attempt.

Since 2026-12 each attempt is a field of the event hash, "a:{target}:{attempt}", whose value is
a JSON array (`to_field`: at, duration in ms, status, outcome, response, error, retry delay,
without trailing empty values), in parts of 64 bytes when longer, like a long body
(relay.store.records.split_value), so the hash stays a listpack and the event one key. Before,
the log was a list of its own (relay:att:{id}) of JSON objects (`to_redis`), oldest first: an
event stored then is read from both (`attempt_log`) until it expires.

Part of the one codec with relay.store.records, which re-exports AttemptRecord. Readers are
tolerant, since a record may have been written by hand or by another version of relay: a missing
or malformed value reads as "not known".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from relay.core.states import Outcome

__all__ = ["ATTEMPT_PREFIX", "AttemptRecord", "attempt_field", "attempt_log", "attempts_in"]

#: Prefix of the event hash's attempt fields, "a:{target}:{attempt}".
ATTEMPT_PREFIX = "a:"


def attempt_field(target: str, attempt: int) -> str:
    """The event hash's field of one attempt (target names never contain ':')."""
    return f"{ATTEMPT_PREFIX}{target}:{attempt}"


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

    def to_field(self) -> bytes:
        """The record as the event hash's field `attempt_field(target, attempt)` stores it: a
        JSON array of at, duration in ms, status, outcome, response, error and retry delay in
        seconds, without its trailing empty values (a delivery: `[at,1.2,200,"delivered"]`)."""
        row: list[Any] = [
            self.at,
            None if self.duration is None else round(self.duration * 1000, 1),
            self.status,
            str(self.outcome),
            self.response,
            self.error or None,
            None if self.retry_in is None else round(self.retry_in, 3),
        ]
        while len(row) > 4 and row[-1] in (None, ""):
            row.pop()
        return orjson.dumps(row)

    @classmethod
    def from_field(cls, target: str, attempt: int, raw: bytes) -> AttemptRecord:
        """Parse the value of the field `attempt_field(target, attempt)`."""
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError:
            row = None
        if not isinstance(row, list) or len(row) < 4:
            return cls.unreadable(f"unreadable attempt record: {raw[:80]!r}")
        at, millis, status, outcome, response, error, retry_in = [*row, "", None, None][:7]
        millis = _number(millis)
        return cls(
            target=target,
            attempt=attempt,
            at=_timestamp(at),
            duration=None if millis is None else millis / 1000,
            status=status if isinstance(status, int) and not isinstance(status, bool) else None,
            error=str(error or ""),
            outcome=_outcome(outcome),
            response=str(response or ""),
            retry_in=_number(retry_in),
        )

    @classmethod
    def unreadable(cls, error: str) -> AttemptRecord:
        """The record that stands for one that cannot be read, saying why in `error`."""
        return cls("", 0, None, None, None, error, Outcome.NONE, "")


def attempts_in(data: Mapping[bytes, bytes]) -> list[AttemptRecord]:
    """The attempt fields of an event hash as HGETALL returns it, oldest first."""
    parts: dict[tuple[str, int], dict[int, bytes]] = {}
    prefix = ATTEMPT_PREFIX.encode()
    for name, value in data.items():
        if not name.startswith(prefix):
            continue
        target, _, rest = name[len(prefix) :].decode("utf-8", "replace").rpartition(":")
        number, _, part = rest.partition(".")
        if not target or not number.isdigit() or not (part.isdigit() or part == ""):
            continue
        parts.setdefault((target, int(number)), {})[int(part or 0)] = value
    records = [
        AttemptRecord.from_field(target, number, b"".join(v for _, v in sorted(chunks.items())))
        for (target, number), chunks in parts.items()
    ]
    return sorted(records, key=lambda r: (r.at or 0.0, r.attempt, r.target))


def attempt_log(data: Mapping[bytes, bytes], listed: Iterable[bytes] = ()) -> list[AttemptRecord]:
    """An event's attempts, oldest first: those of its list (`listed`: relay:att:{id} of an event
    stored before 2026-12), then those of its hash's fields."""
    return [*(AttemptRecord.from_redis(raw) for raw in listed), *attempts_in(data)]
