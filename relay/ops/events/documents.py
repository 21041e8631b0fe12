"""Stored events as JSON documents: what `relay events --json` prints and the API answers.

One shape under both, so that a script written against either reads the other. Times come as ISO
text and as Unix seconds; a body as UTF-8 text when it is, else base64.
"""

from __future__ import annotations

import base64
import codecs
from typing import Any

import orjson

from relay.core.times import format_time
from relay.ops.events.listing import EventSummary
from relay.ops.events.view import Attempt, DeliveryView, EventView


def summary_json(summary: EventSummary) -> dict[str, Any]:
    """One listed event as JSON."""
    return {
        "id": summary.id,
        "received": format_time(summary.received_at),
        "received_at": summary.received_at,
        "source": summary.source,
        "type": summary.type,
        "unrouted": summary.unrouted,
        "targets": [
            {"target": t.target, "state": t.state, "attempts": t.attempts_made}
            for t in summary.targets
        ],
    }


def attempt_json(attempt: Attempt) -> dict[str, Any]:
    """One attempt record as JSON (times in ISO and Unix seconds, duration in milliseconds)."""
    return {
        "attempt": attempt.attempt,
        "at": format_time(attempt.at),
        "at_unix": attempt.at,
        "status": attempt.status,
        "error": attempt.error or None,
        "duration_ms": millis(attempt.duration),
        "outcome": attempt.outcome,
        "response": attempt.response,
        "retry_in_s": attempt.retry_in,
    }


def delivery_json(delivery: DeliveryView) -> dict[str, Any]:
    """One target of an event as JSON."""
    return {
        "target": delivery.target,
        "state": delivery.state,
        "attempts_made": delivery.attempts_made,
        "attempts_before_replay": delivery.before_replay,
        "reason": delivery.reason,
        "attempts": [attempt_json(a) for a in delivery.attempts],
        # The target's circuit breaker when it is open (BreakerState.to_view), else null.
        "breaker": None if delivery.breaker is None else delivery.breaker.to_view(),
        # FIFO per key: the key's digest and the earlier deliveries of it still to go first.
        "order": (
            {"key": delivery.order_key, "ahead": delivery.order_ahead}
            if delivery.order_key
            else None
        ),
    }


def event_json(view: EventView, max_body: int, *, full_body: bool) -> dict[str, Any]:
    """One event as JSON; the body as UTF-8 text when it is, else base64."""
    event = view.event
    shown = event.body if full_body else event.body[:max_body]
    truncated = len(shown) < len(event.body)
    try:
        # final=False: a character cut by the preview limit is left out, not an error.
        data = codecs.getincrementaldecoder("utf-8")().decode(shown, final=not truncated)
        encoding = "utf-8"
    except UnicodeDecodeError:
        data, encoding = base64.b64encode(shown).decode(), "base64"
    return {
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "received": format_time(event.received_at),
        "received_at": event.received_at,
        "method": event.method,
        "content_type": event.content_type,
        "headers": [list(pair) for pair in event.headers],
        "body": {
            "size": len(event.body),
            "encoding": encoding,
            "data": data,
            "truncated": truncated,
        },
        "unrouted": view.unrouted,
        # The kept API record (a JSON object) enriched deliveries carry; null when none is kept.
        "enrichment": orjson.loads(view.enrichment) if view.enrichment is not None else None,
        "expires_in": view.expires_in,
        "attempts_omitted": view.attempts_omitted,
        "deliveries": [delivery_json(d) for d in view.deliveries],
    }


def millis(duration: float | None) -> int | None:
    """A duration in whole milliseconds, None kept."""
    return round(duration * 1000) if duration is not None else None
