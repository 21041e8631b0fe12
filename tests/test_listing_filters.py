"""The events listing's filters against a plain reading of every event: whatever the events and
the filter, a listing returns exactly the events the filter describes, newest first (the page
script narrows rows in Redis; this proves it never drops one the filters keep)."""

from __future__ import annotations

import fnmatch

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.core.states import DeliveryState
from relay.ops.events import STATES, UNROUTED, EventQuery, list_events
from relay.store import keys
from relay.store.records import state_field
from tests.support.seed_states import NOW, seed_event

pytestmark = pytest.mark.needs_redis_server

TARGETS = ("crm", "analytics", "billing")
SOURCES = ("fellow", "shop")
TYPES = ("A_1", "A_2", "B_1")
WRITTEN = [s for s in DeliveryState if s is not DeliveryState.UNKNOWN]

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
)


def expected(
    stored: list[tuple[str, str, str, dict[str, DeliveryState | None]]], q: EventQuery
) -> list[str]:
    found = []
    for event_id, source, type_, deliveries in reversed(stored):
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
@given(events=events_strategy, query=query_strategy)
def test_a_listing_returns_exactly_what_its_filters_describe(
    redis_client: redis.Redis,
    events: list[tuple[str, str, dict[str, DeliveryState | None]]],
    query: EventQuery,
) -> None:
    redis_client.flushdb()
    stored = []
    for n, (source, type_, deliveries) in enumerate(events):
        event_id = seed_event(
            redis_client,
            source=source,
            event_type=type_,
            received=NOW + n,
            deliveries={t: (s or DeliveryState.PENDING, 1, "") for t, s in deliveries.items()},
        )
        for target, state in deliveries.items():
            if state is None:  # as a fresh commit leaves it: no state field at all
                redis_client.hdel(keys.event_key(event_id), state_field(target))
        stored.append((event_id, source, type_, deliveries))
    listed = [e.id for e in list_events(redis_client, query, limit=100).events]
    assert listed == expected(stored, query)
