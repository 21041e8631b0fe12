"""The events index as minute lists (relay.store.events_index): written by the intake commit,
walked newest first by listings and the status page, then the sorted set of older events."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import pytest
import redis

from relay.core.ids import derived_event_id, id_to_bytes
from relay.ops.events import EventQuery, list_events
from relay.ops.events.walk import MinutePosition, event_cursor
from relay.ops.pages import Position
from relay.ops.status_page.reads import read_recent_attempts
from relay.store import events_index, keys
from relay.store.commit import commit_arguments
from relay.store.queue import make_queue
from relay.store.records import Event
from relay.store.retention import trim_indexes
from tests.support.seed_states import seed_event
from tests.support.stored import indexed

RETENTION = 3600.0


@dataclass(frozen=True)
class Batch:
    events: Sequence[Event]
    dedupe_window: int = 0


def event(n: int, received: float) -> Event:
    return Event(
        f"evt_{n:025d}0", "s", "t", received, "application/json", "POST", (), b"{}", ("crm",)
    )


def commit(conn: redis.Redis, events: Sequence[Event], now: float) -> None:
    call = commit_arguments([Batch(events)], RETENTION, now, make_queue(conn).key)
    conn.execute_command(*call.command())


def test_the_commit_indexes_each_event_in_its_minute_list(redis_client: redis.Redis) -> None:
    now = time.time()
    minute = events_index.minute_of(now)
    start = minute * 60.0
    events = [event(1, start - 30), event(2, start + 1), event(3, start + 2)]
    commit(redis_client, events, now)
    lists = [redis_client.lrange(events_index.bucket_key(m), 0, -1) for m in (minute - 1, minute)]
    # Each entry is the id's 16-byte compact form, not its 30 characters.
    assert lists == [
        [id_to_bytes(events[0].id)],
        [id_to_bytes(events[1].id), id_to_bytes(events[2].id)],
    ]
    assert {len(entry) for entries in lists for entry in entries} == {16}
    assert redis_client.zrange(keys.EVENTS_MINUTES, 0, -1) == [
        str(minute - 1).encode(),
        str(minute).encode(),
    ]
    ttl = redis_client.ttl(events_index.bucket_key(minute))
    assert RETENTION < ttl <= events_index.bucket_ttl(RETENTION)
    assert not redis_client.exists(keys.EVENTS_INDEX)  # the sorted set is no longer written
    assert indexed(redis_client) == [events[2].id, events[1].id, events[0].id]


def test_derived_ids_read_back_from_the_minute_lists(redis_client: redis.Redis) -> None:
    now = time.time()
    parent = event(7, now)
    split = [replace(parent, id=derived_event_id(parent.id, i)) for i in (0, 1, 12)]
    commit(redis_client, split, now)
    entries = redis_client.lrange(events_index.bucket_key(events_index.minute_of(now)), 0, -1)
    assert entries == [id_to_bytes(e.id) for e in split]
    assert entries[2] == id_to_bytes(parent.id) + b"-12"
    newest = [e.id for e in reversed(split)]
    assert events_index.newest_ids(redis_client, 5) == newest
    assert [e.id for e in list_events(redis_client, limit=10, page_size=2).events] == newest


def test_a_listing_walks_the_minute_lists_then_the_events_stored_before(
    redis_client: redis.Redis,
) -> None:
    now = time.time()
    old = [seed_event(redis_client, received=now - 600 - n) for n in range(3)]  # sorted set
    new = [event(n, now - 120 * n) for n in range(5)]
    commit(redis_client, list(reversed(new)), now)
    listing = list_events(redis_client, limit=100, page_size=2)
    assert [e.id for e in listing.events] == [e.id for e in new] + old
    assert (listing.scanned, listing.partial) == (8, False)
    # Bounded: at most max_scan ids are read, newest first.
    listing = list_events(redis_client, EventQuery(source="nobody"), max_scan=3, page_size=2)
    assert (listing.events, listing.scanned, listing.partial) == ((), 3, True)
    # `since` stops the walk at its minute and drops what that minute holds before it.
    since = now - 240
    listing = list_events(redis_client, EventQuery(since=since), limit=100)
    assert [e.id for e in listing.events] == [e.id for e in new[:3]]
    # The status page's newest events come from both too.
    assert {a.event_id for a in read_recent_attempts(redis_client, events=7)} <= {
        *(e.id for e in new),
        *old,
    }
    assert events_index.newest_ids(redis_client, 7) == [e.id for e in new] + old[:2]


def test_retention_trims_the_minutes_and_the_lists_expire(redis_client: redis.Redis) -> None:
    now = time.time()
    commit(redis_client, [event(1, now - 200), event(2, now - 60)], now)
    # Later, the cutoff is 100 s before `now`: the minute of event 1 is wholly before it.
    trimmed = trim_indexes(redis_client, RETENTION, now + RETENTION - 100)
    assert trimmed.minutes == 1
    assert indexed(redis_client) == [event(2, 0).id]
    assert redis_client.ttl(events_index.bucket_key(events_index.minute_of(now - 60))) > 0


def walk_pages(conn: redis.Redis, limit: int, between: Callable[[int], None]) -> list[list[str]]:
    """Every page of a listing, `limit` at a time, going on from each page's cursor as the API
    does (through its text); `between(n)` runs after page n."""
    pages: list[list[str]] = []
    start = None
    for n in range(50):  # bounded
        listing = list_events(conn, limit=limit, start=start, page_size=2)
        pages.append([e.id for e in listing.events])
        between(n)
        if listing.next is None:
            return pages
        start = event_cursor(listing.next.to_cursor())
    raise AssertionError("the walk did not end")


def test_a_cursor_stays_put_across_minutes_while_events_arrive(redis_client: redis.Redis) -> None:
    now = time.time()
    minute = events_index.minute_of(now) * 60.0
    # Three minutes of three events each; the newest minute is the current one.
    stored = [event(10 * m + i, minute - 60 * m + i) for m in (2, 1, 0) for i in range(3)]
    commit(redis_client, stored, now)
    arrived: list[Event] = []

    def arrive(n: int) -> None:
        # New events land at the end of the current minute's list, and of an older minute's.
        late = [event(100 + 2 * n, minute + 5), event(101 + 2 * n, minute - 60 + 5)]
        commit(redis_client, late, now)
        arrived.extend(late)

    pages = walk_pages(redis_client, 2, arrive)
    seen = [i for page in pages for i in page]
    newest_first = [e.id for e in reversed(stored)]
    assert [i for i in seen if i in newest_first] == newest_first
    assert len(seen) == len(set(seen))
    # An event that arrived in a minute the walk had not reached yet is listed in its place.
    assert set(seen) - set(newest_first) <= {e.id for e in arrived if e.received_at < minute}


def test_a_cursor_goes_on_across_the_minute_lists_into_the_older_sorted_set(
    redis_client: redis.Redis,
) -> None:
    now = time.time()
    old = [seed_event(redis_client, received=now - 900 - n) for n in range(5)]  # sorted set
    new = [event(n, now - 70 * n) for n in range(3)]
    commit(redis_client, list(reversed(new)), now)
    pages = walk_pages(redis_client, 2, lambda n: None)
    # The last page is empty: the one before it ended at the limit, with a cursor.
    assert pages == [[new[0].id, new[1].id], [new[2].id, old[0]], old[1:3], old[3:5], []]
    # The cursor of the second page names a position in the sorted set.
    first = list_events(redis_client, limit=4)
    assert isinstance(first.next, Position)
    second = list_events(redis_client, limit=4, start=event_cursor(first.next.to_cursor()))
    assert [e.id for e in second.events] == old[1:]
    # Filters by received time: by minute in the lists, exactly in each event.
    until = now - 70 + 0.5
    listing = list_events(redis_client, EventQuery(until=until, since=now - 901), limit=100)
    assert [e.id for e in listing.events] == [new[1].id, new[2].id, old[0], old[1]]


def test_minute_cursors_round_trip_and_others_are_refused() -> None:
    position = MinutePosition(29_000_000, 7, "")
    assert event_cursor(position.to_cursor()) == position
    older = Position(1.5, "evt_1")
    assert event_cursor(older.to_cursor()) == older
    for text in ("", "garbage!", MinutePosition(1, 2, "").to_cursor()[:-3], "x" * 600):
        with pytest.raises(ValueError, match="not a cursor"):
            event_cursor(text)
