"""`relay events list` and `relay events show ID`: what came in, and what became of each delivery.

Reading only: the data comes from `relay.ops.events`, the text and JSON from
`relay.cli.events_output`; this module parses flags and runs the two subcommands.
"""

from __future__ import annotations

import argparse
import sys

import redis

from relay.cli.common import EXIT_FAILED, print_json, since_option, with_redis
from relay.cli.events_output import (
    event_json,
    printable,
    render_event,
    render_listing,
    summary_json,
)
from relay.cli.options import add_connection_options, add_list_options, limit_of
from relay.config.settings import Settings
from relay.core.ids import is_event_id
from relay.core.units import parse_size
from relay.ops.events import MAX_SCAN, STATES, EventQuery, get_event, list_events

#: Default size of the body preview of `show` (bytes).
PREVIEW_BYTES = 1024

#: Index entries one listing reads at most (a module global so tests can make it small).
SCAN_LIMIT = MAX_SCAN

_LIST_HELP = (
    "List events newest first. Per target the state is shown as target:state(N), N being the "
    "attempts made (left out for a first-attempt delivery and before any attempt)."
)


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
    lister.add_argument(
        "--until", metavar="TIME", help="received until TIME: 2h, 30m, 7d or ISO-8601 (UTC)"
    )
    lister.add_argument("--id-prefix", metavar="PREFIX", help="only event ids starting with PREFIX")
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


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _events(args: argparse.Namespace, settings: Settings, conn: redis.Redis) -> int:
    if args.events_command == "list":
        return _run_list(conn, args)
    return _run_show(conn, args)


def _run_list(conn: redis.Redis, args: argparse.Namespace) -> int:
    query = EventQuery(
        args.source,
        args.event_type,
        args.target,
        args.state,
        since_option(args.since),
        until=since_option(args.until, "--until"),
        id_prefix=args.id_prefix,
    )
    # --limit 0 is "all", which the scan bound still caps (MAX_SCAN index entries).
    limit = limit_of(args) or SCAN_LIMIT
    listing = list_events(conn, query, limit=limit, max_scan=SCAN_LIMIT)
    if args.json:
        print_json(
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
        return EXIT_FAILED
    if args.json:
        print_json(event_json(view, args.max_body, full_body=args.body))
    elif args.body:
        sys.stdout.flush()
        sys.stdout.buffer.write(view.event.body)
        sys.stdout.buffer.flush()
    else:
        print(render_event(view, args.max_body))
    return 0


#: Run `relay events list|show`; 1 for an unknown event or Redis trouble, 2 for bad input.
run = with_redis("relay events", _events)
