"""Synthesized events: what Fellow would have sent, committed like the receiver commits.

Each event has Fellow's exact form body, its content type, the route table's targets and the
source's dedupe key, and goes through the store's one commit script (relay.store.commit): the
same record, the same due sets, and the same atomic dedupe claim, so a real webhook arriving
after it is an inbound duplicate, and a synthesized event racing a real one loses cleanly.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import redis

from relay.config.control import order_keys
from relay.config.filters import EventFields
from relay.config.model import RouteTable, Source
from relay.core.headers import RECONCILED_HEADER
from relay.core.ids import new_event_id
from relay.store import keys
from relay.store.commit import commit_arguments
from relay.store.enrichment import queue_record
from relay.store.queue import kick, make_queue
from relay.store.records import Event
from worker.fellow.plan import Change, form_body

__all__ = ["FORM", "commit_events", "dedupe_key_of", "synthesize"]

FORM = "application/x-www-form-urlencoded"
#: The headers of a synthesized event: no provider's, only relay's mark.
_HEADERS = ((RECONCILED_HEADER, "1"),)


def _form_fields(body: bytes) -> dict[str, str]:
    """A form body's fields as the receiver parses them (a repeated field keeps its first)."""
    return {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}


def _dedupe_value(source: Source, body: bytes) -> str | None:
    """The receiver's dedupe value of a form body (relay.receiver.extract.dedupe_value, whose
    form rules this follows; tests hold the two equal)."""
    if source.dedupe is None:
        return None
    fields = _form_fields(body)
    parts = []
    for key in source.dedupe.key:
        scope, _, name = key.partition(":")
        if scope != "body":
            return None  # a synthesized event has no provider headers
        if "|" in name:
            value = next((f"{n}={fields[n]}" for n in name.split("|") if fields.get(n)), None)
        else:
            value = fields.get(name) or None
        if value is None:
            return None
        parts.append(value)
    return "\x1f".join(parts)


def dedupe_key_of(source: Source, change: Change) -> str:
    """The Redis dedupe key the webhook of `change` claims ("" when the source has none)."""
    value = _dedupe_value(source, form_body(change))
    return keys.dedupe_key(source.name, value) if value is not None else ""


def synthesize(table: RouteTable, source: Source, change: Change, now: float) -> Event:
    """The event Fellow would have sent for `change`, routed by `table` (route filters read
    its form fields, and its headers: relay's mark only)."""
    body = form_body(change)
    fields = EventFields(_form_fields(body), True, dict(_HEADERS))
    targets = table.match(source.name, change.event, fields)
    return Event(
        id=new_event_id(now),
        source=source.name,
        type=change.event,
        received_at=now,
        content_type=FORM,
        method="POST",
        headers=_HEADERS,
        body=body,
        targets=targets,
        dedupe_key=dedupe_key_of(source, change),
        order=order_keys(table.targets, targets, fields),  # FIFO per key, as the receiver's
    )


@dataclass(frozen=True)
class _Batch:
    events: Sequence[Event]
    dedupe_window: int


def commit_events(
    conn: redis.Redis,
    source: Source,
    events: Sequence[Event],
    retention: float,
    records: Mapping[str, bytes] | None = None,
) -> list[str | None]:
    """Commit the events (one script call) with the enrichment `records` read for them (by
    event id), and kick the workers; per event, the id of the event it repeats (None: new)."""
    if not events:
        return []
    window = int(source.dedupe.window) if source.dedupe else 0
    queue = make_queue(conn)
    call = commit_arguments([_Batch(events, window)], retention, time.time(), queue.key)
    pipe: Any = conn.pipeline(transaction=True)  # redis-py leaves execute_command untyped
    # In the same transaction, before the events: no worker can see an event without its record.
    for event_id, record in (records or {}).items():
        queue_record(pipe, event_id, record, retention)
    pipe.execute_command(*call.command())  # the same EVAL the receiver sends
    *_, reply = pipe.execute()
    repeats: list[str | None] = [None] * len(events)
    for (_, index), first in zip(call.dedupe, list(reply)[1:], strict=True):
        text = first.decode() if isinstance(first, bytes) else str(first)
        if text and text != events[index].id:
            repeats[index] = text
    if call.routed:
        kick(queue)
    return repeats
