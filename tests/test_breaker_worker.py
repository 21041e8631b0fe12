"""The circuit breaker in the delivery job, in-process, against a real redis-server and loopback
targets: opening holds deliveries without using attempts, one probe per interval, a success
re-drives everything held, pause wins, and what is logged and counted.

"The interval passes" is written as deleting the probe key, which is what its PX expiry does:
no test here waits for time.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from relay.config.loading import parse_routes
from relay.config.model import RouteTable
from relay.core.metrics import render
from relay.store import keys
from relay.store.breakers import read_breakers
from tests.support.metrics import samples, value
from tests.support.seed_events import make_event, routes_toml, store_events
from tests.support.stored import due, field, states
from tests.support.targets import TargetServer, refused_url
from worker import jobs, recording
from worker.breaker import close_removed_breakers
from worker.context import current
from worker.exporter import build_registry
from worker.outcome import next_step
from worker.pause import pause_target, resume_target
from worker.poller import kick_if_due
from worker.runtime import get_runtime

FAST = {"attempts": 5, "first": "1s", "max": "1s"}
BREAKER = {"failures": 3, "probe": "5s"}


@pytest.fixture(autouse=True)
def full_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every retry waits its whole cap: a failed delivery is not due again within the kick."""
    monkeypatch.setattr(recording, "next_step", partial(next_step, uniform=lambda low, high: high))


def routes_for(url: str, **extra: Any) -> RouteTable:
    spec = {"crm": {"url": url, "timeout": "2s", "retry": FAST, "breaker": BREAKER, **extra}}
    return parse_routes(routes_toml(spec), "routes.toml", {})


def interval_passes(conn: redis.Redis) -> None:
    """The probe interval ends (the probe key's PX expiry, without the wait)."""
    conn.delete(keys.breaker_probe_key("crm"))


def everything_due_now(conn: redis.Redis) -> None:
    """Retry times pass: every delivery waiting for later is due now."""
    now = time.time()
    for event_id in due(conn, "crm"):
        conn.zadd(keys.due_key("crm"), {event_id: now}, xx=True)


def attempts_made(conn: redis.Redis, event_ids: list[str]) -> dict[str, int]:
    return {e: int(field(conn, e, "n:crm") or 0) for e in event_ids}


def open_the_breaker(conn: redis.Redis, count: int = 4) -> list[str]:
    """`count` events whose first attempts fail (3 in a row open it); their ids."""
    events = [make_event(["crm"]) for _ in range(count)]
    store_events(conn, events, enqueue=False)
    with capture_logs() as logs:
        jobs.deliver_due()
    opened = [e for e in logs if e["event"] == "circuit breaker opened"]
    assert len(opened) == 1, logs  # one line, whichever attempt crossed the threshold
    assert opened[0]["log_level"] == "error"
    assert opened[0]["target"] == "crm"
    assert opened[0]["failures"] == 3
    assert opened[0]["probe_every"] == "5s"
    return [e.id for e in events]


def test_an_open_breaker_holds_deliveries_due_without_using_attempts(
    redis_client: redis.Redis, use_routes: Any
) -> None:
    registry, metrics = build_registry(lambda: redis_client, lambda: ("crm",))
    use_routes(routes_for(refused_url()), metrics)
    first = open_the_breaker(redis_client)
    # The four were in flight together: each used its first attempt, the fourth after opening.
    assert attempts_made(redis_client, first) == dict.fromkeys(first, 1)
    [state] = read_breakers(redis_client, ["crm"]).values()
    assert state.is_open
    assert state.failures == 4
    assert "connect" in state.last_error.lower() or "refused" in state.last_error.lower()

    fresh = [make_event(["crm"]) for _ in range(3)]
    store_events(redis_client, fresh, enqueue=False)
    everything_due_now(redis_client)
    held = due(redis_client, "crm")
    ctx, runtime = current(), get_runtime()
    assert jobs.claim(ctx, runtime) == []
    jobs.deliver_due()
    # Nothing attempted, nothing leased or pushed back: due at their own times, budget untouched.
    assert due(redis_client, "crm") == held
    assert attempts_made(redis_client, [e.id for e in fresh]) == dict.fromkeys(
        [e.id for e in fresh], 0
    )
    assert attempts_made(redis_client, first) == dict.fromkeys(first, 1)
    assert {states(redis_client, e.id)["crm"] for e in fresh} == {"pending"}
    # Nothing a worker could take until the next probe: the poller does not kick.
    assert jobs.anything_due(ctx, runtime) is False
    assert kick_if_due() is False

    found = samples(render(registry).decode())
    assert value(found, "relay_target_breaker_open", target="crm") == 1
    assert value(found, "relay_target_breaker_opens_total", target="crm") == 1
    assert value(found, "relay_target_breaker_failures", target="crm") == 4
    since = value(found, "relay_target_breaker_open_start_time_seconds", target="crm")
    assert since == state.opened_at


def test_one_probe_per_interval_and_a_success_redrives_every_held_delivery(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    registry, metrics = build_registry(lambda: redis_client, lambda: ("crm",))
    use_routes(routes_for(targets.url("/fail/crm/100")), metrics)
    first = open_the_breaker(redis_client)
    fresh = [make_event(["crm"]) for _ in range(5)]
    store_events(redis_client, fresh, enqueue=False)
    everything_due_now(redis_client)
    assert len(targets.by_name("crm")) == 4

    # The interval passes: the poller kicks, and a kick makes exactly one attempt, which fails.
    interval_passes(redis_client)
    ctx, runtime = current(), get_runtime()
    assert jobs.anything_due(ctx, runtime) is True
    with capture_logs() as logs:
        jobs.deliver_due()
        jobs.deliver_due()  # another kick in the same interval takes nothing
    assert len(targets.by_name("crm")) == 5
    assert not [e for e in logs if e["event"].startswith("circuit breaker")]
    probed = targets.by_name("crm")[-1].headers["webhook-id"]
    # The probe is an attempt of the delivery it took, which used one; no other delivery did.
    before = dict.fromkeys(first, 1) | dict.fromkeys([e.id for e in fresh], 0)
    assert attempts_made(redis_client, list(before)) == before | {probed: before[probed] + 1}
    assert read_breakers(redis_client, ["crm"])["crm"].is_open
    assert 0 < redis_client.pttl(keys.breaker_probe_key("crm")) <= 5000

    # The target recovers; the next probe succeeds and closes the breaker, and the same kick
    # takes everything held, with no command typed.
    use_routes(routes_for(targets.url("/ok/crm")), metrics)
    everything_due_now(redis_client)
    interval_passes(redis_client)
    with capture_logs() as logs:
        jobs.deliver_due()
    [closed] = [e for e in logs if e["event"] == "circuit breaker closed"]
    assert closed["target"] == "crm"
    assert closed["effect"].startswith("held deliveries go out again")
    assert closed["made_due"] == 0  # everything was due already
    assert closed["open_for_s"] >= 0
    every = first + [e.id for e in fresh]
    assert {e: states(redis_client, e)["crm"] for e in every} == dict.fromkeys(every, "delivered")
    assert due(redis_client, "crm") == {}
    assert read_breakers(redis_client, ["crm"]) == {}
    # Held deliveries went out as their first attempt: the outage used none of theirs.
    assert attempts_made(redis_client, [e.id for e in fresh]) == dict.fromkeys(
        [e.id for e in fresh], 1
    )
    found = samples(render(registry).decode())
    assert value(found, "relay_target_breaker_open", target="crm") == 0
    assert value(found, "relay_target_breaker_closes_total", target="crm") == 1
    assert value(found, "relay_target_breaker_open_start_time_seconds", target="crm") is None


def test_a_close_makes_deliveries_waiting_for_their_retry_time_due_at_once(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    """A recovered target's backlog does not wait for its retry timers (here an hour)."""
    slow = {"attempts": 5, "first": "1h", "max": "1h"}
    use_routes(routes_for(refused_url(), retry=slow))
    first = open_the_breaker(redis_client)
    waiting = due(redis_client, "crm")
    assert min(waiting.values()) > time.time() + 3000  # an hour away
    fresh = make_event(["crm"])  # due now: what the probe takes
    store_events(redis_client, [fresh], enqueue=False)

    use_routes(routes_for(targets.url("/ok/crm"), retry=slow))
    interval_passes(redis_client)
    with capture_logs() as logs:
        jobs.deliver_due()
    [closed] = [e for e in logs if e["event"] == "circuit breaker closed"]
    assert closed["made_due"] == len(first)
    every = [*first, fresh.id]
    assert {e: states(redis_client, e)["crm"] for e in every} == dict.fromkeys(every, "delivered")
    assert attempts_made(redis_client, first) == dict.fromkeys(first, 2)
    assert due(redis_client, "crm") == {}
    assert redis_client.zcard(keys.in_flight_key("crm")) == 0  # every lease given back


def test_a_probe_found_with_nothing_due_is_given_back(
    redis_client: redis.Redis, use_routes: Any
) -> None:
    use_routes(routes_for(refused_url()))
    open_the_breaker(redis_client)
    # Every held delivery waits for its retry time: nothing is due now.
    interval_passes(redis_client)
    assert jobs.claim(current(), get_runtime()) == []
    assert not redis_client.exists(keys.breaker_probe_key("crm"))


def test_a_paused_target_stays_paused_whatever_its_breaker(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    use_routes(routes_for(targets.url("/fail/crm/100")))
    open_the_breaker(redis_client)
    pause_target(redis_client, "crm", "maintenance window")
    use_routes(routes_for(targets.url("/ok/crm")))
    everything_due_now(redis_client)
    interval_passes(redis_client)
    ctx, runtime = current(), get_runtime()
    assert jobs.anything_due(ctx, runtime) is False
    jobs.deliver_due()
    assert len(targets.by_name("crm")) == 4
    assert not redis_client.exists(keys.breaker_probe_key("crm"))  # no probe taken either
    # Resumed: the breaker is still open, so one probe goes first; it closes the breaker and
    # the rest follows.
    resume_target(redis_client, "crm")
    jobs.deliver_due()
    assert due(redis_client, "crm") == {}
    assert len(targets.by_name("crm")) == 8


def test_a_410_still_pauses_a_pause_on_gone_target_with_a_breaker(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    use_routes(routes_for(targets.url("/gone/crm"), pause_on_gone=True))
    event = make_event(["crm"])
    store_events(redis_client, [event], enqueue=False)
    jobs.deliver_due()
    assert states(redis_client, event.id) == {"crm": "gone"}
    assert redis_client.exists(keys.paused_key("crm"))
    assert read_breakers(redis_client, ["crm"])["crm"].failures == 1  # a 410 is a failure


def test_failures_of_a_target_without_a_breaker_are_not_counted(
    redis_client: redis.Redis, use_routes: Any
) -> None:
    spec = {"plain": {"url": refused_url(), "retry": FAST}}
    use_routes(parse_routes(routes_toml(spec), "routes.toml", {}))
    store_events(redis_client, [make_event(["plain"]) for _ in range(5)], enqueue=False)
    jobs.deliver_due()
    assert read_breakers(redis_client, ["plain"]) == {}
    assert not redis_client.exists(keys.BREAKERS)


def test_a_breaker_removed_from_routes_is_closed_at_maintenance(
    redis_client: redis.Redis, use_routes: Any
) -> None:
    use_routes(routes_for(refused_url()))
    open_the_breaker(redis_client)
    assert close_removed_breakers(redis_client, current().routes, time.time()) == 0
    assert read_breakers(redis_client, ["crm"])["crm"].is_open
    plain = parse_routes(routes_toml({"crm": {"url": refused_url()}}), "routes.toml", {})
    with capture_logs() as logs:
        assert close_removed_breakers(redis_client, plain, time.time()) == 1
    [closed] = [e for e in logs if e["event"] == "circuit breaker closed"]
    assert closed["reason"] == "no breaker for this target in routes.toml any more"
    assert read_breakers(redis_client, ["crm"]) == {}
