"""`relay pause [TARGET]` and `relay resume TARGET`: hold and release a target's deliveries.

A paused target's deliveries are held, not attempted, and keep their attempt budget (see
worker.pause and relay.store.pauses). A 410 from a target with `pause_on_gone = true` pauses it too.
`relay pause` without a target lists the paused ones.
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson
import redis

from relay.cli.common import EXIT_FAILED, EXIT_USAGE, configured_targets, with_redis
from relay.cli.options import add_connection_options
from relay.config.settings import Settings
from relay.store.pauses import Pause, describe_pause, paused
from worker.pause import pause_target, resume_target
from worker.poller import POLL_INTERVAL


def add_pause_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `relay pause`."""
    parser.add_argument("target", nargs="?", help="target to pause; none: list paused targets")
    parser.add_argument("--reason", default="paused by an operator", help="why (shown in lists)")
    add_connection_options(parser)


def add_resume_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `relay resume`."""
    parser.add_argument("target", help="target to resume")
    add_connection_options(parser)


def _unknown(target: str, settings: Settings) -> str | None:
    """Why a target name looks wrong, or None (a typo would pause nothing real)."""
    names = configured_targets(settings.routes_path)
    if names is None or target in names:
        return None
    known = ", ".join(sorted(names)) or "none"
    return f"no target named '{target}' in {settings.routes_path} (targets: {known})"


def render_paused(pauses: list[Pause], now: float) -> str:
    """The paused targets as lines of text."""
    if not pauses:
        return "no target is paused"
    return "\n".join(f"{p.target}  paused {describe_pause(p, now)}" for p in pauses)


def _pause(args: argparse.Namespace, settings: Settings, conn: redis.Redis) -> int:
    if args.target is None:
        names = configured_targets(settings.routes_path) or ()
        found = sorted(paused(conn, names).values(), key=lambda p: p.target)
        if args.json:
            print(orjson.dumps([p.to_view() for p in found]).decode())
        else:
            print(render_paused(found, time.time()))
        return 0
    problem = _unknown(args.target, settings)
    if problem is not None:
        print(f"relay pause: {problem}", file=sys.stderr)
        return EXIT_USAGE
    newly = pause_target(conn, args.target, args.reason)
    if args.json:
        print(orjson.dumps({"target": args.target, "paused": True, "changed": newly}).decode())
    elif newly:
        print(f"{args.target}: paused; its deliveries are held until `relay resume {args.target}`")
    else:
        print(f"{args.target}: already paused")
    return 0


def _resume(args: argparse.Namespace, settings: Settings, conn: redis.Redis) -> int:
    was_paused = resume_target(conn, args.target)
    if args.json:
        print(
            orjson.dumps({"target": args.target, "paused": False, "changed": was_paused}).decode()
        )
    elif was_paused:
        print(
            f"{args.target}: resumed; held deliveries go out within {POLL_INTERVAL:g}s "
            "(410 deliveries are dead letters: replay them with relay replay)"
        )
    else:
        print(f"{args.target}: was not paused")
    return 0


#: `relay pause [TARGET]`; a bad environment exits 1 (docs/operating.md).
run_pause = with_redis("relay", _pause, bad_environment=EXIT_FAILED)
#: `relay resume TARGET`.
run_resume = with_redis("relay", _resume, bad_environment=EXIT_FAILED)
