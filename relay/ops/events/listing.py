"""A filtered listing of stored events for operators (`relay events list`), newest first.

A listing walks the events index (relay.ops.events.walk) newest first in pages, reads only the
small fields of each hash (never the body), and stops after a bounded number of ids so one
command can never scan all of a busy Redis. Rendering is relay.cli.events' job.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from relay.ops.events.walk import EventPosition, EventsWalk
from relay.store import keys, scripts
from relay.store.records import (
    DeliveryState,
    read_int,
    read_state,
    read_text,
    targets_of,
)

#: A listing reads at most this many index entries, so a filter that matches nothing costs a
#: bounded number of round trips (50 pages) instead of a walk over days of events.
MAX_SCAN = 10_000

#: Ids read per page: two pipelined round trips of small HMGETs each.
PAGE_SIZE = 200

#: States a listing can filter on: the delivery states of relay.store.records, plus "unrouted"
#: for events no route matched ("duplicate", a delivery state, is one the worker skipped as an
#: inbound duplicate).
UNROUTED = "unrouted"
STATES = (*(s for s in DeliveryState if s is not DeliveryState.UNKNOWN), UNROUTED)


@dataclass(frozen=True)
class TargetState:
    """The compact per-target state a listing shows."""

    target: str
    state: DeliveryState
    attempts_made: int


@dataclass(frozen=True)
class EventSummary:
    """One line of a listing."""

    id: str
    received_at: float
    source: str
    type: str | None
    targets: tuple[TargetState, ...]

    @property
    def unrouted(self) -> bool:
        """Whether no route matched the event."""
        return not self.targets


@dataclass(frozen=True)
class EventQuery:
    """Filters of a listing; None means "any"."""

    source: str | None = None
    type_glob: str | None = None  # fnmatch pattern, case-sensitive like routes.toml's globs
    target: str | None = None
    state: str | None = None  # one of STATES
    since: float | None = None  # received at or after, Unix seconds
    until: float | None = None  # received at or before, Unix seconds
    id_prefix: str | None = None  # event ids starting with this

    def wants_targets(self, targets: Sequence[str]) -> bool:
        """The filters that the target list alone decides."""
        if self.state == UNROUTED:
            return not targets and self.target is None
        if self.target is not None:
            return self.target in targets
        return self.state is None or bool(targets)

    def wants_states(self, states: Sequence[TargetState]) -> bool:
        """The state filter, on the target named by --target when there is one."""
        if self.state is None or self.state == UNROUTED:
            return True
        return any(
            s.state == self.state for s in states if self.target is None or s.target == self.target
        )


@dataclass(frozen=True)
class EventListing:
    """The result of a listing; `partial` when the scan bound stopped it before the limit."""

    events: tuple[EventSummary, ...]
    scanned: int
    partial: bool
    expired: int  # index entries whose event had expired (removed from the index)
    next: EventPosition | None = None  # where the next page starts; None when nothing is left


def _summaries(
    conn: redis.Redis, ids: Sequence[str], query: EventQuery
) -> tuple[list[EventSummary], list[str]]:
    """The matching summaries of one page of ids, and the ids whose hash has expired.

    One script call reads every row of the page with its targets' states (relay.store's
    `ROWS`): a listing that scans thousands of events for a rare state costs a few calls, not
    two commands per event.
    """
    keys_of = [keys.event_key(event_id) for event_id in ids]
    rows = cast(
        "list[list[Any] | int]",
        conn.eval(scripts.ROWS, len(keys_of), *keys_of, *_narrowing(query)),
    )
    expired: list[str] = []
    found: list[EventSummary] = []
    for event_id, row in zip(ids, rows, strict=True):
        if not isinstance(row, list):
            continue  # the script left it out: a filter of the query refuses it
        source, type_, received, targets_raw, states = row
        if source is None and targets_raw is None:
            expired.append(event_id)
            continue
        summary = _summary(event_id, (source, type_, received, targets_raw), states, query)
        if summary is not None:
            found.append(summary)
    return found, expired


def _narrowing(query: EventQuery) -> tuple[str, str, str, str, str, str]:
    """The ROWS script's filters (ARGV) for `query`: source, target, state, unrouted only,
    received from, received to.

    The script only drops rows these filters refuse; `_summary` applies every filter again.
    """
    unrouted = query.state == UNROUTED
    state = "" if query.state is None or unrouted else query.state
    since = "" if query.since is None else repr(query.since)
    until = "" if query.until is None else repr(query.until)
    return (query.source or "", query.target or "", state, "1" if unrouted else "0", since, until)


def _summary(
    event_id: str,
    row: Sequence[bytes | None],
    states: Sequence[bytes | None],
    query: EventQuery,
) -> EventSummary | None:
    """The event's summary when the filters let it through, else None."""
    source, type_, received, targets_raw = row
    source_text, type_text = read_text(source), read_text(type_)
    if query.source is not None and source_text != query.source:
        return None
    if query.type_glob is not None and not fnmatch.fnmatchcase(type_text, query.type_glob):
        return None
    targets = targets_of(targets_raw)
    if not query.wants_targets(targets):
        return None
    if len(states) != 2 * len(targets):  # a name the script could not read back: read none
        states = [None] * (2 * len(targets))
    target_states = tuple(
        TargetState(t, read_state(states[2 * i]), read_int(states[2 * i + 1]))
        for i, t in enumerate(targets)
    )
    if not query.wants_states(target_states):
        return None
    received_at = float(read_text(received) or 0)
    # The minute lists are walked by whole minutes: the received-time bounds are applied here.
    if query.since is not None and received_at < query.since:
        return None
    if query.until is not None and received_at > query.until:
        return None
    return EventSummary(event_id, received_at, source_text, type_text or None, target_states)


def list_events(
    conn: redis.Redis,
    query: EventQuery | None = None,
    *,
    limit: int = 50,
    max_scan: int = MAX_SCAN,
    page_size: int = PAGE_SIZE,
    prune: bool = True,
    start: EventPosition | None = None,
    deadline: float | None = None,
) -> EventListing:
    """Events newest first matching `query`, after `start`, reading at most `max_scan` entries
    (and no further page after `deadline`, a time.monotonic() value)."""
    query = query or EventQuery()
    limit = max(1, limit)
    walk = EventsWalk(
        conn,
        low=query.since,
        high=query.until,
        start=start,
        page_size=page_size,
        max_scan=max_scan,
        deadline=deadline,
    )
    found: list[EventSummary] = []
    expired: list[str] = []
    stopped_at: EventPosition | None = None
    for page in walk.pages():
        prefix = query.id_prefix
        ids = [p.member for p in page if prefix is None or p.member.startswith(prefix)]
        matches, gone = _summaries(conn, ids, query) if ids else ([], [])
        expired.extend(gone)
        if len(found) + len(matches) >= limit:
            found.extend(matches[: limit - len(found)])
            # The page may go on past the last event returned: the next page starts there.
            last_id = found[-1].id
            stopped_at = next(p for p in page if p.member == last_id)
            break
        found.extend(matches)
    if expired and prune:
        # Lazily drop index entries whose event hash has expired (after the walk: removing them
        # during it would shift the walk's offsets). trim_indexes drops old entries in bulk;
        # this only keeps the next listing from reading these again.
        pipe = conn.pipeline(transaction=False)
        pipe.zrem(keys.EVENTS_INDEX, *expired)
        pipe.zrem(keys.UNROUTED, *expired)
        pipe.execute()
    if stopped_at is None and not walk.exhausted:
        stopped_at = walk.last  # the scan bound: go on after the last entry read
    return EventListing(
        events=tuple(found),
        scanned=walk.scanned,
        partial=not walk.exhausted and len(found) < limit,
        expired=len(expired),
        next=stopped_at,
    )


def latest_by_source(
    conn: redis.Redis, sources: Sequence[str], *, max_scan: int = MAX_SCAN
) -> tuple[dict[str, EventSummary], int]:
    """The newest event of each source (those found within `max_scan` index entries, read
    newest first, stopping once every source has one), and how many entries were read."""
    wanted = set(sources)
    found: dict[str, EventSummary] = {}
    if not wanted:
        return found, 0
    walk = EventsWalk(conn, page_size=PAGE_SIZE, max_scan=max_scan)
    for page in walk.pages():
        pipe = conn.pipeline(transaction=False)
        for entry in page:
            pipe.hmget(keys.event_key(entry.member), ("source", "type", "received"))
        for entry, (source, type_, received) in zip(page, pipe.execute(), strict=True):
            name = read_text(source)
            if name in wanted and name not in found:
                found[name] = EventSummary(
                    entry.member,
                    float(read_text(received) or 0),
                    name,
                    read_text(type_) or None,
                    (),
                )
        if len(found) == len(wanted):
            break
    return found, walk.scanned
