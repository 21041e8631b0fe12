"""`relay events list` and `relay events show ID`: what came in, and what became of each delivery.

Reading only: the data comes from `relay.ops.events`; this module parses flags and renders text or
JSON. Everything a provider controls (type, headers, body, target answers) is escaped before it
reaches the terminal, so a hostile body cannot move the cursor or change the colours.
"""

from __future__ import annotations

import argparse
import base64
import codecs
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis

from relay.cli.options import add_connection_options, add_list_options, limit_of
from relay.cli.tables import render_fields, render_table
from relay.config.settings import Settings
from relay.core.errors import ConfigError
from relay.core.ids import is_event_id
from relay.core.times import format_time, parse_since
from relay.core.units import parse_size
from relay.ops.events import (
    MAX_SCAN,
    STATES,
    Attempt,
    DeliveryView,
    EventQuery,
    EventSummary,
    EventView,
    get_event,
    list_events,
)
from relay.store import keys

#: Default size of the body preview of `show` (bytes).
PREVIEW_BYTES = 1024

#: A response snippet in the text view is cut to one line of this many characters.
SNIPPET_CHARS = 60

#: Index entries one listing reads at most (a module global so tests can make it small).
SCAN_LIMIT = MAX_SCAN

#: An operator command should fail fast on an unreachable Redis, not hang.
REDIS_TIMEOUT = 5.0


# -- arguments -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Subcommands `list` and `show` of `relay events`."""
    sub = parser.add_subparsers(dest="events_command", metavar="SUBCOMMAND", required=True)
    lister = sub.add_parser("list", help="list events, newest first", description=_LIST_HELP)
    # The same filters, limit and connection options as `relay dead list` (relay.cli.options).
    add_list_options(lister, since="received")
    lister.add_argument(
        "--state",
        choices=STATES,
        help="only events with a delivery in this state (on --target when given), or unrouted",
    )
    shower = sub.add_parser("show", help="one event with every delivery attempt")
    shower.add_argument("event_id", metavar="ID", help="event id (evt_...)")
    add_connection_options(shower)
    shower.add_argument(
        "--body", action="store_true", help="write the exact body bytes to stdout (nothing else)"
    )
    shower.add_argument(
        "--max-body",
        type=_size,
        default=PREVIEW_BYTES,
        metavar="N",
        help=f"bytes of body preview (default {PREVIEW_BYTES}; '4KiB' works)",
    )


_LIST_HELP = (
    "List events newest first. Per target the state is shown as target:state(N), N being the "
    "attempts made (left out for a first-attempt delivery and before any attempt)."
)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
        shown = t.attempts_made > 1 or (t.attempts_made == 1 and t.state != keys.DELIVERED)
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


def safe_url(url: str) -> str:
    """A Redis URL with its password replaced, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


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
        "duration_ms": _millis(attempt.duration),
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
        "expires_in": view.expires_in,
        "attempts_omitted": view.attempts_omitted,
        "deliveries": [delivery_json(d) for d in view.deliveries],
    }


def _millis(duration: float | None) -> int | None:
    return round(duration * 1000) if duration is not None else None


def _dump(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


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
        _millis(attempt.duration),
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
    if delivery.attempts:
        table = render_table(
            ("ATTEMPT", "AT", "RESULT", "MS", "OUTCOME", "RESPONSE"),
            [_attempt_row(a) for a in delivery.attempts],
        )
        lines.extend("  " + line for line in table.splitlines())
    return "\n".join(lines)


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
    out.append("")
    if view.unrouted:
        out.append("deliveries: none (unrouted: no route matched this source and type)")
    if view.attempts_omitted:
        out.append(f"({view.attempts_omitted} older attempt records not shown)")
    out.extend(render_delivery(d) for d in view.deliveries)
    return "\n".join(out)


# -- commands --------------------------------------------------------------------------------


def _connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
    )


def run(args: argparse.Namespace) -> int:
    """Run `relay events list|show`; 1 for an unknown event or Redis trouble, 2 for bad input."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"relay events: {problem}", file=sys.stderr)
        return 2
    url = args.url or settings.redis_url
    conn = _connect(url)
    try:
        if args.events_command == "list":
            return _run_list(conn, args)
        return _run_show(conn, args)
    except redis.RedisError as exc:
        print(f"relay events: Redis at {safe_url(url)}: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()


def _run_list(conn: redis.Redis, args: argparse.Namespace) -> int:
    since = None
    if args.since:
        try:
            since = parse_since(args.since, time.time())
        except ValueError as exc:
            print(f"relay events list: --since: {exc}", file=sys.stderr)
            return 2
    query = EventQuery(args.source, args.event_type, args.target, args.state, since)
    # --limit 0 is "all", which the scan bound still caps (MAX_SCAN index entries).
    limit = limit_of(args) or SCAN_LIMIT
    listing = list_events(conn, query, limit=limit, max_scan=SCAN_LIMIT)
    if args.json:
        _dump(
            {
                "events": [summary_json(s) for s in listing.events],
                "partial": listing.partial,
                "scanned": listing.scanned,
            }
        )
    elif listing.events:
        print(render_listing(listing.events))
    else:
        print("no events match", file=sys.stderr)
    if listing.partial and not args.json:
        print(
            f"relay events list: partial listing: stopped after reading {listing.scanned} "
            "events; narrow it with --since",
            file=sys.stderr,
        )
    return 0


def _run_show(conn: redis.Redis, args: argparse.Namespace) -> int:
    view = get_event(conn, args.event_id)
    if view is None:
        hint = "" if is_event_id(args.event_id) else " (event ids look like evt_ and 26 characters)"
        print(
            f"relay events show: no event {printable(args.event_id)}: unknown, or expired after "
            f"the retention period{hint}",
            file=sys.stderr,
        )
        return 1
    if args.json:
        _dump(event_json(view, args.max_body, full_body=args.body))
    elif args.body:
        sys.stdout.flush()
        sys.stdout.buffer.write(view.event.body)
        sys.stdout.buffer.flush()
    else:
        print(render_event(view, args.max_body))
    return 0
