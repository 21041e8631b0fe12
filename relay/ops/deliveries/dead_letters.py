"""The dead-letter store as operators read it: entries joined with what their event still says.

The store is the `relay:dead` sorted set (relay.store.keys), scored by when each delivery went
dead. It is read newest first in chunks, and each chunk joined with its event hashes in one
pipelined round trip, so a large store costs a bounded number of round trips per chunk.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from redis import Redis

from relay.ops.pages import IndexWalk, Position
from relay.store import keys
from relay.store.records import (
    attempts_field,
    read_int,
    read_state,
    read_text,
    reason_field,
    state_field,
    targets_of,
)

#: Redis round trips stay few: ids are read and events inspected this many at a time.
CHUNK = 500


@dataclass(frozen=True)
class DeadLetter:
    """One delivery in the dead-letter store, with what its event hash still says about it."""

    event_id: str
    target: str
    dead_at: float
    state: str  # dead | gone ("" when the event has expired)
    source: str
    type: str | None
    received_at: float | None
    attempts: int
    reason: str
    expired: bool  # the event (and its body) is gone: it cannot be replayed

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (times as Unix seconds)."""
        return asdict(self)


@dataclass(frozen=True)
class DeadFilter:
    """Which dead letters an operator means; every field narrows the selection."""

    target: str | None = None
    source: str | None = None
    event_type: str | None = None  # glob, as in routes.toml
    since: float | None = None  # Unix seconds: went dead at or after
    limit: int | None = None  # newest first; None for all
    event_ids: tuple[str, ...] = field(default=())
    until: float | None = None  # Unix seconds: went dead at or before
    state: str | None = None  # dead | gone
    received_from: float | None = None  # the event was received at or after (Unix seconds)
    received_to: float | None = None  # the event was received at or before
    id_prefix: str | None = None  # event ids starting with this


@dataclass(frozen=True)
class DeadPage:
    """One page of dead letters; `next` is where the following page starts (None: no more)."""

    letters: tuple[DeadLetter, ...]
    scanned: int
    partial: bool  # the scan bound stopped the walk before the page was full
    next: Position | None = None


def iter_dead(conn: Redis, since: float | None = None) -> Iterator[tuple[str, str, float]]:
    """(event id, target, dead at) of the dead-letter store, newest first, read in chunks."""
    low: float | str = since if since is not None else "-inf"
    offset = 0
    while True:
        chunk = conn.zrevrangebyscore(
            keys.DEAD, "+inf", low, start=offset, num=CHUNK, withscores=True
        )
        for member, score in cast(list[tuple[bytes, float]], chunk):
            event_id, target = keys.split_dead_member(read_text(member))
            yield event_id, target, float(score)
        if len(chunk) < CHUNK:
            return
        offset += len(chunk)


def dead_of_event(conn: Redis, event_id: str) -> dict[str, float]:
    """The targets of one event that the dead-letter store holds, with when each went dead."""
    found: dict[str, float] = {}
    for member, score in conn.zscan_iter(keys.DEAD, match=f"{event_id}:*", count=1000):
        # The match is a glob: an id with glob characters could match another event's member.
        owner, target = keys.split_dead_member(read_text(member))
        if owner == event_id:
            found[target] = score
    return found


def _dead_letters(conn: Redis, entries: Sequence[tuple[str, str, float]]) -> list[DeadLetter]:
    """Join dead-letter entries with the fields of their event hashes, in one round trip."""
    with conn.pipeline(transaction=False) as pipe:
        for event_id, target, _ in entries:
            pipe.hmget(
                keys.event_key(event_id),
                [
                    "source",
                    "type",
                    "received",
                    state_field(target),
                    attempts_field(target),
                    reason_field(target),
                ],
            )
        rows = pipe.execute()
    letters = []
    for (event_id, target, dead_at), row in zip(entries, rows, strict=True):
        source, etype, received, state, attempts, reason = row
        letters.append(
            DeadLetter(
                event_id=event_id,
                target=target,
                dead_at=dead_at,
                state=read_text(state),
                source=read_text(source),
                type=read_text(etype) or None,
                received_at=float(received) if received else None,
                attempts=read_int(attempts),
                reason=read_text(reason),
                expired=source is None and received is None,
            )
        )
    return letters


def _wanted_entry(entry: Position, selection: DeadFilter, wanted_ids: set[str]) -> bool:
    """The filters a dead-letter member alone decides (no event hash read)."""
    event_id, target = keys.split_dead_member(entry.member)
    if selection.target is not None and target != selection.target:
        return False
    if wanted_ids and event_id not in wanted_ids:
        return False
    return selection.id_prefix is None or event_id.startswith(selection.id_prefix)


def _wanted(letter: DeadLetter, selection: DeadFilter) -> bool:
    """The filters that need the event's fields."""
    if selection.source is not None and letter.source != selection.source:
        return False
    if selection.state is not None and letter.state != selection.state:
        return False
    received = letter.received_at
    if selection.received_from is not None and (
        received is None or received < selection.received_from
    ):
        return False
    if selection.received_to is not None and (received is None or received > selection.received_to):
        return False
    return selection.event_type is None or fnmatch.fnmatchcase(
        letter.type or "", selection.event_type
    )


def page_dead(
    conn: Redis,
    selection: DeadFilter = DeadFilter(),
    *,
    limit: int | None = None,
    start: Position | None = None,
    max_scan: int | None = None,
    deadline: float | None = None,
) -> DeadPage:
    """Dead letters matching `selection`, newest first, after `start`, reading at most
    `max_scan` store entries (None: all of them); `limit` (else selection.limit) per page."""
    limit = limit if limit is not None else selection.limit
    walk = IndexWalk(
        conn,
        keys.DEAD,
        low=selection.since,
        high=selection.until,
        start=start,
        page_size=CHUNK,
        max_scan=max_scan,
        deadline=deadline,
    )
    wanted_ids = set(selection.event_ids)
    found: list[DeadLetter] = []
    stopped_at: Position | None = None
    for page in walk.pages():
        entries = [p for p in page if _wanted_entry(p, selection, wanted_ids)]
        joined = _dead_letters(
            conn, [(*keys.split_dead_member(p.member), p.score) for p in entries]
        )
        for entry, letter in zip(entries, joined, strict=True):
            if _wanted(letter, selection):
                found.append(letter)
                if limit is not None and len(found) >= limit:
                    stopped_at = entry
                    break
        if stopped_at is not None:
            break
    if stopped_at is None and not walk.exhausted:
        stopped_at = walk.last
    full = limit is not None and len(found) >= limit
    return DeadPage(
        letters=tuple(found),
        scanned=walk.scanned,
        partial=not walk.exhausted and not full,
        next=stopped_at,
    )


def list_dead(conn: Redis, selection: DeadFilter = DeadFilter()) -> list[DeadLetter]:
    """Dead letters matching `selection`, newest first (the whole store is read if need be)."""
    return list(page_dead(conn, selection).letters)


def dead_count_by_target(conn: Redis) -> Counter[str]:
    """How many dead letters the store holds now, per target."""
    counts: Counter[str] = Counter()
    for member, _ in conn.zscan_iter(keys.DEAD, count=1000):
        counts[keys.split_dead_member(read_text(member))[1]] += 1
    return counts


def dead_targets_of(conn: Redis, event_id: str) -> list[str]:
    """Targets of one event whose delivery is dead or gone (or in the store, if it expired)."""
    data: Mapping[bytes, bytes] = conn.hgetall(keys.event_key(event_id))  # type: ignore[assignment]
    if data:
        return [
            t
            for t in targets_of(data.get(b"targets"))
            if read_state(data.get(state_field(t).encode())).dead_letter
        ]
    # Expired: the store may still name its deliveries, which replay then reports as expired.
    return sorted(dead_of_event(conn, event_id))
