"""Write events into Redis the way the receiver does (relay.receiver.batch.write_batch), for job
tests."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import redis

from relay.core.ids import new_event_id
from relay.core.states import DeliveryState
from relay.store import keys
from relay.store.queue import kick, make_queue
from relay.store.records import Event, attempts_field, state_field


def make_event(
    targets: Sequence[str],
    *,
    body: bytes = b'{"event": "thing.happened", "n": 1}',
    content_type: str = "application/json",
    source: str = "shop",
    event_type: str = "thing.happened",
    headers: tuple[tuple[str, str], ...] = (("x-event-type", "thing.happened"),),
    dedupe_key: str = "",
) -> Event:
    """An event as the receiver builds it."""
    return Event(
        id=new_event_id(),
        source=source,
        type=event_type,
        received_at=time.time(),
        content_type=content_type,
        method="POST",
        headers=headers,
        body=body,
        targets=tuple(targets),
        dedupe_key=dedupe_key,
    )


def store_events(
    conn: redis.Redis, events: Sequence[Event], *, enqueue: bool = True, retention: int = 3600
) -> None:
    """Store events with their pending deliveries due now; with `enqueue`, kick the workers."""
    queue = make_queue(conn)
    with conn.pipeline(transaction=True) as pipe:
        for event in events:
            fields: dict[str, object] = dict(event.to_redis())
            for target in event.targets:
                fields[state_field(target)] = DeliveryState.PENDING
                fields[attempts_field(target)] = 0
            pipe.hset(keys.event_key(event.id), mapping=fields)  # type: ignore[arg-type]
            pipe.expire(keys.event_key(event.id), retention)
            if event.dedupe_key:
                pipe.set(event.dedupe_key, event.id, nx=True, ex=retention)
            for target in event.targets:
                pipe.zadd(keys.due_key(target), {event.id: event.received_at})
                pipe.sadd(keys.DUE_TARGETS, target)
        if enqueue:
            kick(queue, pipeline=pipe)
        pipe.execute()


def toml_value(value: Any) -> str:
    """A TOML value: inline tables for dicts, JSON syntax (valid TOML) for the rest."""
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return orjson.dumps(value).decode()


def routes_toml(targets: Mapping[str, Mapping[str, Any]], source: str = "shop") -> str:
    """A routes.toml with one JSON source (typed by header) routing every event to `targets`."""
    lines = [f'[sources.{source}]\nkind = "header"\n']
    for name, spec in targets.items():
        lines.append(f"[targets.{name}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in spec.items())
        lines.append("")
    names = orjson.dumps(list(targets)).decode()
    lines.append(f'[[routes]]\nsource = "{source}"\nevents = ["*"]\ntargets = {names}\n')
    return "\n".join(lines)
