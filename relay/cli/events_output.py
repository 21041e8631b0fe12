"""How `relay events` shows events: terminal-safe text and JSON.

Everything a provider controls (type, headers, body, target answers) is escaped before it
reaches the terminal, so a hostile body cannot move the cursor or change the colours.
"""

from __future__ import annotations

import base64
import codecs
import time
from collections.abc import Sequence
from typing import Any

import orjson

from relay.cli.tables import render_fields, render_table
from relay.core.states import DeliveryState
from relay.core.times import format_time
from relay.ops.events import Attempt, DeliveryView, EventSummary, EventView
from relay.store.breakers import describe_breaker

#: A response snippet in the text view is cut to one line of this many characters.
SNIPPET_CHARS = 60


# -- pure helpers ----------------------------------------------------------------------------


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """Text safe for a terminal: control and other non-printable characters backslash-escaped."""
    out: list[str] = []
    for ch in text:
        if ch.isprintable() or (keep_newlines and ch in "\n\t"):
            out.append(ch)
        elif ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)


_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def body_text(body: bytes, limit: int) -> str:
    """The first `limit` bytes as text: invalid UTF-8 as \\xNN, a cut character left out."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")
    # final=False holds back a multi-byte character split by the limit instead of mangling it.
    return decoder.decode(body[:limit], final=len(body) <= limit)


def compact_states(summary: EventSummary) -> str:
    """`crm:delivered analytics:retrying(3)`, or `unrouted`."""
    if summary.unrouted:
        return "unrouted"
    parts = []
    for t in summary.targets:
        shown = t.attempts_made > 1 or (t.attempts_made == 1 and t.state != DeliveryState.DELIVERED)
        parts.append(f"{t.target}:{t.state}" + (f"({t.attempts_made})" if shown else ""))
    return " ".join(parts)


def human_duration(seconds: float) -> str:
    """`6d 23h`, `4h 10m`, `12m 5s`, `9s`: the two largest units."""
    remaining = int(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if remaining >= size or (unit == "s" and not parts):
            parts.append(f"{remaining // size}{unit}")
            remaining %= size
    return " ".join(parts[:2])


# -- JSON ------------------------------------------------------------------------------------


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


# -- text ------------------------------------------------------------------------------------


def render_listing(summaries: Sequence[EventSummary]) -> str:
    """The table of `relay events list`."""
    rows = [
        (
            s.id,
            format_time(s.received_at),
            printable(s.source),
            printable(s.type or ""),
            printable(compact_states(s)),
        )
        for s in summaries
    ]
    return render_table(("ID", "RECEIVED", "SOURCE", "TYPE", "DELIVERIES"), rows)


def _attempt_row(attempt: Attempt) -> tuple[object, ...]:
    result = str(attempt.status) if attempt.status is not None else attempt.error
    lines = attempt.response.strip().splitlines()
    snippet = printable(lines[0]) if lines else ""
    if len(snippet) > SNIPPET_CHARS:
        snippet = snippet[: SNIPPET_CHARS - 3] + "..."
    return (
        attempt.attempt,
        format_time(attempt.at),
        printable(result or ""),
        millis(attempt.duration),
        printable(attempt.outcome)
        + (f" in {human_duration(attempt.retry_in)}" if attempt.retry_in is not None else ""),
        snippet,
    )


def render_delivery(delivery: DeliveryView) -> str:
    """One target's block: its state line, its reason, then its attempts as a table."""
    made = delivery.attempts_made
    head = f"target {printable(delivery.target)}: {printable(delivery.state)}, "
    head += f"{made} attempt" + ("" if made == 1 else "s")
    if delivery.before_replay:
        head += f" ({delivery.before_replay} before the latest replay)"
    lines = [head]
    if delivery.reason:
        lines.append(f"  reason: {printable(delivery.reason)}")
    if delivery.breaker is not None and not delivery.state.done:
        held = describe_breaker(delivery.breaker, time.time())
        lines.append(f"  held: the target's circuit breaker is {printable(held)}")
    if delivery.order_ahead:
        lines.append(
            f"  held: {delivery.order_ahead} earlier deliveries of its FIFO key "
            f"({delivery.order_key}) go first"
        )
    if delivery.attempts:
        table = render_table(
            ("ATTEMPT", "AT", "RESULT", "MS", "OUTCOME", "RESPONSE"),
            [_attempt_row(a) for a in delivery.attempts],
        )
        lines.extend("  " + line for line in table.splitlines())
    return "\n".join(lines)


def render_enrichment(record: bytes, max_body: int) -> list[str]:
    """The kept enrichment record's lines: its size, then its JSON indented (cut like the body)."""
    pretty = orjson.dumps(orjson.loads(record), option=orjson.OPT_INDENT_2)
    note = "sent to enriching targets with the body"
    if len(pretty) > max_body:
        note += f"; first {max_body} bytes shown (--json: all)"
    lines = [f"enrichment record: {len(record)} bytes ({note})"]
    shown = printable(body_text(pretty, max_body), keep_newlines=True)
    lines.extend("  " + line for line in shown.splitlines())
    return lines


def render_event(view: EventView, max_body: int) -> str:
    """The text of `relay events show`."""
    event = view.event
    expires = "never (no TTL)" if view.expires_in is None else human_duration(view.expires_in)
    fields = render_fields(
        [
            ("id", event.id),
            ("source", printable(event.source)),
            ("type", printable(event.type or "")),
            ("received", format_time(event.received_at)),
            ("method", printable(event.method)),
            ("content-type", printable(event.content_type)),
            ("expires in", expires),
        ]
    )
    out = [fields, "headers:"]
    out.extend(f"  {printable(name)}: {printable(value)}" for name, value in event.headers)
    size = len(event.body)
    shown = min(size, max_body)
    note = f"{size} bytes" if shown == size else f"{size} bytes, first {shown} shown (--body: all)"
    out.append(f"body: {note}")
    preview = printable(body_text(event.body, max_body), keep_newlines=True)
    out.extend("  " + line for line in preview.splitlines())
    if view.enrichment is not None:
        out.extend(render_enrichment(view.enrichment, max_body))
    out.append("")
    if view.unrouted:
        out.append("deliveries: none (unrouted: no route matched this source and type)")
    if view.attempts_omitted:
        out.append(f"({view.attempts_omitted} older attempt records not shown)")
    out.extend(render_delivery(d) for d in view.deliveries)
    return "\n".join(out)
