"""A breaker's close makes its target's held deliveries due at once (lua/breaker_record.lua),
against a real redis-server with the clock passed in: retries waiting for their time move to
now, once; a delivery in flight keeps its lease; the claim then keeps to the target's limits."""

from __future__ import annotations

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.store import keys
from relay.store.breakers import Breakers, Transition
from relay.store.control import Limits
from relay.store.deliveries import Store, Wanted
from tests.support.stored import due

NOW = 1_800_000_000.0


def open_breaker(breakers: Breakers) -> None:
    for i in range(3):
        breakers.record("crm", True, 3, 5.0, "HTTP 503", NOW - 100 + i)


def test_a_close_moves_retries_to_now_and_leaves_leases(redis_client: redis.Redis) -> None:
    store, breakers = Store(redis_client, 3600), Breakers(redis_client)
    redis_client.zadd(keys.due_key("crm"), {"in-flight": NOW - 1, "probe": NOW - 1})
    # A breaker target's claim keeps its leases in the in-flight set.
    taken = store.claim([Wanted("crm", 1, NOW + 30, track=True)], 1, NOW - 1)
    assert taken.ids == {"crm": ["in-flight"]}
    assert redis_client.zscore(keys.in_flight_key("crm"), "in-flight") == NOW + 30
    retries = {f"r{i}": NOW + 60 * (i + 1) for i in range(5)}
    redis_client.zadd(keys.due_key("crm"), retries)
    # A lease of a worker that died: over, so its delivery is due already; its slot is dropped.
    redis_client.zadd(keys.in_flight_key("crm"), {"stale": NOW - 5})
    redis_client.zadd(keys.due_key("crm"), {"stale": NOW - 5})
    open_breaker(breakers)

    failed = breakers.record("crm", True, 3, 5.0, "HTTP 503", NOW)
    assert failed.released == 0  # a failure while open moves nothing
    assert due(redis_client, "crm")["r0"] == NOW + 60

    closed = breakers.record("crm", False, 3, 5.0, now=NOW)
    assert (closed.transition, closed.released) == (Transition.CLOSED, 5)
    now_due = due(redis_client, "crm")
    assert {r: now_due[r] for r in retries} == dict.fromkeys(retries, NOW)
    assert now_due["in-flight"] == NOW + 30  # in flight: keeps its lease
    assert now_due["probe"] == NOW - 1  # due already
    assert now_due["stale"] == NOW - 5
    assert redis_client.zrange(keys.in_flight_key("crm"), 0, -1) == [b"in-flight"]

    # A success on a closed breaker moves nothing.
    redis_client.zadd(keys.due_key("crm"), {"later": NOW + 99})
    again = breakers.record("crm", False, 3, 5.0, now=NOW)
    assert (again.transition, again.released) == (Transition.NONE, 0)
    assert due(redis_client, "crm")["later"] == NOW + 99


def test_what_a_close_made_due_is_claimed_within_the_targets_limits(
    redis_client: redis.Redis,
) -> None:
    store, breakers = Store(redis_client, 3600), Breakers(redis_client)
    redis_client.zadd(keys.due_key("crm"), {f"r{i}": NOW + 600 + i for i in range(3000)})
    open_breaker(breakers)
    assert breakers.record("crm", False, 3, 5.0, now=NOW).released == 3000  # in parts
    wanted = [Wanted("crm", 128, NOW + 30, Limits(concurrency=10), track=True)]
    assert len(store.claim(wanted, 256, NOW).ids["crm"]) == 10
    assert store.claim(wanted, 256, NOW).ids == {}  # held by its concurrency
    assert redis_client.zcard(keys.in_flight_key("crm")) == 10


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(threshold=st.integers(1, 4), results=st.lists(st.booleans(), min_size=1, max_size=30))
def test_one_call_counts_results_as_one_call_per_result(
    redis_client: redis.Redis, threshold: int, results: list[bool]
) -> None:
    """A worker counts every result of a tick in one call (Breakers.record_many)."""
    redis_client.flushall()
    breakers = Breakers(redis_client)
    for name in ("one", "each"):
        redis_client.zadd(keys.due_key(name), {f"r{i}": NOW + 60 + i for i in range(3)})
    pairs = [(failed, "HTTP 503" if failed else "") for failed in results]
    batched = breakers.record_many("one", pairs, threshold, 5.0, now=NOW)
    single = [breakers.record("each", f, threshold, 5.0, e, now=NOW) for f, e in pairs]
    assert batched == single
    assert redis_client.hgetall(keys.breaker_key("one")) == redis_client.hgetall(
        keys.breaker_key("each")
    )
    assert due(redis_client, "one") == due(redis_client, "each")
    assert redis_client.exists(keys.breaker_probe_key("one")) == redis_client.exists(
        keys.breaker_probe_key("each")
    )
