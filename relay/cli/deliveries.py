"""The operator commands `relay status`, `relay dead list|show` and `relay replay`.

They follow `rq`'s CLI habits: `--url/-u` for Redis (default `REDIS_URL`), `--interval/-i` to
refresh `status` like `rq info`, `--all/-a` to select everything, "Nothing to do" when there is
nothing, a count before a bulk change and a progress bar on a terminal. Tables are for people;
`--json` prints one JSON document on stdout for scripts. Data access lives in
`relay.ops.deliveries`.
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis
import structlog

from relay.cli.options import (
    add_connection_options,
    add_filter_options,
    add_list_options,
    limit_of,
)
from relay.cli.tables import render_fields, render_table
from relay.config.settings import Settings
from relay.core.errors import ConfigError
from relay.core.logs import configure_logging
from relay.core.times import format_age, format_time, parse_since
from relay.ops import deliveries as ops
from relay.store import keys
from relay.store.pauses import describe_pause

#: How much of a body `relay dead show` prints: enough to recognise an event, not to flood.
BODY_PREVIEW = 512

#: Cells longer than this are cut in tables (`--json` always has the whole value).
CELL_MAX = 60

#: Header values `dead show` never prints: they may carry credentials of the provider.
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-hook-secret"})


# ---------------------------------------------------------------------------------------------
# Shared plumbing


class UsageError(Exception):
    """An operator's argument that cannot be used (exit code 2, like argparse)."""


def _settings() -> Settings:
    return Settings.from_env()


def _connect(args: argparse.Namespace, settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(args.url or settings.redis_url, socket_connect_timeout=5)


def redact_url(url: str) -> str:
    """A Redis URL safe to print: the password replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _guarded(command: Callable[[argparse.Namespace, Settings], int]) -> Callable[..., int]:
    """Run a command turning configuration and Redis errors into one line and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            settings = _settings()
        except ConfigError as exc:
            print(f"relay: {exc}", file=sys.stderr)
            return 1
        try:
            return command(args, settings)
        except UsageError as exc:
            print(f"relay: {exc}", file=sys.stderr)
            return 2
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            url = redact_url(args.url or settings.redis_url)
            print(f"relay: cannot reach Redis at {url}: {exc}", file=sys.stderr)
            return 1

    return run


def _print_json(value: Any, stream: TextIO | None = None) -> None:
    (stream or sys.stdout).write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _cut(text: str, limit: int = CELL_MAX) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _since(value: str | None) -> float | None:
    try:
        return None if value is None else parse_since(value)
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None


# ---------------------------------------------------------------------------------------------
# relay status


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `relay status`."""
    add_connection_options(parser)
    parser.add_argument(
        "--routes",
        help="routes.toml whose targets are listed even when idle (default: RELAY_ROUTES)",
    )
    parser.add_argument(
        "--interval", "-i", type=float, help="refresh every N seconds until Ctrl-C (like rq info)"
    )


def configured_targets(path: str) -> tuple[str, ...]:
    """Target names in routes.toml, in file order; () when the file is missing or unreadable."""
    # Only the names are needed, so the file is read without resolving its secrets: status
    # works on an operator's machine where the targets' environment variables are not set.
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return ()
    except (OSError, tomllib.TOMLDecodeError) as exc:
        print(f"relay: {path}: {exc} (targets listed from Redis only)", file=sys.stderr)
        return ()
    targets = data.get("targets")
    return tuple(str(name) for name in targets) if isinstance(targets, dict) else ()


def render_status(status: ops.Status) -> str:
    """The status as tables for people; paused targets are marked and listed with why."""
    q = status.queue
    lines = [
        f"queue {q.name}: {q.queued} queued, {q.started} started, {q.scheduled} scheduled, "
        f"{q.failed} failed, {q.deferred} deferred; {status.workers} worker(s)",
        "",
    ]
    if status.targets:
        rows = [
            (
                t.name if t.configured else f"{t.name} *",
                "paused" if t.paused else "active",
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
            for t in status.targets
        ]
        headers = (
            "TARGET", "STATE", "PENDING", "RETRIES", "DEAD NOW", "DELIVERED", "DEAD", "GONE",
            "ATTEMPTS", "FAILURES", "REPLAYED",
        )  # fmt: skip
        lines.append(render_table(headers, rows))
        if not all(t.configured for t in status.targets):
            lines.append("* not in routes.toml (seen in Redis)")
        held = [t for t in status.targets if t.paused]
        if held:
            lines += ["", "Paused (deliveries held until `relay resume TARGET`):"]
            lines += [
                f"  {t.name}  paused {describe_pause(t.paused, status.at)}"
                for t in held
                if t.paused is not None
            ]
    else:
        lines.append("No targets yet.")
    if status.sources:
        rows2 = [(s.name, s.received, s.duplicates, s.unrouted) for s in status.sources]
        lines += ["", render_table(("SOURCE", "RECEIVED", "DUPLICATES", "UNROUTED"), rows2)]
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


@_guarded
def _run_status(args: argparse.Namespace, settings: Settings) -> int:
    conn = _connect(args, settings)
    names = configured_targets(args.routes or settings.routes_path)

    def show() -> None:
        status = ops.collect_status(conn, names)
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


def run_status(args: argparse.Namespace) -> int:
    """`relay status`: per-target figures, queue depth and workers."""
    return _run_status(args)


# ---------------------------------------------------------------------------------------------
# relay dead list | show


def add_dead_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `relay dead list` and `relay dead show`."""
    sub = parser.add_subparsers(dest="dead_command", metavar="{list,show}", required=True)
    listing = sub.add_parser("list", help="dead letters, newest first")
    add_list_options(listing, since="went dead")
    show = sub.add_parser("show", help="one event: its request, deliveries and attempts")
    show.add_argument("event_id", metavar="EVENT_ID")
    show.add_argument("--target", "-t", help="only this target's delivery and attempts")
    add_connection_options(show)


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
            _cut(d.reason),
        )
        for d in letters
    ]
    headers = ("EVENT", "TARGET", "SOURCE", "TYPE", "STATE", "ATTEMPTS", "DEAD AT", "AGE", "REASON")
    return render_table(headers, rows)


def _filter_from(args: argparse.Namespace, limit: int | None = None) -> ops.DeadFilter:
    return ops.DeadFilter(
        target=args.target,
        source=args.source,
        event_type=args.event_type,
        since=_since(args.since),
        limit=limit,
    )


def _dead_list(args: argparse.Namespace, conn: redis.Redis) -> int:
    limit = limit_of(args)
    letters = ops.list_dead(conn, _filter_from(args, limit))
    if args.json:
        _print_json([d.to_json() for d in letters])
        return 0
    if not letters:
        print("No dead letters.")
        return 0
    print(render_dead_list(letters, time.time()))
    more = " (the newest; --limit 0 for all)" if limit is not None and len(letters) == limit else ""
    print(f"\n{len(letters)} dead letter(s){more}")
    return 0


def _headers_shown(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
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
            "headers": _headers_shown(event.headers),
            "body_size": len(event.body),
            "body_preview": event.body[:BODY_PREVIEW].decode("utf-8", "replace"),
        },
        "deliveries": [d.to_json() for d in detail.deliveries],
        "attempts": [a.to_json() for a in detail.attempts],
    }


def render_event_detail(detail: ops.EventDetail, now: float) -> str:
    """An event, its deliveries and its attempts for people."""
    event = detail.event
    lines = [f"event {detail.event_id}"]
    if event is None:
        lines.append("expired: the event and its body are no longer kept (cannot be replayed)")
    else:
        lines.append(
            render_fields(
                [
                    ("source", event.source),
                    ("type", event.type),
                    (
                        "received",
                        f"{format_time(event.received_at)} "
                        f"({format_age(now - event.received_at)} ago)",
                    ),
                    ("method", event.method),
                    ("content type", event.content_type),
                    ("body", f"{len(event.body)} bytes"),
                ]
            )
        )
        if event.headers:
            lines += ["", "headers:"]
            lines += [f"  {k}: {v}" for k, v in _headers_shown(event.headers)]
        preview = event.body[:BODY_PREVIEW].decode("utf-8", "replace")
        cut = f" (first {BODY_PREVIEW} bytes)" if len(event.body) > BODY_PREVIEW else ""
        lines += ["", f"body{cut}:", *(f"  {line}" for line in preview.splitlines() or [""])]
    if detail.deliveries:
        rows = [
            (
                d.target,
                d.state,
                d.attempts,
                d.replayed_after or None,
                format_time(d.dead_at),
                d.reason,  # whole: this is the one place to read it (lists cut it)
            )
            for d in detail.deliveries
        ]
        headers = ("TARGET", "STATE", "ATTEMPTS", "REPLAYED AFTER", "DEAD AT", "REASON")
        lines += ["", render_table(headers, rows)]
    if detail.attempts:
        attempt_rows = [
            (
                a.target,
                a.attempt,
                format_time(a.at),
                None if a.duration is None else f"{a.duration * 1000:.0f}ms",
                a.status,
                a.outcome,
                _cut(a.response, 40),
                a.error,  # whole, and last so that a long one wraps no other column
            )
            for a in detail.attempts
        ]
        attempt_headers = ("TARGET", "#", "AT", "TOOK", "STATUS", "OUTCOME", "RESPONSE", "ERROR")
        lines += ["", render_table(attempt_headers, attempt_rows)]
    else:
        lines += ["", "No attempts recorded."]
    return "\n".join(lines)


def _dead_show(args: argparse.Namespace, conn: redis.Redis) -> int:
    detail = ops.show_event(conn, args.event_id, args.target)
    if detail is None:
        print(f"relay: no event {args.event_id} (unknown, or expired)", file=sys.stderr)
        return 1
    if args.json:
        _print_json(event_detail_json(detail))
    else:
        print(render_event_detail(detail, time.time()))
    return 0


@_guarded
def _run_dead(args: argparse.Namespace, settings: Settings) -> int:
    conn = _connect(args, settings)
    if args.dead_command == "show":
        return _dead_show(args, conn)
    return _dead_list(args, conn)


def run_dead(args: argparse.Namespace) -> int:
    """`relay dead list|show`."""
    return _run_dead(args)


# ---------------------------------------------------------------------------------------------
# relay replay


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `relay replay`."""
    parser.add_argument(
        "event_ids",
        nargs="*",
        metavar="EVENT_ID",
        help="replay the dead deliveries of these events (all targets unless --target)",
    )
    add_filter_options(parser, since="went dead")
    parser.add_argument("--all", "-a", action="store_true", help="replay every dead letter")
    parser.add_argument("--dry-run", action="store_true", help="show what would be replayed")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    add_connection_options(parser)


class ProgressBar:
    """A one-line progress bar on a terminal stream; silent on anything else."""

    def __init__(self, total: int, stream: TextIO, width: int = 30) -> None:
        self.total = total
        self.stream = stream
        self.width = width
        self.enabled = total > 1 and stream.isatty()

    def update(self, done: int) -> None:
        """Redraw for `done` items finished."""
        if not self.enabled:
            return
        filled = self.width * done // self.total
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r  replaying [{bar}] {done}/{self.total}")
        self.stream.flush()

    def finish(self) -> None:
        """End the bar's line."""
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _selection(
    args: argparse.Namespace, conn: redis.Redis
) -> tuple[list[tuple[str, str]], list[ops.ReplayResult]]:
    """(event id, target) pairs to replay, and results for event ids with nothing to replay."""
    if args.event_ids:
        pairs: list[tuple[str, str]] = []
        nothing: list[ops.ReplayResult] = []
        for event_id in dict.fromkeys(args.event_ids):
            targets = [args.target] if args.target else ops.dead_targets_of(conn, event_id)
            if targets:
                pairs += [(event_id, t) for t in targets]
            elif states := ops.delivery_states(conn, event_id):
                listed = ", ".join(f"{t}: {state}" for t, state in states.items())
                message = f"event {event_id} has no dead delivery to replay ({listed})"
                nothing.append(ops.ReplayResult(event_id, "", "not_dead", "", message=message))
            elif conn.exists(keys.event_key(event_id)):
                message = f"event {event_id} has no deliveries to replay (no route matched it)"
                nothing.append(ops.ReplayResult(event_id, "", "not_dead", "", message=message))
            else:
                message = f"no event {event_id} (unknown, or expired and no longer kept)"
                nothing.append(ops.ReplayResult(event_id, "", "expired", "", message=message))
        return pairs, nothing
    letters = ops.list_dead(conn, _filter_from(args))
    return [(d.event_id, d.target) for d in letters], []


def _confirm(count: int) -> bool:
    sys.stderr.write(f"Replay {count} dead letter(s)? [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


@_guarded
def _run_replay(args: argparse.Namespace, settings: Settings) -> int:
    bulk = not args.event_ids
    if args.event_ids and (args.all or args.since or args.source or args.event_type):
        raise UsageError("EVENT_ID takes only --target; filters select dead letters")
    if bulk and not (args.all or args.target or args.since or args.source or args.event_type):
        raise UsageError(
            "say what to replay: EVENT_ID..., --target, --source, --event-type, --since or --all"
        )
    configure_logging(settings.log_level, settings.log_format)
    # Bound here, not at import: structlog caches a logger with the stream of its first use.
    log = structlog.get_logger("relay.ops")
    conn = _connect(args, settings)
    pairs, results = _selection(args, conn)
    if not pairs and not results:
        if args.json:
            _print_json(_replay_json(args.dry_run, 0, []))
        else:
            print("Nothing to do")
        return 0
    if pairs and bulk and not args.dry_run:
        if not args.json:
            print(f"Replaying {len(pairs)} dead letter(s)")
        if sys.stdin.isatty() and not args.yes and not _confirm(len(pairs)):
            print("Aborted: nothing replayed.", file=sys.stderr)
            return 1
    bar = ProgressBar(len(pairs), sys.stderr)
    for done, (event_id, target) in enumerate(pairs, start=1):
        result = ops.replay_delivery(
            conn, event_id, target, retention=settings.retention, dry_run=args.dry_run
        )
        results.append(result)
        if result.outcome == "replayed":
            log.debug("replayed", event_id=event_id, target=target, attempt=result.attempt)
        bar.update(done)
    bar.finish()
    ok = sum(r.ok for r in results)
    # A dry run changed nothing: it says what it would do, never that it replayed.
    log.info(
        "replay dry run finished" if args.dry_run else "replay finished",
        selected=len(pairs),
        **{_done_key(args.dry_run): ok},
        failed=len(results) - ok,
        dry_run=args.dry_run,
    )
    if args.json:
        _print_json(_replay_json(args.dry_run, len(pairs), results))
    else:
        print(render_replay(results, args.dry_run))
    return 0 if ok == len(results) else 1


def _done_key(dry_run: bool) -> str:
    """What the count of good results is called: `would_replay` in a dry run, else `replayed`."""
    return "would_replay" if dry_run else "replayed"


def _replay_json(dry_run: bool, selected: int, results: Sequence[ops.ReplayResult]) -> Any:
    ok = sum(r.ok for r in results)
    return {
        "dry_run": dry_run,
        "selected": selected,
        _done_key(dry_run): ok,
        "failed": len(results) - ok,
        "results": [r.to_json() for r in results],
    }


def render_replay(results: Sequence[ops.ReplayResult], dry_run: bool) -> str:
    """What a replay did (or would do), for people."""
    done = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    lines: list[str] = []
    if dry_run and done:
        lines.append(f"Would replay {len(done)} dead letter(s):")
        rows = [(r.event_id, r.target, r.state, r.attempt) for r in done]
        lines.append(render_table(("EVENT", "TARGET", "STATE", "NEXT ATTEMPT"), rows))
    elif len(done) == 1 and not failed:
        r = done[0]
        lines.append(f"Replayed {r.event_id} to {r.target} (attempt {r.attempt})")
    elif done:
        lines.append(f"Replayed {len(done)} dead letter(s).")
    if failed:
        lines.append(f"{'Cannot' if dry_run else 'Could not'} replay {len(failed)}:")
        # A result without a target is about a whole event; its message names the event.
        lines += [
            f"  {r.event_id} {r.target}: {r.message}" if r.target else f"  {r.message}"
            for r in failed
        ]
    return "\n".join(lines)


def run_replay(args: argparse.Namespace) -> int:
    """`relay replay`: put dead deliveries back on the queue with the same webhook-id."""
    return _run_replay(args)
