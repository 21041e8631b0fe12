"""The circuit breaker's rules (pure) and its Redis scripts, against a real redis-server.

The scripts must apply exactly the pure rules: random sequences of results go through both and
every step is compared (failures in a row, open or not, the transition reported).
"""

from __future__ import annotations

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.store import keys
from relay.store.breakers import (
    OPENED_AT_FIELD,
    Breakers,
    BreakerState,
    Gate,
    Transition,
    after_attempt,
    describe_breaker,
    forget_breakers,
    gate_of,
    held,
    read_breakers,
)

NOW = 1_800_000_000.0


# -- the pure rules -----------------------------------------------------------------------------


def test_failures_in_a_row_open_it_at_the_threshold_and_only_then() -> None:
    state = BreakerState("crm")
    for n in range(1, 3):
        state, change = after_attempt(state, True, 3, NOW + n, "HTTP 503")
        assert (state.failures, state.is_open, change) == (n, False, Transition.NONE)
    state, change = after_attempt(state, True, 3, NOW + 3, "timeout after 2s")
    assert change is Transition.OPENED
    assert state.opened_at == NOW + 3
    assert (state.failures, state.last_error, state.last_at) == (3, "timeout after 2s", NOW + 3)
    # Failures while open (a failed probe, or attempts already under way) keep it open.
    state, change = after_attempt(state, True, 3, NOW + 9, "HTTP 500")
    assert (state.failures, state.opened_at, change) == (4, NOW + 3, Transition.NONE)


def test_a_success_starts_the_count_again_and_closes_an_open_breaker() -> None:
    state, _ = after_attempt(BreakerState("crm"), True, 3, NOW)
    state, change = after_attempt(state, False, 3, NOW + 1)
    assert (state, change) == (BreakerState("crm"), Transition.NONE)
    for n in range(3):
        state, change = after_attempt(state, True, 3, NOW + n)
    assert change is Transition.OPENED
    state, change = after_attempt(state, False, 3, NOW + 10)
    assert (state, change) == (BreakerState("crm"), Transition.CLOSED)


def test_a_threshold_of_one_opens_at_the_first_failure() -> None:
    _, change = after_attempt(BreakerState("crm"), True, 1, NOW)
    assert change is Transition.OPENED


def test_the_gate_of_a_closed_breaker_lets_everything_through() -> None:
    assert gate_of(False, False) is Gate.CLOSED
    assert gate_of(False, True) is Gate.CLOSED  # a stale probe key means nothing when closed
    assert gate_of(True, False) is Gate.PROBE
    assert gate_of(True, True) is Gate.HELD
    assert [Gate.CLOSED.limit, Gate.PROBE.limit, Gate.HELD.limit] == [None, 1, 0]


def test_an_open_breaker_is_described_the_same_way_everywhere() -> None:
    state = BreakerState("crm", 20, NOW - 240, "HTTP 503", NOW - 3, probe_in=12.4)
    assert describe_breaker(state, NOW) == (
        "open since 2027-01-15T07:56:00.000Z (4m ago) after 20 failed attempts in a row "
        "(last: HTTP 503); next probe in 12s"
    )
    assert describe_breaker(BreakerState("crm", 20, NOW, probe_in=None), NOW).endswith(
        "next probe due now"
    )
    assert state.to_view() == {
        "state": "open",
        "failures": 20,
        "since": "2027-01-15T07:56:00.000Z",
        "at": NOW - 240,
        "last_error": "HTTP 503",
        "last_at": NOW - 3,
        "next_probe_in": 12.4,
    }
    closed = BreakerState("crm", 2).to_view()
    assert (closed["state"], closed["since"], closed["next_probe_in"]) == ("closed", None, None)


# -- the scripts --------------------------------------------------------------------------------


@pytest.fixture
def breakers(redis_client: redis.Redis) -> Breakers:
    return Breakers(redis_client)


def test_the_script_opens_once_arms_the_first_probe_and_closes_on_success(
    redis_client: redis.Redis, breakers: Breakers
) -> None:
    results = [breakers.record("crm", True, 3, 5.0, "HTTP 503", NOW + i) for i in range(5)]
    assert [r.transition for r in results] == [
        Transition.NONE, Transition.NONE, Transition.OPENED, Transition.NONE, Transition.NONE,
    ]  # fmt: skip
    assert [r.failures for r in results] == [1, 2, 3, 4, 5]
    assert results[2].opened_at == NOW + 2
    # The first probe is due one interval after the opening, not at once.
    ttl = redis_client.pttl(keys.breaker_probe_key("crm"))
    assert 0 < ttl <= 5000
    assert redis_client.sismember(keys.BREAKERS, "crm")
    [state] = read_breakers(redis_client, ["crm", "other"]).values()
    assert (state.failures, state.opened_at, state.last_error) == (5, NOW + 2, "HTTP 503")
    assert state.probe_in is not None
    assert 0 < state.probe_in <= 5

    closed = breakers.record("crm", False, 3, 5.0, now=NOW + 60)
    assert (closed.transition, closed.failures, closed.opened_at) == (Transition.CLOSED, 5, NOW + 2)
    assert not redis_client.exists(keys.breaker_key("crm"), keys.breaker_probe_key("crm"))
    assert not redis_client.sismember(keys.BREAKERS, "crm")
    again = breakers.record("crm", False, 3, 5.0, now=NOW + 61)
    assert again.transition is Transition.NONE  # closing is reported once


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    threshold=st.integers(1, 6),
    results=st.lists(st.booleans(), max_size=40),
)
def test_the_script_follows_the_pure_rules(
    redis_client: redis.Redis, breakers: Breakers, threshold: int, results: list[bool]
) -> None:
    redis_client.delete(keys.breaker_key("t"), keys.breaker_probe_key("t"), keys.BREAKERS)
    model = BreakerState("t")
    for i, failed in enumerate(results):
        now = NOW + i
        model, change = after_attempt(model, failed, threshold, now, "HTTP 500")
        got = breakers.record("t", failed, threshold, 30.0, "HTTP 500", now)
        assert got.transition is change
        if change is not Transition.CLOSED:
            assert got.failures == model.failures
        stored = read_breakers(redis_client, ["t"]).get("t", BreakerState("t"))
        assert stored.failures == model.failures
        assert stored.opened_at == model.opened_at
        assert stored.last_at == model.last_at


def test_one_probe_per_interval_across_callers_and_none_while_closed(
    redis_client: redis.Redis, breakers: Breakers
) -> None:
    assert breakers.gate([("crm", 5.0)], "a") == {"crm": Gate.CLOSED}
    for _ in range(3):
        breakers.record("crm", True, 3, 5.0, "HTTP 503", NOW)
    # Opening armed the probe key: the first probe waits one interval.
    assert breakers.gate([("crm", 5.0)], "a") == {"crm": Gate.HELD}
    assert held(redis_client, ["crm"]) == {"crm"}
    redis_client.delete(keys.breaker_probe_key("crm"))  # the interval passes
    assert held(redis_client, ["crm"]) == set()  # read-only: nothing taken
    assert breakers.gate([("crm", 5.0)], "a") == {"crm": Gate.PROBE}
    assert breakers.gate([("crm", 5.0)], "b") == {"crm": Gate.HELD}  # one caller wins
    assert redis_client.get(keys.breaker_probe_key("crm")) == b"a"
    assert 0 < redis_client.pttl(keys.breaker_probe_key("crm")) <= 5000
    assert held(redis_client, ["crm"]) == {"crm"}


def test_a_probe_taken_for_nothing_is_given_back_only_by_its_taker(
    redis_client: redis.Redis, breakers: Breakers
) -> None:
    for _ in range(2):
        breakers.record("crm", True, 2, 5.0, "HTTP 503", NOW)
    redis_client.delete(keys.breaker_probe_key("crm"))
    assert breakers.gate([("crm", 5.0)], "mine") == {"crm": Gate.PROBE}
    assert breakers.release(["crm"], "someone else") == 0
    assert redis_client.exists(keys.breaker_probe_key("crm"))
    assert breakers.release(["crm"], "mine") == 1
    assert breakers.gate([("crm", 5.0)], "next") == {"crm": Gate.PROBE}
    assert breakers.release([], "mine") == 0


def test_gates_of_several_targets_in_one_call(
    redis_client: redis.Redis, breakers: Breakers
) -> None:
    breakers.record("down", True, 1, 5.0, "HTTP 503", NOW)
    breakers.record("flaky", True, 5, 5.0, "HTTP 503", NOW)
    redis_client.delete(keys.breaker_probe_key("down"))
    gates = breakers.gate([("up", 5.0), ("down", 5.0), ("flaky", 5.0)], "a")
    assert gates == {"up": Gate.CLOSED, "down": Gate.PROBE, "flaky": Gate.CLOSED}
    assert breakers.gate([], "a") == {}


def test_records_of_targets_without_a_breaker_are_forgotten(
    redis_client: redis.Redis, breakers: Breakers
) -> None:
    breakers.record("kept", True, 1, 5.0, "HTTP 503", NOW)
    breakers.record("removed", True, 1, 5.0, "HTTP 503", NOW)
    breakers.record("failing", True, 9, 5.0, "HTTP 503", NOW)
    dropped = forget_breakers(redis_client, {"kept"})
    assert sorted((s.target, s.is_open) for s in dropped) == [
        ("failing", False),
        ("removed", True),
    ]
    assert set(read_breakers(redis_client, ["kept", "removed", "failing"])) == {"kept"}
    assert redis_client.smembers(keys.BREAKERS) == {b"kept"}
    assert not redis_client.exists(keys.breaker_probe_key("removed"))
    assert forget_breakers(redis_client, {"kept"}) == []


def test_a_record_written_by_hand_reads_tolerantly(redis_client: redis.Redis) -> None:
    redis_client.hset(keys.breaker_key("crm"), mapping={OPENED_AT_FIELD: "soon", "failures": "x"})
    [state] = read_breakers(redis_client, ["crm"]).values()
    assert (state.failures, state.opened_at, state.is_open) == (0, None, False)
