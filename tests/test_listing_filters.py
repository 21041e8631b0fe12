"""The events listing's filters against a plain reading of every event: whatever the events and
the filter, a listing returns exactly the events the filter describes, newest first (the page
script narrows rows in Redis; this proves it never drops one the filters keep), whether the
events are indexed in the minute lists, in the older sorted set, or some in each."""

from __future__ import annotations

import fnmatch

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.core.ids import id_to_bytes
from relay.core.states import DeliveryState
from relay.ops.events import STATES, UNROUTED, EventQuery, list_events
from relay.store import events_index, keys
from relay.store.records import state_field
from tests.support.seed_states import NOW, seed_event

pytestmark = pytest.mark.needs_redis_server

TARGETS = ("crm", "analytics", "billing")
SOURCES = ("fellow", "shop")
TYPES = ("A_1", "A_2", "B_1")
WRITTEN = [s for s in DeliveryState if s is not DeliveryState.UNKNOWN]
#: Seconds between two events: a few share a minute, and the listing crosses minutes.
STEP = 23.0


def st_offset(n: int) -> float:
    """Bounds exactly on an event's time, or half a second past it (within its minute)."""
    return 0.5 if n % 2 else 0.0


events_strategy = st.lists(
    st.tuples(
        st.sampled_from(SOURCES),
        st.sampled_from(TYPES),
        st.dictionaries(
            st.sampled_from(TARGETS),
            st.sampled_from(WRITTEN) | st.none(),  # None: no state field written (pending)
            max_size=3,
        ),
    ),
    min_size=1,
    max_size=12,
)
query_strategy = st.builds(
    EventQuery,
    source=st.none() | st.sampled_from(SOURCES),
    type_glob=st.none() | st.sampled_from(("A_*", "*_1", "B?1")),
    target=st.none() | st.sampled_from(TARGETS),
    state=st.none() | st.sampled_from([str(s) for s in STATES]),
    since=st.none() | st.integers(-1, 12).map(lambda n: NOW + STEP * n + st_offset(n)),
    until=st.none() | st.integers(-1, 12).map(lambda n: NOW + STEP * n - st_offset(n)),
)


def expected(
    stored: list[tuple[str, str, str, dict[str, DeliveryState | None]]], q: EventQuery
) -> list[str]:
    found = []
    for n, (event_id, source, type_, deliveries) in reversed(list(enumerate(stored))):
        received = NOW + STEP * n
        if (q.since is not None and received < q.since) or (
            q.until is not None and received > q.until
        ):
            continue
        states = {t: (s or DeliveryState.PENDING) for t, s in deliveries.items()}
        if q.source is not None and source != q.source:
            continue
        if q.type_glob is not None and not fnmatch.fnmatchcase(type_, q.type_glob):
            continue
        if q.state == UNROUTED:
            if deliveries or q.target is not None:
                continue
        else:
            if q.target is not None and q.target not in deliveries:
                continue
            wanted = [s for t, s in states.items() if q.target is None or t == q.target]
            if q.state is not None and q.state not in wanted:
                continue
        found.append(event_id)
    return found


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=events_strategy, query=query_strategy, older=st.integers(0, 12))
def test_a_listing_returns_exactly_what_its_filters_describe(
    redis_client: redis.Redis,
    events: list[tuple[str, str, dict[str, DeliveryState | None]]],
    query: EventQuery,
    older: int,
) -> None:
    redis_client.flushdb()
    stored = []
    for n, (source, type_, deliveries) in enumerate(events):
        event_id = seed_event(
            redis_client,
            source=source,
            event_type=type_,
            received=NOW + STEP * n,
            deliveries={t: (s or DeliveryState.PENDING, 1, "") for t, s in deliveries.items()},
        )
        for target, state in deliveries.items():
            if state is None:  # as a fresh commit leaves it: no state field at all
                redis_client.hdel(keys.event_key(event_id), state_field(target))
        stored.append((event_id, source, type_, deliveries))
        if n >= older:  # indexed as the intake commit does now: in its minute's list
            redis_client.zrem(keys.EVENTS_INDEX, event_id)
            minute = events_index.minute_of(NOW + STEP * n)
            redis_client.rpush(events_index.bucket_key(minute), id_to_bytes(event_id))
            redis_client.zadd(keys.EVENTS_MINUTES, {str(minute): minute})
    listed = [e.id for e in list_events(redis_client, query, limit=100).events]
    assert listed == expected(stored, query)
