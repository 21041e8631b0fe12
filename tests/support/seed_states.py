"""Events seeded in any state, as receiver and worker leave them: per-target delivery states,
dead letters, attempt logs and due sets (relay.store.keys), for the operator views' tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import redis

from relay.core.ids import new_event_id
from relay.core.states import DeliveryState
from relay.store import keys
from relay.store.records import (
    Event,
    attempts_field,
    before_replay_field,
    reason_field,
    state_field,
)

NOW = 1_790_000_000.0  # a fixed "now" (2026-09-21) so times in assertions are exact


def seed_event(
    conn: redis.Redis,
    *,
    source: str = "fellow",
    event_type: str | None = "COURSEMEMBER_ADDED",
    received: float = NOW - 3600,
    body: bytes = b'{"event": "COURSEMEMBER_ADDED", "id": 7}',
    headers: Sequence[tuple[str, str]] = (("content-type", "application/json"),),
    content_type: str = "application/json",
    deliveries: Mapping[str, tuple[str, int, str]] | None = None,
    dead_at: Mapping[str, float] | None = None,
    attempts: Sequence[Mapping[str, Any]] = (),
    replay_base: Mapping[str, int] | None = None,
    ttl: int = 7 * 24 * 3600,
    event_id: str | None = None,
    due: Mapping[str, float] | None = None,
) -> str:
    """Store one event with per-target (state, attempts, reason), dead letters and attempts;
    with no deliveries, it is in the unrouted index, as the receiver writes it.

    `due` maps a target to the score of the event in that target's due set (relay.store.keys): when
    it is due, or when the lease of an attempt in flight ends.
    """
    deliveries = deliveries if deliveries is not None else {"crm": (DeliveryState.PENDING, 0, "")}
    event_id = event_id or new_event_id(received)
    event = Event(
        id=event_id,
        source=source,
        type=event_type,
        received_at=received,
        content_type=content_type,
        method="POST",
        headers=tuple(headers),
        body=body,
        targets=tuple(deliveries),
    )
    fields: dict[str, Any] = dict(event.to_redis())
    for target, (state, made, reason) in deliveries.items():
        fields[state_field(target)] = state
        fields[attempts_field(target)] = made
        fields[reason_field(target)] = reason
    for target, base in (replay_base or {}).items():
        fields[before_replay_field(target)] = base
    conn.hset(keys.event_key(event_id), mapping=fields)
    conn.expire(keys.event_key(event_id), ttl)
    conn.zadd(keys.EVENTS_INDEX, {event_id: received})
    if not deliveries:
        conn.zadd(keys.UNROUTED, {event_id: received})
    for target, at in (dead_at or {}).items():
        conn.zadd(keys.DEAD, {keys.dead_member(event_id, target): at})
    if attempts:
        conn.rpush(keys.attempts_key(event_id), *(orjson.dumps(a) for a in attempts))
        conn.expire(keys.attempts_key(event_id), ttl)
    for target, score in (due or {}).items():
        conn.zadd(keys.due_key(target), {event_id: score})
        conn.sadd(keys.DUE_TARGETS, target)
    return event_id


def seed_dead(
    conn: redis.Redis,
    target: str = "crm",
    *,
    at: float = NOW - 600,
    made: int = 10,
    reason: str = "HTTP 500 after 10 attempts",
    state: str = DeliveryState.DEAD,
    **kwargs: Any,
) -> str:
    """An event whose only delivery (to `target`) is in the dead-letter store."""
    return seed_event(
        conn, deliveries={target: (state, made, reason)}, dead_at={target: at}, **kwargs
    )


def attempt_record(target: str, n: int, status: int | None = 500, **extra: Any) -> dict[str, Any]:
    """An attempt record the way worker.jobs writes it."""
    record = {
        "target": target,
        "attempt": n,
        "at": NOW - 1000 + n,
        "duration_ms": 12.5,
        "status": status,
        "error": "" if status else "connection refused",
        "outcome": "retry",
        "response": "oops" if status else "",
    }
    record.update(extra)
    return record


#: The fixed "now" of the event listing's tests (2026-11-05T10:00:00Z) and their retention.
LISTING_NOW = 1_793_872_800.0
LISTING_RETENTION = 7 * 86400


def seed_received_event(
    conn: redis.Redis,
    *,
    received: float = LISTING_NOW,
    source: str = "fellow",
    type_: str | None = "COURSEMEMBER_ADDED",
    targets: Sequence[str] = ("crm",),
    body: bytes = b"event=COURSEMEMBER_ADDED&id=42",
    headers: Sequence[tuple[str, str]] = (("x-fellow-event", "COURSEMEMBER_ADDED"),),
    content_type: str = "application/x-www-form-urlencoded",
    states: Mapping[str, tuple[str, int]] | None = None,
    reasons: Mapping[str, str] | None = None,
    replayed: Mapping[str, int] | None = None,
    attempts: Sequence[Mapping[str, Any]] = (),
    dead_at: Mapping[str, float] | None = None,
    retention: float = LISTING_RETENTION,
    event_id: str | None = None,
) -> str:
    """`seed_event` by target list, a form body by default: each delivery pending unless
    `states` says otherwise, and each one still open due since the event was received."""
    deliveries = {
        target: (
            *(states or {}).get(target, (DeliveryState.PENDING, 0)),
            (reasons or {}).get(target, ""),
        )
        for target in targets
    }
    return seed_event(
        conn,
        source=source,
        event_type=type_,
        received=received,
        body=body,
        headers=headers,
        content_type=content_type,
        deliveries=deliveries,
        dead_at=dead_at,
        attempts=attempts,
        replay_base=replayed,
        ttl=max(1, int(retention)),
        event_id=event_id,
        due={
            target: received
            for target, (state, _, _) in deliveries.items()
            if state in (DeliveryState.PENDING, DeliveryState.RETRYING)
        },
    )


def logged_attempt(
    target: str,
    attempt: int,
    at: float,
    *,
    status: int | None = 200,
    error: str | None = None,
    outcome: str = "delivered",
    duration: float = 0.012,
    response: str = '{"ok":true}',
    retry_in: float | None = None,
) -> dict[str, Any]:
    """An attempt record as worker.recording.finalize appends it to relay:att:{id}."""
    entry: dict[str, Any] = {
        "target": target,
        "attempt": attempt,
        "at": at,
        "duration_ms": round(duration * 1000, 1),
        "status": status,
        "error": error,
        "outcome": outcome,
        "response": response,
    }
    if retry_in is not None:
        entry["retry_in_s"] = retry_in
    return entry
