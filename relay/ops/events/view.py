"""One stored event as operators inspect it (`relay events show`): its deliveries and attempts.

Reads the Redis contract of relay.store.keys through a sync client, with the store's codec, and
returns frozen values; rendering is relay.cli.events' job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import redis

from relay.store import keys
from relay.store.breakers import BreakerState, read_breakers
from relay.store.enrichment import read_record
from relay.store.records import (
    STATE_PREFIX,
    AttemptRecord,
    DeliveryRecord,
    DeliveryState,
    Event,
    attempt_log,
)

#: `show` reads at most the newest this many attempt records (a list grows with every replay).
MAX_ATTEMPT_RECORDS = 1000


#: One delivery attempt as the worker recorded it (the store's codec reads it).
Attempt = AttemptRecord


@dataclass(frozen=True)
class DeliveryView:
    """One target of an event: its state and every attempt made to it."""

    target: str
    state: DeliveryState
    attempts_made: int
    reason: str
    before_replay: int  # attempts made before the latest replay, 0 if never replayed
    attempts: tuple[Attempt, ...]
    breaker: BreakerState | None = None  # the target's circuit breaker, when it is open
    order_key: str = ""  # the digest of its FIFO key (an ordered target), else ""
    order_ahead: int | None = None  # earlier deliveries of its key still to go first (open ones)


@dataclass(frozen=True)
class EventView:
    """One stored event with its per-target deliveries."""

    event: Event
    deliveries: tuple[DeliveryView, ...]
    expires_in: int | None  # seconds until the event hash expires; None when it has no TTL
    attempts_omitted: int = 0  # older attempt records not read (over MAX_ATTEMPT_RECORDS)
    #: The API record enriched deliveries of the event carry (JSON bytes), when one is kept.
    enrichment: bytes | None = None

    @property
    def unrouted(self) -> bool:
        """Whether no route matched the event (it was kept for inspection only)."""
        return not self.event.targets


def _target_names(data: Mapping[bytes, bytes], targets: Iterable[str]) -> list[str]:
    """The event's targets in route order, then any other target the hash has a state for."""
    names = list(dict.fromkeys(targets))
    prefix = STATE_PREFIX.encode()
    for name in data:
        if name.startswith(prefix):
            target = name[len(prefix) :].decode("utf-8", "replace")
            if target not in names:
                names.append(target)
    return names


def _order_positions(
    conn: redis.Redis, event_id: str, data: Mapping[bytes, bytes], names: Iterable[str]
) -> dict[str, int]:
    """For each open ordered delivery, how many deliveries of its FIFO key are ahead of it."""
    ordered = []
    for target in names:
        stored = DeliveryRecord.from_redis(target, data)
        if stored.order_key and not stored.done:
            ordered.append((target, keys.order_queue_key(target, stored.order_key)))
    if not ordered:
        return {}
    with conn.pipeline(transaction=False) as pipe:
        for _, queue in ordered:
            pipe.lpos(queue, event_id)
        found = pipe.execute()
    return {t: int(at) for (t, _), at in zip(ordered, found, strict=True) if at is not None}


def get_event(conn: redis.Redis, event_id: str) -> EventView | None:
    """The event with its deliveries and attempts, or None when unknown or expired."""
    key, log_key = keys.event_key(event_id), keys.attempts_key(event_id)
    pipe = conn.pipeline(transaction=False)
    pipe.hgetall(key)
    pipe.ttl(key)
    pipe.llen(log_key)
    pipe.lrange(log_key, -MAX_ATTEMPT_RECORDS, -1)
    pipe.get(keys.enrichment_key(event_id))  # GET, not GETEX: looking renews nothing
    data, ttl, total, records, enrichment = pipe.execute()
    if not data:
        return None
    event = Event.from_redis(event_id, data)
    # The attempt fields of the hash, after the list of an event stored before 2026-12.
    attempts = attempt_log(data, records)
    omitted = int(total) - len(records) + max(0, len(attempts) - MAX_ATTEMPT_RECORDS)
    attempts = attempts[-MAX_ATTEMPT_RECORDS:]
    names = _target_names(data, event.targets)
    breakers = {n: b for n, b in read_breakers(conn, names).items() if b.is_open}
    ahead = _order_positions(conn, event_id, data, names)
    deliveries = []
    for target in names:
        stored = DeliveryRecord.from_redis(target, data)
        deliveries.append(
            DeliveryView(
                target=target,
                state=stored.state,
                attempts_made=stored.attempts,
                reason=stored.reason,
                before_replay=stored.before_replay,
                attempts=tuple(a for a in attempts if a.target == target),
                breaker=breakers.get(target),
                order_key=stored.order_key,
                order_ahead=ahead.get(target),
            )
        )
    # Records for a target the hash does not name (should not happen) are still shown.
    named = {d.target for d in deliveries}
    for target in dict.fromkeys(a.target for a in attempts if a.target not in named):
        mine = tuple(a for a in attempts if a.target == target)
        deliveries.append(DeliveryView(target, DeliveryState.UNKNOWN, len(mine), "", 0, mine))
    return EventView(
        event=event,
        deliveries=tuple(deliveries),
        expires_in=int(ttl) if ttl is not None and ttl >= 0 else None,
        attempts_omitted=max(0, omitted),
        enrichment=read_record(enrichment),
    )
