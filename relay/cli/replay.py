"""`relay replay`: put dead deliveries back on the queue, with the same webhook-id.

By event id (`relay replay EVENT_ID... [--target T]`) or in bulk by the filters of
`relay dead list` (or `--all`). A bulk replay says how many first, asks on a terminal unless
`--yes`, and draws a progress bar; `--dry-run` says what it would do and changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import redis
import structlog

from relay.cli.common import EXIT_FAILED, UsageError, print_json, with_redis
from relay.cli.dead import dead_filter
from relay.cli.options import add_connection_options, add_filter_options
from relay.cli.tables import render_table
from relay.config.settings import Settings
from relay.core.logs import configure_logging
from relay.ops import deliveries as ops


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
    if not args.event_ids:
        letters = ops.list_dead(conn, dead_filter(args))
        return [(d.event_id, d.target) for d in letters], []
    return ops.event_pairs(conn, args.event_ids, args.target)


def _check_selection(args: argparse.Namespace) -> None:
    """Refuse ids mixed with filters, and a bulk replay that names nothing."""
    filters = args.since or args.source or args.event_type
    if args.event_ids and (args.all or filters):
        raise UsageError("EVENT_ID takes only --target; filters select dead letters")
    if not args.event_ids and not (args.all or args.target or filters):
        raise UsageError(
            "say what to replay: EVENT_ID..., --target, --source, --event-type, --since or --all"
        )


def _confirm(count: int) -> bool:
    sys.stderr.write(f"Replay {count} dead letter(s)? [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _go_ahead(args: argparse.Namespace, count: int) -> bool:
    """Whether a bulk replay of `count` may start: say how many, ask on a terminal."""
    if not count or args.event_ids or args.dry_run:
        return True
    if not args.json:
        print(f"Replaying {count} dead letter(s)")
    return not sys.stdin.isatty() or args.yes or _confirm(count)


def _replay_all(
    conn: redis.Redis,
    pairs: Sequence[tuple[str, str]],
    settings: Settings,
    dry_run: bool,
) -> list[ops.ReplayResult]:
    bar = ProgressBar(len(pairs), sys.stderr)
    results = ops.replay_pairs(
        conn, pairs, retention=settings.retention, dry_run=dry_run, progress=bar.update
    )
    bar.finish()
    return results


def _replay(args: argparse.Namespace, settings: Settings, conn: redis.Redis) -> int:
    _check_selection(args)
    configure_logging(settings.log_level, settings.log_format)
    pairs, results = _selection(args, conn)
    if not pairs and not results:
        if args.json:
            print_json(replay_json(args.dry_run, 0, []))
        else:
            print("Nothing to do")
        return 0
    if not _go_ahead(args, len(pairs)):
        print("Aborted: nothing replayed.", file=sys.stderr)
        return EXIT_FAILED
    results += _replay_all(conn, pairs, settings, args.dry_run)
    ok = sum(r.ok for r in results)
    # A dry run changed nothing: it says what it would do, never that it replayed.
    structlog.get_logger("relay.ops").info(
        "replay dry run finished" if args.dry_run else "replay finished",
        selected=len(pairs),
        **{ops.done_key(args.dry_run): ok},
        failed=len(results) - ok,
        dry_run=args.dry_run,
    )
    if args.json:
        print_json(replay_json(args.dry_run, len(pairs), results))
    else:
        print(render_replay(results, args.dry_run))
    return 0 if ok == len(results) else EXIT_FAILED


def replay_json(dry_run: bool, selected: int, results: Sequence[ops.ReplayResult]) -> Any:
    """`relay replay --json`: the counts and every result (as the API answers them)."""
    return ops.replay_summary(dry_run, selected, results)


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


#: `relay replay`: put dead deliveries back on the queue with the same webhook-id.
run = with_redis("relay", _replay, bad_environment=EXIT_FAILED)
