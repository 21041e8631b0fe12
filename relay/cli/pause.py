"""`relay pause [TARGET]` and `relay resume TARGET`: hold and release a target's deliveries.

A paused target's deliveries are held, not attempted, and keep their attempt budget (see
worker.pause and relay.store.pauses). A 410 from a target with `pause_on_gone = true` pauses it too.
`relay pause` without a target lists the paused ones.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import orjson
import redis

from relay.cli.deliveries import redact_url
from relay.config.loading import load_routes
from relay.config.settings import Settings
from relay.core.errors import ConfigError
from relay.store.pauses import Pause, describe_pause, paused
from worker.pause import pause_target, resume_target
from worker.poller import POLL_INTERVAL


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", "-u", help="Redis URL (default: REDIS_URL, else redis://localhost:6379/0)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def add_pause_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `relay pause`."""
    parser.add_argument("target", nargs="?", help="target to pause; none: list paused targets")
    parser.add_argument("--reason", default="paused by an operator", help="why (shown in lists)")
    _add_common(parser)


def add_resume_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `relay resume`."""
    parser.add_argument("target", help="target to resume")
    _add_common(parser)


def configured_targets(path: str) -> tuple[str, ...] | None:
    """Target names in routes.toml, or None when it cannot be read (secrets need not be set)."""
    try:
        return tuple(load_routes(path, os.environ, require_env=False).targets)
    except ConfigError:
        return None


def _unknown(target: str, settings: Settings) -> str | None:
    """Why a target name looks wrong, or None (a typo would pause nothing real)."""
    names = configured_targets(settings.routes_path)
    if names is None or target in names:
        return None
    known = ", ".join(sorted(names)) or "none"
    return f"no target named '{target}' in {settings.routes_path} (targets: {known})"


def _guarded(
    command: Callable[[argparse.Namespace, Settings, redis.Redis], int],
) -> Callable[[argparse.Namespace], int]:
    """Run a command with settings and a connection; one line and exit 1 when Redis is away."""

    def run(args: argparse.Namespace) -> int:
        try:
            settings = Settings.from_env()
        except ConfigError as exc:
            print(f"relay: {exc}", file=sys.stderr)
            return 1
        url = args.url or settings.redis_url
        try:
            with redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10) as conn:
                return command(args, settings, conn)
        except redis.RedisError as exc:
            print(f"relay: cannot reach Redis at {redact_url(url)}: {exc}", file=sys.stderr)
            return 1

    return run


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
        return 2
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


run_pause = _guarded(_pause)
run_resume = _guarded(_resume)
