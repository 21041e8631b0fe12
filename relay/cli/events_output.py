"""How `relay events` shows events: terminal-safe text and JSON.

Everything a provider controls (type, headers, body, target answers) is escaped before it
reaches the terminal, so a hostile body cannot move the cursor or change the colours.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Sequence

import orjson

from relay.cli.tables import render_fields, render_table
from relay.core.states import DeliveryState
from relay.core.times import format_time
from relay.ops.events import Attempt, DeliveryView, EventSummary, EventView
from relay.ops.events.documents import (
    attempt_json,
    delivery_json,
    event_json,
    millis,
    summary_json,
)

# The JSON documents are relay.ops.events.documents', shared with the management API; they are
# imported here for `relay events --json` and kept importable under their old names.
__all__ = [
    "attempt_json",
    "body_text",
    "compact_states",
    "delivery_json",
    "event_json",
    "human_duration",
    "millis",
    "printable",
    "render_delivery",
    "render_event",
    "render_listing",
    "summary_json",
]
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
