"""The events index as minute lists (relay.store.events_index): written by the intake commit,
walked newest first by listings and the status page, then the sorted set of older events."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from relay.ops.events import EventQuery, list_events
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
        f"evt_{n:026d}", "s", "t", received, "application/json", "POST", (), b"{}", ("crm",)
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
    assert lists == [[events[0].id.encode()], [events[1].id.encode(), events[2].id.encode()]]
    assert redis_client.zrange(keys.EVENTS_MINUTES, 0, -1) == [
        str(minute - 1).encode(),
        str(minute).encode(),
    ]
    ttl = redis_client.ttl(events_index.bucket_key(minute))
    assert RETENTION < ttl <= events_index.bucket_ttl(RETENTION)
    assert not redis_client.exists(keys.EVENTS_INDEX)  # the sorted set is no longer written
    assert indexed(redis_client) == [events[2].id, events[1].id, events[0].id]


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
