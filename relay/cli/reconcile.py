"""`relay reconcile SOURCE [--dry-run] [--backfill]`: one reconciliation pass now.

Prints what the pass found missing and what it synthesized (with --dry-run: would synthesize),
or with --json one document. Exit codes as the other operator commands: 0 the pass ran, 1 it
failed (the API could not be read: the reason is printed) or another process holds the pass,
2 a usage or configuration problem (no such source, or one without `reconcile`).
"""

from __future__ import annotations

import argparse
import os
import sys

import redis

from relay.cli.common import EXIT_CONFIG, EXIT_FAILED, config_error, print_json, with_redis
from relay.cli.options import add_connection_options
from relay.config.loading import load_routes
from relay.config.settings import Settings
from relay.core.errors import ConfigError
from relay.core.logs import configure_logging
from worker.fellow.reconcile import PassBusy, PassResult, run_pass

PROG = "relay reconcile"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `relay reconcile`."""
    parser.add_argument("source", help="a source with a [sources.NAME.reconcile] table")
    parser.add_argument(
        "--dry-run", action="store_true", help="show what is missing; synthesize and record nothing"
    )
    parser.add_argument(
        "--backfill",
        action="store_true",
        help="synthesize what the API shows and relay never received, now (also on a first pass)",
    )
    add_connection_options(parser)


def result_json(result: PassResult) -> dict[str, object]:
    """The pass as a JSON document."""
    made = dict((c.name, event_id) for c, event_id in result.synthesized)
    return {
        "source": result.source,
        "dry_run": result.dry_run,
        "baseline": result.baseline,
        "error": str(result.error) if result.error else None,
        "memberships": result.memberships,
        "missing": [
            {
                "event": c.event,
                "form": c.form(),
                "event_id": made.get(c.name),
            }
            for c in result.plan.missed
        ],
        "waiting": [c.name for c in result.plan.waiting],
        "seen": len(result.plan.seen),
        "requests": result.requests,
        "seconds": result.seconds,
    }


def render(result: PassResult) -> str:
    """The pass as lines of text."""
    if result.error is not None:
        return f"{result.source}: pass failed, nothing synthesized: {result.error}"
    verb = "would synthesize" if result.dry_run else "synthesized"
    made = dict((c.name, event_id) for c, event_id in result.synthesized)
    lines = [f"{result.source}: {result.memberships} memberships read"]
    if result.baseline:
        lines.append("first pass: memberships recorded, nothing synthesized (--backfill to)")
    for change in result.plan.missed:
        event_id = made.get(change.name)
        where = f" as {event_id}" if event_id else ""
        lines.append(f"missing  {change.name}  ({verb}{where})")
    for change in result.plan.waiting:
        lines.append(f"waiting  {change.name}  (inside grace: the webhook may be late)")
    lines.append(
        f"{len(result.plan.missed)} missing, {len(result.plan.waiting)} waiting, "
        f"{len(result.plan.seen)} received by webhook"
    )
    return "\n".join(lines)


def _reconcile(args: argparse.Namespace, settings: Settings, conn: redis.Redis) -> int:
    configure_logging(settings.log_level, settings.log_format)  # on stderr: stdout is the result
    try:
        table = load_routes(settings.routes_path, os.environ)
    except ConfigError as exc:
        return config_error(PROG, exc)
    source = table.sources.get(args.source)
    if source is None or source.reconcile is None:
        known = ", ".join(n for n, s in table.sources.items() if s.reconcile) or "none"
        print(
            f"{PROG}: no source {args.source!r} with [sources.{args.source}.reconcile] in "
            f"{settings.routes_path} (reconciled sources: {known})",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        result = run_pass(
            conn,
            table,
            source,
            retention=settings.retention,
            dry_run=args.dry_run,
            backfill=args.backfill,
        )
    except PassBusy:
        print(f"{PROG}: another process is running a pass of {args.source}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print_json(result_json(result))
    else:
        print(render(result))
    return EXIT_FAILED if result.error is not None else 0


run = with_redis(PROG, _reconcile)
