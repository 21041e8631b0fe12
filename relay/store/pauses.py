"""The pause record of a target: its one codec and how it is read.

A paused target has a key `relay:paused:{target}` (relay.store.keys) holding why and since when. The
workers hold its deliveries; a 410 (worker.pause), `relay pause` and the management API write and
delete the key here, and the operator views (relay status, the status page, /metrics) read it
here, so neither the receiver side nor the admin API imports the worker.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from redis import Redis

from relay.core.times import format_age, format_time
from relay.store import keys


@dataclass(frozen=True)
class Pause:
    """Why and since when a target is paused."""

    target: str
    at: float  # Unix seconds; 0.0 when unknown (a value written by hand)
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

    @property
    def since(self) -> float | None:
        """When the target was paused (Unix seconds), None when the record does not say."""
        return self.at or None

    def to_view(self) -> dict[str, Any]:
        """The pause in operator JSON output: since when as ISO text and as Unix seconds."""
        return {
            "target": self.target,
            "reason": self.reason,
            "since": format_time(self.since) or None,
            "at": self.since,
            "event_id": self.event_id or None,
        }


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


def describe_pause(pause: Pause, now: float) -> str:
    """`since 2026-12-02T09:25:00.351Z (4m ago): why`: the same words wherever a pause shows."""
    since = pause.since
    if since is None:
        when = "since an unknown time"
    else:
        when = f"since {format_time(since)} ({format_age(now - since)} ago)"
    return f"{when}: {pause.reason or 'no reason given'}"
