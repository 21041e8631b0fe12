"""`relay dead list` and `relay dead show EVENT_ID`: the dead letters, and one event in full.

Tables are for people (long cells cut; `show` prints a reason whole); `--json` prints one
document for scripts. Header values that may carry a provider's credentials are never printed.
Data access lives in `relay.ops.deliveries`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import redis

from relay.cli.common import EXIT_FAILED, print_json, since_option, with_redis
from relay.cli.options import add_connection_options, add_list_options, limit_of
from relay.cli.tables import render_fields, render_table
from relay.config.settings import Settings
from relay.core.times import format_age, format_time
from relay.ops import deliveries as ops
from relay.store.records import Event

#: How much of a body `relay dead show` prints: enough to recognise an event, not to flood.
BODY_PREVIEW = 512

#: Cells longer than this are cut in tables (`--json` always has the whole value).
CELL_MAX = 60

#: Header values `dead show` never prints: they may carry credentials of the provider.
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-hook-secret"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `relay dead list` and `relay dead show`."""
    sub = parser.add_subparsers(dest="dead_command", metavar="{list,show}", required=True)
    listing = sub.add_parser("list", help="dead letters, newest first")
    add_list_options(listing, since="went dead")
    show = sub.add_parser("show", help="one event: its request, deliveries and attempts")
    show.add_argument("event_id", metavar="EVENT_ID")
    show.add_argument("--target", "-t", help="only this target's delivery and attempts")
    add_connection_options(show)


def dead_filter(args: argparse.Namespace, limit: int | None = None) -> ops.DeadFilter:
    """The dead letters the filter options select (`dead list`, bulk `replay`)."""
    return ops.DeadFilter(
        target=args.target,
        source=args.source,
        event_type=args.event_type,
        since=since_option(args.since),
        limit=limit,
    )


def cut(text: str, limit: int = CELL_MAX) -> str:
    """One line of at most `limit` characters, an ellipsis marking a cut."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_dead_list(letters: Sequence[ops.DeadLetter], now: float) -> str:
    """Dead letters as a table."""
    rows = [
        (
            d.event_id,
            d.target,
            d.source,
            d.type,
            "expired" if d.expired else d.state,
            d.attempts,
            format_time(d.dead_at),
            format_age(now - d.dead_at),
            cut(d.reason),
        )
        for d in letters
    ]
    headers = ("EVENT", "TARGET", "SOURCE", "TYPE", "STATE", "ATTEMPTS", "DEAD AT", "AGE", "REASON")
    return render_table(headers, rows)


def _dead_list(args: argparse.Namespace, conn: redis.Redis) -> int:
    limit = limit_of(args)
    letters = ops.list_dead(conn, dead_filter(args, limit))
    if args.json:
        print_json([d.to_json() for d in letters])
        return 0
    if not letters:
        print("No dead letters.")
        return 0
    print(render_dead_list(letters, time.time()))
    more = " (the newest; --limit 0 for all)" if limit is not None and len(letters) == limit else ""
    print(f"\n{len(letters)} dead letter(s){more}")
    return 0


def headers_shown(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers with the values of SENSITIVE_HEADERS replaced."""
    return [(k, "[redacted]" if k.lower() in SENSITIVE_HEADERS else v) for k, v in headers]


def event_detail_json(detail: ops.EventDetail) -> dict[str, Any]:
    """`dead show --json`: the event (body preview only), its deliveries and attempts."""
    event = detail.event
    return {
        "event_id": detail.event_id,
        "expired": event is None,
        "event": None
        if event is None
        else {
            "source": event.source,
            "type": event.type,
            "received_at": event.received_at,
            "content_type": event.content_type,
            "method": event.method,
            "headers": headers_shown(event.headers),
            "body_size": len(event.body),
            "body_preview": event.body[:BODY_PREVIEW].decode("utf-8", "replace"),
        },
        "deliveries": [d.to_json() for d in detail.deliveries],
        "attempts": [a.to_json() for a in detail.attempts],
    }


def _render_request(event: Event, now: float) -> list[str]:
    age = format_age(now - event.received_at)
    fields = [
        ("source", event.source),
        ("type", event.type),
        ("received", f"{format_time(event.received_at)} ({age} ago)"),
        ("method", event.method),
        ("content type", event.content_type),
        ("body", f"{len(event.body)} bytes"),
    ]
    lines = [render_fields(fields)]
    if event.headers:
        lines += ["", "headers:"]
        lines += [f"  {k}: {v}" for k, v in headers_shown(event.headers)]
    preview = event.body[:BODY_PREVIEW].decode("utf-8", "replace")
    shown = f" (first {BODY_PREVIEW} bytes)" if len(event.body) > BODY_PREVIEW else ""
    return [*lines, "", f"body{shown}:", *(f"  {line}" for line in preview.splitlines() or [""])]


def _render_deliveries(detail: ops.EventDetail) -> list[str]:
    rows = [
        (
            d.target,
            d.state,
            d.attempts,
            d.before_replay or None,
            format_time(d.dead_at),
            d.reason,  # whole: this is the one place to read it (lists cut it)
        )
        for d in detail.deliveries
    ]
    headers = ("TARGET", "STATE", "ATTEMPTS", "REPLAYED AFTER", "DEAD AT", "REASON")
    return ["", render_table(headers, rows)]


def _render_attempts(detail: ops.EventDetail) -> list[str]:
    rows = [
        (
            a.target,
            a.attempt,
            format_time(a.at),
            None if a.duration is None else f"{a.duration * 1000:.0f}ms",
            a.status,
            a.outcome,
            cut(a.response, 40),
            a.error,  # whole, and last so that a long one wraps no other column
        )
        for a in detail.attempts
    ]
    headers = ("TARGET", "#", "AT", "TOOK", "STATUS", "OUTCOME", "RESPONSE", "ERROR")
    return ["", render_table(headers, rows)]


def render_event_detail(detail: ops.EventDetail, now: float) -> str:
    """An event, its deliveries and its attempts for people."""
    lines = [f"event {detail.event_id}"]
    if detail.event is None:
        lines.append("expired: the event and its body are no longer kept (cannot be replayed)")
    else:
        lines += _render_request(detail.event, now)
    if detail.deliveries:
        lines += _render_deliveries(detail)
    lines += _render_attempts(detail) if detail.attempts else ["", "No attempts recorded."]
    return "\n".join(lines)


def _dead_show(args: argparse.Namespace, conn: redis.Redis) -> int:
    detail = ops.show_event(conn, args.event_id, args.target)
    if detail is None:
        print(f"relay: no event {args.event_id} (unknown, or expired)", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print_json(event_detail_json(detail))
    else:
        print(render_event_detail(detail, time.time()))
    return 0


def _dead(args: argparse.Namespace, settings: Settings, conn: redis.Redis) -> int:
    if args.dead_command == "show":
        return _dead_show(args, conn)
    return _dead_list(args, conn)


#: `relay dead list|show`.
run = with_redis("relay", _dead, bad_environment=EXIT_FAILED)
