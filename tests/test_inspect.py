"""relay.ops.events on a real redis-server, with events seeded as receiver and worker write them."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from relay.core.ids import new_event_id
from relay.core.states import DeliveryState
from relay.ops.events import (
    MAX_ATTEMPT_RECORDS,
    Attempt,
    EventQuery,
    TargetState,
    get_event,
    list_events,
)
from relay.store import keys
from relay.store.retention import trim_indexes
from tests.support.seed_states import LISTING_NOW as NOW
from tests.support.seed_states import LISTING_RETENTION as RETENTION
from tests.support.seed_states import logged_attempt as record
from tests.support.seed_states import seed_received_event as seed_event

#: A fixed "now" (2026-11-05T10:00:00Z) so received times and outputs are exact.
# -- get_event ---------------------------------------------------------------------------------


def test_get_event_returns_fields_deliveries_and_attempts(redis_client: redis.Redis) -> None:
    event_id = seed_event(
        redis_client,
        targets=("crm", "analytics"),
        states={"crm": (DeliveryState.DELIVERED, 1), "analytics": (DeliveryState.RETRYING, 2)},
        reasons={"analytics": "HTTP 503"},
        attempts=[
            record("crm", 1, NOW + 0.1),
            record("analytics", 1, NOW + 0.1, status=503, outcome="retry", response="busy"),
            record("analytics", 2, NOW + 5, status=None, error="timeout", outcome="retry"),
        ],
    )
    view = get_event(redis_client, event_id)
    assert view is not None
    assert view.event.id == event_id
    assert view.event.source == "fellow"
    assert view.event.type == "COURSEMEMBER_ADDED"
    assert view.event.received_at == NOW
    assert view.event.body == b"event=COURSEMEMBER_ADDED&id=42"
    assert view.event.headers == (("x-fellow-event", "COURSEMEMBER_ADDED"),)
    assert not view.unrouted
    assert 0 < (view.expires_in or 0) <= RETENTION
    crm, analytics = view.deliveries
    assert (crm.target, crm.state, crm.attempts_made, crm.reason) == ("crm", "delivered", 1, "")
    assert crm.attempts == (
        Attempt("crm", 1, NOW + 0.1, 0.012, 200, "", "delivered", '{"ok":true}'),
    )
    assert (analytics.state, analytics.attempts_made) == ("retrying", 2)
    assert analytics.reason == "HTTP 503"
    assert [(a.attempt, a.status, a.error) for a in analytics.attempts] == [
        (1, 503, ""),
        (2, None, "timeout"),
    ]


def test_get_event_unknown_or_expired_is_none(redis_client: redis.Redis) -> None:
    assert get_event(redis_client, new_event_id()) is None
    event_id = seed_event(redis_client)
    redis_client.delete(keys.event_key(event_id))  # what expiry does
    assert get_event(redis_client, event_id) is None


def test_get_event_unrouted_and_replayed(redis_client: redis.Redis) -> None:
    unrouted = get_event(redis_client, seed_event(redis_client, targets=(), type_=None))
    assert unrouted is not None
    assert unrouted.unrouted
    assert unrouted.deliveries == ()
    assert unrouted.event.type is None
    replayed_id = seed_event(
        redis_client, states={"crm": (DeliveryState.PENDING, 10)}, replayed={"crm": 10}
    )
    replayed = get_event(redis_client, replayed_id)
    assert replayed is not None
    assert replayed.deliveries[0].before_replay == 10
    assert replayed.deliveries[0].attempts_made == 10


def test_get_event_keeps_records_of_a_target_no_longer_listed(redis_client: redis.Redis) -> None:
    event_id = seed_event(redis_client, attempts=[record("old", 1, NOW)])
    view = get_event(redis_client, event_id)
    assert view is not None
    assert [(d.target, d.state, len(d.attempts)) for d in view.deliveries] == [
        ("crm", "pending", 0),
        ("old", "unknown", 1),
    ]


def test_get_event_reads_only_the_newest_attempt_records(redis_client: redis.Redis) -> None:
    many = [record("crm", i, NOW + i) for i in range(1, MAX_ATTEMPT_RECORDS + 6)]
    view = get_event(redis_client, seed_event(redis_client, attempts=many))
    assert view is not None
    assert view.attempts_omitted == 5
    assert view.deliveries[0].attempts[0].attempt == 6
    assert len(view.deliveries[0].attempts) == MAX_ATTEMPT_RECORDS


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"not json", Attempt.unreadable("unreadable attempt record: b'not json'")),
        (b"[1, 2]", Attempt.unreadable("unreadable attempt record: b'[1, 2]'")),
        (
            b'{"target": "crm", "attempt": "3", "at": "2026-11-05T10:00:00Z", "duration_ms": 250,'
            b' "status": 500, "outcome": "retry"}',
            Attempt("crm", 3, NOW, 0.25, 500, "", "retry", ""),
        ),
        (
            b'{"target": "crm", "attempt": 1, "at": 1.5, "duration": 0.5, "status": null,'
            b' "error": "connection refused", "outcome": "retry", "response": null}',
            Attempt("crm", 1, 1.5, 0.5, None, "connection refused", "retry", ""),
        ),
    ],
)
def test_attempt_records_are_parsed_tolerantly(raw: bytes, expected: Attempt) -> None:
    assert Attempt.from_redis(raw) == expected


# -- list_events -------------------------------------------------------------------------------


def _ids(conn: redis.Redis, query: EventQuery | None = None, **kwargs: Any) -> list[str]:
    return [e.id for e in list_events(conn, query, **kwargs).events]


def test_list_is_newest_first_with_compact_states(redis_client: redis.Redis) -> None:
    older = seed_event(
        redis_client, received=NOW - 60, states={"crm": (DeliveryState.DELIVERED, 1)}
    )
    newer = seed_event(
        redis_client,
        received=NOW,
        source="chalk",
        type_="element_published",
        targets=("crm", "analytics"),
        states={"crm": (DeliveryState.DELIVERED, 2), "analytics": (DeliveryState.RETRYING, 3)},
    )
    listing = list_events(redis_client)
    assert [e.id for e in listing.events] == [newer, older]
    assert listing.events[0].source == "chalk"
    assert listing.events[0].type == "element_published"
    assert listing.events[0].received_at == NOW
    assert listing.events[0].targets == (
        TargetState("crm", "delivered", 2),
        TargetState("analytics", "retrying", 3),
    )
    assert (listing.scanned, listing.partial, listing.expired) == (2, False, 0)


def test_list_filters(redis_client: redis.Redis) -> None:
    a = seed_event(redis_client, received=NOW - 7200, states={"crm": (DeliveryState.DELIVERED, 1)})
    b = seed_event(
        redis_client,
        received=NOW - 60,
        type_="COURSEMEMBER_REMOVED",
        targets=("crm", "analytics"),
        states={"crm": (DeliveryState.DEAD, 10), "analytics": (DeliveryState.DELIVERED, 1)},
    )
    c = seed_event(redis_client, received=NOW - 30, source="chalk", type_="x", targets=())
    d = seed_event(redis_client, received=NOW, source="chalk", type_=None, targets=())

    assert _ids(redis_client, EventQuery(source="chalk")) == [d, c]
    assert _ids(redis_client, EventQuery(type_glob="COURSEMEMBER_*")) == [b, a]
    assert _ids(redis_client, EventQuery(type_glob="*REMOVED")) == [b]
    assert _ids(redis_client, EventQuery(target="analytics")) == [b]
    assert _ids(redis_client, EventQuery(state="dead")) == [b]
    assert _ids(redis_client, EventQuery(state="delivered")) == [b, a]
    # --state applies to the --target when both are given.
    assert _ids(redis_client, EventQuery(target="crm", state="delivered")) == [a]
    assert _ids(redis_client, EventQuery(target="analytics", state="dead")) == []
    assert _ids(redis_client, EventQuery(state="unrouted")) == [d, c]
    assert _ids(redis_client, EventQuery(state="unrouted", target="crm")) == []
    assert _ids(redis_client, EventQuery(since=NOW - 60)) == [d, c, b]
    assert _ids(redis_client, EventQuery(source="fellow", since=NOW - 60)) == [b]
    assert _ids(redis_client, limit=2) == [d, c]


def test_list_pages_through_ties_without_losing_or_repeating(redis_client: redis.Redis) -> None:
    # Split ASP.NET notifications share one received time: ties must page correctly.
    seeded = [seed_event(redis_client, received=NOW - (i // 7)) for i in range(30)]
    listing = list_events(redis_client, limit=100, page_size=4)
    assert sorted(e.id for e in listing.events) == sorted(seeded)
    assert len(listing.events) == 30
    assert [e.received_at for e in listing.events] == sorted(
        (e.received_at for e in listing.events), reverse=True
    )
    assert (listing.scanned, listing.partial) == (30, False)


def test_list_limit_stops_before_reading_everything(redis_client: redis.Redis) -> None:
    for i in range(25):
        seed_event(redis_client, received=NOW - i)
    listing = list_events(redis_client, limit=3, page_size=10)
    assert len(listing.events) == 3
    assert listing.scanned == 10
    assert not listing.partial


def test_list_scan_is_bounded_and_says_partial(redis_client: redis.Redis) -> None:
    match = seed_event(redis_client, received=NOW - 1000, source="rare")
    for i in range(20):
        seed_event(redis_client, received=NOW - i)
    listing = list_events(redis_client, EventQuery(source="rare"), max_scan=12, page_size=5)
    assert listing.events == ()
    assert listing.scanned == 12
    assert listing.partial
    full = list_events(redis_client, EventQuery(source="rare"), page_size=5)
    assert [e.id for e in full.events] == [match]
    assert not full.partial


def test_list_skips_and_prunes_expired_events(redis_client: redis.Redis) -> None:
    kept = seed_event(redis_client, received=NOW)
    gone = seed_event(redis_client, received=NOW - 10, targets=())
    redis_client.delete(keys.event_key(gone))
    listing = list_events(redis_client)
    assert [e.id for e in listing.events] == [kept]
    assert listing.expired == 1
    assert redis_client.zscore(keys.EVENTS_INDEX, gone) is None
    assert redis_client.zscore(keys.UNROUTED, gone) is None
    assert redis_client.zscore(keys.EVENTS_INDEX, kept) == NOW


def test_list_never_reads_bodies(redis_client: redis.Redis) -> None:
    seed_event(redis_client, body=b"x" * 100_000)
    redis_client.config_resetstat()
    list_events(redis_client)
    stats = redis_client.info("commandstats")
    assert "cmdstat_hmget" in stats
    assert "cmdstat_hgetall" not in stats
    assert "cmdstat_hget" not in stats


def test_list_of_an_empty_store(redis_client: redis.Redis) -> None:
    listing = list_events(redis_client)
    assert (listing.events, listing.scanned, listing.partial) == ((), 0, False)


# -- retention -----------------------------------------------------------------------------------


def test_trim_indexes_removes_only_entries_older_than_retention(redis_client: redis.Redis) -> None:
    old = seed_event(redis_client, received=NOW - RETENTION - 1, targets=())
    edge = seed_event(redis_client, received=NOW - RETENTION, dead_at={"crm": NOW - RETENTION})
    new = seed_event(
        redis_client,
        received=NOW - 3600,
        dead_at={"crm": NOW - 3600},
    )
    redis_client.zadd(keys.DEAD, {keys.dead_member(old, "crm"): NOW - RETENTION - 5})
    trimmed = trim_indexes(redis_client, RETENTION, NOW)
    assert (trimmed.events, trimmed.unrouted, trimmed.dead) == (1, 1, 1)
    assert redis_client.zrange(keys.EVENTS_INDEX, 0, -1) == [edge.encode(), new.encode()]
    assert redis_client.zcard(keys.UNROUTED) == 0
    assert redis_client.zrange(keys.DEAD, 0, -1) == [
        keys.dead_member(edge, "crm").encode(),
        keys.dead_member(new, "crm").encode(),
    ]
    again = trim_indexes(redis_client, RETENTION, NOW)
    assert (again.events, again.unrouted, again.dead) == (0, 0, 0)


def test_event_keys_written_by_the_contract_expire_within_retention(
    redis_client: redis.Redis,
) -> None:
    retention = 3600.0
    event_id = seed_event(redis_client, retention=retention, attempts=[record("crm", 1, NOW)])
    for key in (keys.event_key(event_id), keys.attempts_key(event_id)):
        ttl = redis_client.ttl(key)
        assert 0 < ttl <= retention, key
    view = get_event(redis_client, event_id)
    assert view is not None
    assert view.expires_in is not None
    assert 0 < view.expires_in <= retention
