"""`relay status`: per-target delivery figures, queue depth and workers, like `rq info`.

`--interval/-i` refreshes until Ctrl-C; `--json` prints one document (one per line with
`--interval`). Paused targets, and targets whose circuit breaker is open, are marked and listed
with why; so is each reconciled source's last pass, with a note when it failed. Data access lives
in `relay.ops.deliveries`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import orjson
import redis

from relay.cli.common import (
    EXIT_FAILED,
    configured_reconciled,
    configured_targets,
    with_redis,
)
from relay.cli.options import add_connection_options
from relay.cli.tables import render_table
from relay.config.settings import Settings
from relay.core.times import format_age, format_time
from relay.ops import deliveries as ops
from relay.ops.reconciliation import ReconcileStatus
from relay.store.breakers import describe_breaker
from relay.store.pauses import describe_pause

#: What the status table shows per target, in order.
HEADERS = (
    "TARGET", "STATE", "PENDING", "RETRIES", "DEAD NOW", "DELIVERED", "DEAD", "GONE",
    "ATTEMPTS", "FAILURES", "REPLAYED",
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `relay status`."""
    add_connection_options(parser)
    parser.add_argument(
        "--routes",
        help="routes.toml whose targets are listed even when idle (default: RELAY_ROUTES)",
    )
    parser.add_argument(
        "--interval", "-i", type=float, help="refresh every N seconds until Ctrl-C (like rq info)"
    )


def _state(t: ops.TargetStatus) -> str:
    """paused, breaker-open or active: a pause holds everything, so it is shown first."""
    if t.paused is not None:
        return "paused"
    return "breaker-open" if t.breaker is not None and t.breaker.is_open else "active"


def _target_row(t: ops.TargetStatus) -> tuple[object, ...]:
    return (
        t.name if t.configured else f"{t.name} *",
        _state(t),
        t.pending,
        t.scheduled,
        t.dead_letters,
        t.delivered,
        t.dead,
        t.gone,
        t.attempts,
        t.failures,
        t.replayed,
    )


def _render_targets(status: ops.Status) -> list[str]:
    if not status.targets:
        return ["No targets yet."]
    lines = [render_table(HEADERS, [_target_row(t) for t in status.targets])]
    if not all(t.configured for t in status.targets):
        lines.append("* not in routes.toml (seen in Redis)")
    held = [t for t in status.targets if t.paused is not None]
    if held:
        lines += ["", "Paused (deliveries held until `relay resume TARGET`):"]
        lines += [
            f"  {t.name}  paused {describe_pause(t.paused, status.at)}"
            for t in held
            if t.paused is not None
        ]
    tripped = [t for t in status.targets if t.breaker is not None and t.breaker.is_open]
    if tripped:
        lines += [
            "",
            "Breaker open (deliveries held, one probe per interval; all go out again when one "
            "succeeds):",
        ]
        lines += [
            f"  {t.name}  {describe_breaker(t.breaker, status.at)}"
            for t in tripped
            if t.breaker is not None
        ]
    controlled = [(t.name, t.control) for t in status.targets if t.control is not None]
    if controlled:
        lines += ["", "Delivery control (held: due deliveries waiting for the limit):"]
        lines += [f"  {name}  {control.describe()}" for name, control in controlled]
    return lines


RECONCILE_HEADERS = ("SOURCE", "LAST PASS", "OUTCOME", "FAILURES", "MISSED", "MISSED ALL")


def _reconcile_row(r: ReconcileStatus, now: float) -> tuple[object, ...]:
    record = r.record
    return (
        r.name if r.configured else f"{r.name} *",
        f"{format_age(now - record.at)} ago" if record.at else "never",
        "-" if record.outcome is None else str(record.outcome),
        record.failures,
        record.missed,
        r.missed_total,
    )


def _render_reconciled(status: ops.Status) -> list[str]:
    """Each reconciled source's last pass; a failed one is spelled out below the table."""
    if not status.reconciled:
        return []
    rows = [_reconcile_row(r, status.at) for r in status.reconciled]
    lines = ["", "Reconciliation (MISSED: synthesized by the last good pass; ALL: since the first)"]
    lines.append(render_table(RECONCILE_HEADERS, rows))
    failed = [r for r in status.reconciled if r.failed]
    lines += [f"  {r.note(status.at)}" for r in failed]
    return lines


def render_status(status: ops.Status) -> str:
    """The status as tables for people; paused targets are marked and listed with why."""
    q = status.queue
    lines = [
        f"queue {q.name}: {q.queued} queued, {q.started} started, {q.scheduled} scheduled, "
        f"{q.failed} failed, {q.deferred} deferred; {status.workers} worker(s)",
        "",
        *_render_targets(status),
    ]
    if status.sources:
        rows = [(s.name, s.received, s.duplicates, s.unrouted) for s in status.sources]
        lines += ["", render_table(("SOURCE", "RECEIVED", "DUPLICATES", "UNROUTED"), rows)]
    lines += _render_reconciled(status)
    return "\n".join(lines)


def status_loop(
    show: Callable[[], None],
    interval: float | None,
    *,
    clear: bool,
    sleep: Callable[[float], None] | None = None,
    rounds: int | None = None,
) -> None:
    """Show once, or every `interval` seconds (clearing a terminal first) until interrupted."""
    sleep = sleep or time.sleep
    done = 0
    while True:
        if clear and interval:
            sys.stdout.write("\x1b[2J\x1b[H")
        show()
        sys.stdout.flush()
        done += 1
        if not interval or (rounds is not None and done >= rounds):
            return
        sleep(interval)


def _status(args: argparse.Namespace, settings: Settings, conn: redis.Redis) -> int:
    routes = args.routes or settings.routes_path
    names = configured_targets(routes) or ()
    reconciled = configured_reconciled(routes)

    def show() -> None:
        status = ops.collect_status(conn, names, reconciled=reconciled)
        if args.json:
            # One document per refresh, one per line with --interval (JSON Lines).
            line = orjson.dumps(
                status.to_json(), option=0 if args.interval else orjson.OPT_INDENT_2
            )
            sys.stdout.write(line.decode() + "\n")
        else:
            print(f"{format_time(status.at)}\n{render_status(status)}")

    try:
        status_loop(show, args.interval, clear=sys.stdout.isatty() and not args.json)
    except KeyboardInterrupt:
        if not args.json:
            print()  # leave the shell prompt on a line of its own, as rq info does
    return 0


#: `relay status`: per-target figures, queue depth and workers.
run = with_redis("relay", _status, bad_environment=EXIT_FAILED)
