"""Read-only views of stored events for operators: one event with its attempts, or a filtered list.

Everything here reads the Redis contract of `relay.store.keys` through a sync client and returns
frozen values; rendering is `relay.cli.events`'s job. A listing walks the `relay:events` index
newest first in pages, reads only the small fields of each hash (never the body), and stops after a
bounded number of ids so one command can never scan all of a busy Redis.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import redis

from relay.store import keys
from relay.store.records import (
    STATE_PREFIX,
    AttemptRecord,
    DeliveryRecord,
    DeliveryState,
    Event,
    attempts_field,
    read_state,
    state_field,
    targets_of,
)

#: A listing reads at most this many index entries, so a filter that matches nothing costs a
#: bounded number of round trips (50 pages) instead of a walk over days of events.
MAX_SCAN = 10_000

#: Ids read per page: two pipelined round trips of small HMGETs each.
PAGE_SIZE = 200

#: `show` reads at most the newest this many attempt records (a list grows with every replay).
MAX_ATTEMPT_RECORDS = 1000

#: States a listing can filter on: the delivery states of relay.store.keys, plus "unrouted" for
#: events no route matched and "duplicate" for deliveries the worker skipped as inbound duplicates.
UNROUTED = "unrouted"
STATES = (*(s for s in DeliveryState if s is not DeliveryState.UNKNOWN), UNROUTED)

_LIST_FIELDS = ("source", "type", "received", "targets")


#: One delivery attempt as the worker recorded it (the store's codec reads it).
Attempt = AttemptRecord


@dataclass(frozen=True)
class DeliveryView:
    """One target of an event: its state and every attempt made to it."""

    target: str
    state: DeliveryState
    attempts_made: int
    reason: str
    before_replay: int  # attempts made before the latest replay, 0 if never replayed
    attempts: tuple[Attempt, ...]


@dataclass(frozen=True)
class EventView:
    """One stored event with its per-target deliveries."""

    event: Event
    deliveries: tuple[DeliveryView, ...]
    expires_in: int | None  # seconds until the event hash expires; None when it has no TTL
    attempts_omitted: int = 0  # older attempt records not read (over MAX_ATTEMPT_RECORDS)

    @property
    def unrouted(self) -> bool:
        """Whether no route matched the event (it was kept for inspection only)."""
        return not self.event.targets


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


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value is not None else ""


def _int(value: bytes | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def _target_names(data: Mapping[bytes, bytes], targets: Iterable[str]) -> list[str]:
    """The event's targets in route order, then any other target the hash has a state for."""
    names = list(dict.fromkeys(targets))
    prefix = STATE_PREFIX.encode()
    for name in data:
        if name.startswith(prefix):
            target = name[len(prefix) :].decode("utf-8", "replace")
            if target not in names:
                names.append(target)
    return names


def get_event(conn: redis.Redis, event_id: str) -> EventView | None:
    """The event with its deliveries and attempts, or None when unknown or expired."""
    key, log_key = keys.event_key(event_id), keys.attempts_key(event_id)
    pipe = conn.pipeline(transaction=False)
    pipe.hgetall(key)
    pipe.ttl(key)
    pipe.llen(log_key)
    pipe.lrange(log_key, -MAX_ATTEMPT_RECORDS, -1)
    data, ttl, total, records = pipe.execute()
    if not data:
        return None
    event = Event.from_redis(event_id, data)
    attempts = [AttemptRecord.from_redis(raw) for raw in records]
    deliveries = []
    for target in _target_names(data, event.targets):
        stored = DeliveryRecord.from_redis(target, data)
        deliveries.append(
            DeliveryView(
                target=target,
                state=stored.state,
                attempts_made=stored.attempts,
                reason=stored.reason,
                before_replay=stored.before_replay,
                attempts=tuple(a for a in attempts if a.target == target),
            )
        )
    # Records for a target the hash does not name (should not happen) are still shown.
    named = {d.target for d in deliveries}
    for target in dict.fromkeys(a.target for a in attempts if a.target not in named):
        mine = tuple(a for a in attempts if a.target == target)
        deliveries.append(DeliveryView(target, DeliveryState.UNKNOWN, len(mine), "", 0, mine))
    return EventView(
        event=event,
        deliveries=tuple(deliveries),
        expires_in=int(ttl) if ttl is not None and ttl >= 0 else None,
        attempts_omitted=max(0, int(total) - len(records)),
    )


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
    candidates: list[tuple[str, str, str, float, list[str]]] = []
    for event_id, (source, type_, received, targets_raw) in zip(ids, rows, strict=True):
        if source is None and targets_raw is None:
            expired.append(event_id)
            continue
        source_text, type_text = _text(source), _text(type_)
        targets = list(targets_of(targets_raw))
        if query.source is not None and source_text != query.source:
            continue
        if query.type_glob is not None and not fnmatch.fnmatchcase(type_text, query.type_glob):
            continue
        if not query.wants_targets(targets):
            continue
        candidates.append((event_id, source_text, type_text, float(_text(received) or 0), targets))
    pipe = conn.pipeline(transaction=False)
    for event_id, *_, targets in candidates:
        fields = [f(t) for t in targets for f in (state_field, attempts_field)]
        pipe.hmget(keys.event_key(event_id), fields or ["source"])
    states_rows = pipe.execute() if candidates else []
    found = []
    for (event_id, source_text, type_text, received_at, targets), values in zip(
        candidates, states_rows, strict=True
    ):
        states = tuple(
            TargetState(t, read_state(values[2 * i]), _int(values[2 * i + 1]))
            for i, t in enumerate(targets)
        )
        if query.wants_states(states):
            found.append(
                EventSummary(event_id, received_at, source_text, type_text or None, states)
            )
    return found, expired


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
