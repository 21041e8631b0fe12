"""Options shared by the operator commands, so each means the same under every command.

Every list command (`relay dead list`, `relay events list`) takes the same filters and limit
from `add_list_options`, and every command that reads Redis the same `--url/-u` and `--json`
from `add_connection_options`: an option learned on one works on the others.
"""

from __future__ import annotations

import argparse

from relay.cli.common import non_negative_int

#: Rows a listing shows unless told otherwise (newest first).
DEFAULT_LIMIT = 50


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """`--url/-u` (the Redis to read) and `--json` (output for scripts)."""
    parser.add_argument(
        "--url", "-u", help="Redis URL (default: REDIS_URL, else redis://localhost:6379/0)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def add_filter_options(parser: argparse.ArgumentParser, *, since: str) -> None:
    """`--target/-t`, `--source/-s`, `--event-type/-e` and `--since`; `since` says of what."""
    parser.add_argument("--target", "-t", help="only deliveries to this target")
    parser.add_argument("--source", "-s", help="only events of this source")
    # --type is the name `relay events list` had first; kept so that old scripts still work.
    parser.add_argument(
        "--event-type",
        "--type",
        "-e",
        dest="event_type",
        metavar="GLOB",
        help="only event types matching GLOB (as in routes.toml: COURSEMEMBER_*)",
    )
    parser.add_argument(
        "--since", metavar="TIME", help=f"{since} since TIME: 2h, 30m, 7d or ISO-8601 (UTC)"
    )


def add_limit_option(parser: argparse.ArgumentParser, default: int = DEFAULT_LIMIT) -> None:
    """`--limit/-n N`: at most N rows, newest first; 0 for all."""
    parser.add_argument(
        "--limit",
        "-n",
        type=non_negative_int,
        default=default,
        metavar="N",
        help=f"at most N, newest first (default {default}; 0 for all)",
    )


def add_list_options(parser: argparse.ArgumentParser, *, since: str) -> None:
    """Everything a list command takes: the filters, the limit, `--url` and `--json`."""
    add_filter_options(parser, since=since)
    add_limit_option(parser)
    add_connection_options(parser)


def limit_of(args: argparse.Namespace) -> int | None:
    """The `--limit` given, None for all (0)."""
    limit: int = args.limit
    return limit or None
