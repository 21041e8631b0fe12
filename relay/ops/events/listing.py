"""A filtered listing of stored events for operators (`relay events list`), newest first.

A listing walks the `relay:events` index newest first in pages, reads only the small fields of
each hash (never the body), and stops after a bounded number of ids so one command can never scan
all of a busy Redis. Rendering is relay.cli.events' job.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import cast

import redis

from relay.store import keys
from relay.store.records import (
    DeliveryState,
    attempts_field,
    read_int,
    read_state,
    read_text,
    state_field,
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

_LIST_FIELDS = ("source", "type", "received", "targets")


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
    since: float | None = None  # Unix seconds, inclusive

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


@dataclass
class _Cursor:
    """Position in the index walk: below `score`, after `ties` members at exactly `score`."""

    score: float | str = "+inf"
    ties: int = 0
    seen: set[str] = field(default_factory=set)

    def advance(self, page: Sequence[tuple[bytes, float]]) -> None:
        last = page[-1][1]
        same = sum(1 for _, score in page if score == last)
        self.ties = self.ties + same if last == self.score else same
        self.score = last


def _summaries(
    conn: redis.Redis, ids: Sequence[str], query: EventQuery
) -> tuple[list[EventSummary], list[str]]:
    """The matching summaries of one page of ids, and the ids whose hash has expired."""
    pipe = conn.pipeline(transaction=False)
    for event_id in ids:
        pipe.hmget(keys.event_key(event_id), _LIST_FIELDS)
    rows = pipe.execute()
    expired: list[str] = []
    candidates: list[tuple[EventSummary, list[str]]] = []
    for event_id, row in zip(ids, rows, strict=True):
        source, _, _, targets_raw = row
        if source is None and targets_raw is None:
            expired.append(event_id)
        elif (candidate := _candidate(event_id, row, query)) is not None:
            candidates.append(candidate)
    return _with_states(conn, candidates, query), expired


def _candidate(
    event_id: str, row: Sequence[bytes | None], query: EventQuery
) -> tuple[EventSummary, list[str]] | None:
    """An event the filters on its small fields let through (states not read yet), or None."""
    source, type_, received, targets_raw = row
    source_text, type_text = read_text(source), read_text(type_)
    targets = list(targets_of(targets_raw))
    if query.source is not None and source_text != query.source:
        return None
    if query.type_glob is not None and not fnmatch.fnmatchcase(type_text, query.type_glob):
        return None
    if not query.wants_targets(targets):
        return None
    received_at = float(read_text(received) or 0)
    return EventSummary(event_id, received_at, source_text, type_text or None, ()), targets


def _with_states(
    conn: redis.Redis, candidates: Sequence[tuple[EventSummary, list[str]]], query: EventQuery
) -> list[EventSummary]:
    """The candidates with their targets' states read (one round trip), that the query wants."""
    if not candidates:
        return []
    pipe = conn.pipeline(transaction=False)
    for summary, targets in candidates:
        fields = [f(t) for t in targets for f in (state_field, attempts_field)]
        pipe.hmget(keys.event_key(summary.id), fields or ["source"])
    found = []
    for (summary, targets), values in zip(candidates, pipe.execute(), strict=True):
        states = tuple(
            TargetState(t, read_state(values[2 * i]), read_int(values[2 * i + 1]))
            for i, t in enumerate(targets)
        )
        if query.wants_states(states):
            found.append(replace(summary, targets=states))
    return found


def list_events(
    conn: redis.Redis,
    query: EventQuery | None = None,
    *,
    limit: int = 50,
    max_scan: int = MAX_SCAN,
    page_size: int = PAGE_SIZE,
    prune: bool = True,
) -> EventListing:
    """Events newest first matching `query`, reading at most `max_scan` index entries."""
    query = query or EventQuery()
    low: float | str = query.since if query.since is not None else "-inf"
    cursor = _Cursor()
    found: list[EventSummary] = []
    expired: list[str] = []
    scanned = 0
    exhausted = False
    while len(found) < limit and scanned < max_scan:
        want = min(page_size, max_scan - scanned)
        page = cast(
            "list[tuple[bytes, float]]",
            conn.zrevrangebyscore(
                keys.EVENTS_INDEX, cursor.score, low, start=cursor.ties, num=want, withscores=True
            ),
        )
        # An event indexed again between pages (same score) must not be listed twice.
        ids = [m.decode() for m, _ in page if m.decode() not in cursor.seen]
        scanned += len(page)
        if ids:
            matches, gone = _summaries(conn, ids, query)
            found.extend(matches[: limit - len(found)])
            cursor.seen.update(ids)
            expired.extend(gone)
        if len(page) < want:
            exhausted = True
            break
        cursor.advance(page)
    if expired and prune:
        # Lazily drop index entries whose event hash has expired (after the walk: removing them
        # during it would shift the cursor's offset). trim_indexes drops old entries in bulk;
        # this only keeps the next listing from reading these again.
        pipe = conn.pipeline(transaction=False)
        pipe.zrem(keys.EVENTS_INDEX, *expired)
        pipe.zrem(keys.UNROUTED, *expired)
        pipe.execute()
    return EventListing(
        events=tuple(found),
        scanned=scanned,
        partial=not exhausted and len(found) < limit,
        expired=len(expired),
    )
