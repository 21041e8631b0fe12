"""Paused targets: a 410 from a `pause_on_gone` target, or an operator, stops its deliveries.

A paused target has a key `relay:paused:{target}` (relay.keys) holding why and since when. Its
deliveries are held, not attempted: kicks do not claim from its due set, so they keep their due
times and their attempt budget, and the state stays pending or retrying. Resuming deletes the
key; the workers' pollers then find the held deliveries due and kick within a poll interval.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from redis import Redis

from relay import keys


@dataclass(frozen=True)
class Pause:
    """Why and since when a target is paused."""

    target: str
    at: float  # Unix seconds
    reason: str
    event_id: str = ""  # the event whose delivery answered 410, when a 410 paused it

    def to_json(self) -> bytes:
        """The value stored under relay:paused:{target}."""
        return orjson.dumps({"at": self.at, "reason": self.reason, "event_id": self.event_id})

    @classmethod
    def from_json(cls, target: str, raw: bytes | str) -> Pause:
        """Parse a stored value; tolerant of a value written by hand (`SET relay:paused:x 1`)."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            return cls(target=target, at=0.0, reason=text)
        at = data.get("at")
        return cls(
            target=target,
            at=float(at) if isinstance(at, int | float) else 0.0,
            reason=str(data.get("reason") or ""),
            event_id=str(data.get("event_id") or ""),
        )


def pause_target(
    conn: Redis, target: str, reason: str, event_id: str = "", now: float | None = None
) -> bool:
    """Pause a target; False when it was already paused (the first reason is kept)."""
    pause = Pause(target, time.time() if now is None else now, reason, event_id)
    return bool(conn.set(keys.paused_key(target), pause.to_json(), nx=True))


def resume_target(conn: Redis, target: str) -> bool:
    """Resume a target; False when it was not paused."""
    return bool(conn.delete(keys.paused_key(target)))


def paused(conn: Redis, targets: Iterable[str]) -> dict[str, Pause]:
    """The pauses of those targets that are paused, in one round trip."""
    names = list(dict.fromkeys(targets))
    if not names:
        return {}
    values = conn.mget([keys.paused_key(t) for t in names])
    return {
        name: Pause.from_json(name, raw)
        for name, raw in zip(names, values, strict=True)
        if raw is not None
    }
