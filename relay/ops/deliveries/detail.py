"""One event as operators see it with `relay dead show`: its deliveries, attempts and states.

Unlike relay.ops.events' view, an event whose hash has expired is still shown while the
dead-letter store or the attempt log names it, so an operator can see why a replay would fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from redis import Redis

from relay.ops.deliveries.dead_letters import dead_of_event
from relay.store import keys
from relay.store.records import (
    AttemptRecord,
    DeliveryRecord,
    Event,
    attempt_log,
    read_state,
    state_field,
    targets_of,
)

#: One delivery attempt as the worker recorded it (the store's codec reads it).
Attempt = AttemptRecord


@dataclass(frozen=True)
class Delivery:
    """Where one event stands with one target."""

    target: str
    state: str  # a DeliveryState, "" once the event has expired
    attempts: int
    reason: str
    before_replay: int  # attempts made before the latest replay (0: never replayed)
    dead_at: float | None  # when it entered the dead-letter store, if it is there

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (`before_replay` keeps its output name, `replayed_after`)."""
        data = asdict(self)
        data["replayed_after"] = data.pop("before_replay")
        return data


@dataclass(frozen=True)
class EventDetail:
    """An event with its deliveries and attempts; `event` is None once it has expired."""

    event_id: str
    event: Event | None
    deliveries: tuple[Delivery, ...]
    attempts: tuple[Attempt, ...]


def _delivery(target: str, data: Mapping[bytes, bytes], dead_at: float | None) -> Delivery:
    """One target's delivery from the event hash ({} once the event has expired)."""
    stored = DeliveryRecord.from_redis(target, data)
    return Delivery(
        target=target,
        state=str(stored.state) if data else "",
        attempts=stored.attempts,
        reason=stored.reason,
        before_replay=stored.before_replay,
        dead_at=dead_at,
    )


def show_event(conn: Redis, event_id: str, target: str | None = None) -> EventDetail | None:
    """An event with its deliveries and attempts (of one target if given); None if unknown."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.event_key(event_id))
        pipe.lrange(keys.attempts_key(event_id), 0, -1)
        data, raw_attempts = pipe.execute()
    dead_at = dead_of_event(conn, event_id)
    if not data and not dead_at and not raw_attempts:
        return None
    event = Event.from_redis(event_id, data) if data else None
    names = list(event.targets) if event else []
    names += [t for t in sorted(dead_at) if t not in names]
    if target is not None:
        names = [t for t in names if t == target]
    deliveries = tuple(_delivery(name, data, dead_at.get(name)) for name in names)
    attempts = tuple(
        a for a in attempt_log(data, raw_attempts) if target is None or a.target == target
    )
    return EventDetail(event_id=event_id, event=event, deliveries=deliveries, attempts=attempts)


def delivery_states(conn: Redis, event_id: str) -> dict[str, str]:
    """Each target of an event with its delivery state, in route order; {} when unknown."""
    data: Mapping[bytes, bytes] = conn.hgetall(keys.event_key(event_id))  # type: ignore[assignment]
    return {
        t: str(read_state(data.get(state_field(t).encode())))
        for t in targets_of(data.get(b"targets"))
    }
