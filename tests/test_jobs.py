"""The delivery kick runs in-process against a real redis-server and loopback targets.

Deliveries wait in per-target due sets (relay.store.keys.due_key); these tests observe them there:
due now, due at a retry time, due at the end of a lease while an attempt is in flight, or gone
when the delivery is over. No delivery ever becomes an RQ job of its own.
"""

from __future__ import annotations

import threading
import time
from functools import partial
from typing import Any

import orjson
import pytest
import redis
import structlog
from standardwebhooks.webhooks import Webhook
from structlog.testing import capture_logs

from relay.config.loading import parse_routes
from relay.config.model import RouteTable
from relay.core import constants
from relay.core.states import FINAL_STATES, DeliveryState
from relay.ops.deliveries import replay_delivery
from relay.store import keys
from relay.store.control import NO_LIMITS
from relay.store.deliveries import LEASE_MARGIN, Record, Store, Wanted, attempt_records
from relay.store.queue import DELIVER_DUE, make_queue
from relay.store.records import AttemptRecord, Outcome, TargetStat
from tests.support.seed_events import make_event, routes_toml, store_events
from tests.support.stored import due, field
from tests.support.targets import TargetServer, refused_url
from worker import jobs, recording
from worker import runtime as runtime_module
from worker.context import current
from worker.outcome import AttemptResult, next_step
from worker.runtime import get_runtime

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture(autouse=True)
def full_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every retry waits its whole backoff cap (no jitter).

    With full jitter a retry can be due within milliseconds, and the kick that scheduled it
    would then take it again in its next loop; a fixed delay makes each test see one attempt
    per kick and lets it check the retry time exactly. Jitter itself is tested in
    test_backoff.py.
    """
    monkeypatch.setattr(recording, "next_step", partial(next_step, uniform=lambda low, high: high))


def routes_for(targets: dict[str, dict[str, Any]]) -> RouteTable:
    return parse_routes(routes_toml(targets), "routes.toml", {"WHSEC": SECRET})


def come_due(conn: redis.Redis, target: str, event_id: str) -> None:
    """Time passes: a delivery waiting for a later time (retry or lease end) is due now."""
    now = time.time()
    assert due(conn, target)[event_id] > now, "the delivery was not waiting for a later time"
    conn.zadd(keys.due_key(target), {event_id: now}, xx=True)


def queued(conn: redis.Redis) -> list[str]:
    """Function names of the RQ jobs waiting in the queue (kicks, if anything)."""
    return [job.func_name for job in make_queue(conn).get_jobs()]


def scheduled_jobs(conn: redis.Redis) -> int:
    """RQ jobs scheduled for later: relay never schedules any (retries wait in due sets)."""
    return int(make_queue(conn).scheduled_job_registry.get_job_count(cleanup=False))


def stats(conn: redis.Redis, target: str) -> dict[str, int]:
    raw = conn.hgetall(keys.target_stats_key(target))
    return {k.decode(): int(v) for k, v in raw.items()}


def test_happy_path_delivers_to_every_target_in_one_kick(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    use_routes(
        routes_for(
            {
                "a": {"url": targets.url("/ok/a"), "signing_secret_env": "WHSEC"},
                "b": {"url": targets.url("/ok/b")},
                "c": {"url": targets.url("/ok/c")},
            }
        )
    )
    body = b'{"order": 1,  "spaces" : "kept",\n "u": "\xc3\xa9"}'
    events = [make_event(["a", "b", "c"], body=body) for _ in range(3)]
    store_events(redis_client, events, enqueue=False)
    for name in "abc":
        assert set(due(redis_client, name)) == {e.id for e in events}

    jobs.deliver_due()

    assert len(targets.received) == 9
    for event in events:
        for name in "abc":
            assert field(redis_client, event.id, f"s:{name}") == DeliveryState.DELIVERED
            assert field(redis_client, event.id, f"n:{name}") == "1"
        records = attempt_records(redis_client, event.id)
        assert sorted(r["target"] for r in records) == ["a", "b", "c"]
        assert all(r["status"] == 200 and r["outcome"] == "delivered" for r in records)
    for got in targets.received:
        assert got.body == body
        assert got.headers["content-type"] == "application/json"
        assert got.headers["x-relay-attempt"] == "1"
        assert got.headers["x-relay-source"] == "shop"
        assert got.headers["x-event-type"] == "thing.happened"
    for got in targets.by_name("a"):
        Webhook(SECRET).verify(got.body, dict(got.headers), json_parse=False)
    assert "webhook-signature" not in targets.by_name("b")[0].headers
    assert stats(redis_client, "a") == {"attempts": 3, "delivered": 3}
    # Every delivery is over, so nothing is left due; and the kick made no RQ job of its own.
    for name in "abc":
        assert due(redis_client, name) == {}
    assert scheduled_jobs(redis_client) == 0
    assert queued(redis_client) == []


def test_a_kick_loops_while_more_is_due_and_hands_over_at_its_budget(
    redis_client: redis.Redis,
    targets: TargetServer,
    use_routes: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_routes(routes_for({"a": {"url": targets.url("/ok/a")}}))
    monkeypatch.setattr(jobs, "CLAIM_TOTAL", 2)  # one claim takes 2 of the 5
    events = [make_event(["a"]) for _ in range(5)]
    store_events(redis_client, events, enqueue=False)
    jobs.deliver_due()
    assert len(targets.received) == 5  # three claims in one kick
    assert due(redis_client, "a") == {}
    assert queued(redis_client) == []

    # Past its budget a kick stops after the claim in hand and enqueues a fresh kick.
    monkeypatch.setattr(jobs, "LOOP_BUDGET", 0.0)
    more = [make_event(["a"]) for _ in range(5)]
    store_events(redis_client, more, enqueue=False)
    jobs.deliver_due()
    assert len(targets.received) == 7
    assert len(due(redis_client, "a")) == 3
    assert queued(redis_client) == [DELIVER_DUE]


def test_failure_is_retried_with_backoff_without_touching_other_targets(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    use_routes(
        routes_for(
            {
                "ok": {"url": targets.url("/ok/ok")},
                "flaky": {
                    "url": targets.url("/fail/flaky/1"),
                    "retry": {"attempts": 3, "first": "2s", "max": "10s"},
                },
            }
        )
    )
    event = make_event(["ok", "flaky"])
    store_events(redis_client, [event], enqueue=False)
    before = time.time()

    jobs.deliver_due()

    assert field(redis_client, event.id, "s:ok") == DeliveryState.DELIVERED
    assert field(redis_client, event.id, "s:flaky") == DeliveryState.RETRYING
    assert field(redis_client, event.id, "n:flaky") == "1"
    # The retry waits in the target's due set, due one backoff (2 s, the first cap) later.
    assert due(redis_client, "ok") == {}
    [(event_id, at)] = due(redis_client, "flaky").items()
    assert event_id == event.id
    assert before + 2.0 <= at <= time.time() + 2.0
    assert scheduled_jobs(redis_client) == 0
    [failed] = [r for r in attempt_records(redis_client, event.id) if r["target"] == "flaky"]
    assert failed["status"] == 500
    assert failed["outcome"] == "retry"
    assert len(failed["response"]) == constants.RESPONSE_SNIPPET
    assert failed["retry_in_s"] == 2.0

    # A kick before the retry time does not attempt it.
    jobs.deliver_due()
    assert len(targets.by_name("flaky")) == 1
    assert due(redis_client, "flaky") == {event.id: at}

    come_due(redis_client, "flaky", event.id)
    jobs.deliver_due()

    assert field(redis_client, event.id, "s:flaky") == DeliveryState.DELIVERED
    assert [r.headers["x-relay-attempt"] for r in targets.by_name("flaky")] == ["1", "2"]
    assert {r.headers["webhook-id"] for r in targets.by_name("flaky")} == {event.id}
    assert len(targets.by_name("ok")) == 1  # never repeated for the healthy target
    assert stats(redis_client, "flaky") == {"attempts": 2, "failures": 1, "delivered": 1}
    assert due(redis_client, "flaky") == {}


def test_repeated_kicks_stray_due_entries_and_stale_outcomes_are_no_ops(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    use_routes(routes_for({"a": {"url": targets.url("/ok/a")}}))
    event = make_event(["a"])
    store_events(redis_client, [event], enqueue=False)
    jobs.deliver_due()
    jobs.deliver_due()  # a second kick finds nothing due
    assert len(targets.received) == 1

    # A due entry for a delivery that is already over is dropped without a request.
    redis_client.zadd(keys.due_key("a"), {event.id: time.time()})
    jobs.deliver_due()
    assert due(redis_client, "a") == {}

    # The late outcome of a second attempt 1 (its lease ended while it ran elsewhere) is stale.
    ctx = current()
    target = ctx.routes.targets["a"]
    late = AttemptResult(started_at=time.time(), duration=0.1, status=500, response="late")
    recording.finalize(ctx, recording.Planned(event, "a", 1, 1), target, late)
    assert field(redis_client, event.id, "s:a") == DeliveryState.DELIVERED
    assert due(redis_client, "a") == {}

    assert len(targets.received) == 1
    assert len(attempt_records(redis_client, event.id)) == 1
    assert stats(redis_client, "a") == {"attempts": 1, "delivered": 1}


def test_410_stops_at_once_and_dead_letters(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    use_routes(routes_for({"g": {"url": targets.url("/gone/g")}}))
    event = make_event(["g"])
    store_events(redis_client, [event], enqueue=False)
    jobs.deliver_due()
    assert field(redis_client, event.id, "s:g") == DeliveryState.GONE
    assert "410" in (field(redis_client, event.id, "r:g") or "")
    assert redis_client.zscore(keys.DEAD, keys.dead_member(event.id, "g")) is not None
    assert due(redis_client, "g") == {}
    assert scheduled_jobs(redis_client) == 0
    [record] = attempt_records(redis_client, event.id)
    assert (record["status"], record["outcome"], record["response"]) == (
        410,
        "gone",
        "subscription cancelled",
    )
    assert stats(redis_client, "g")["gone"] == 1


def test_out_of_attempts_goes_to_the_dead_letter_store(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    retry = {"attempts": 2, "first": "1s", "max": "1s"}
    use_routes(routes_for({"bad": {"url": targets.url("/fail/bad/99"), "retry": retry}}))
    event = make_event(["bad"])
    store_events(redis_client, [event], enqueue=False)
    jobs.deliver_due()
    # Exactly one retry waits: attempt 2, due one second later.
    assert list(due(redis_client, "bad")) == [event.id]
    come_due(redis_client, "bad", event.id)
    jobs.deliver_due()
    assert field(redis_client, event.id, "s:bad") == DeliveryState.DEAD
    reason = field(redis_client, event.id, "r:bad") or ""
    assert "out of attempts (2)" in reason
    assert "HTTP 500" in reason
    assert redis_client.zscore(keys.DEAD, keys.dead_member(event.id, "bad")) is not None
    records = attempt_records(redis_client, event.id)
    assert [(r["attempt"], r["outcome"]) for r in records] == [(1, "retry"), (2, "dead")]
    assert all(r["at"] > 0 and r["duration_ms"] >= 0 for r in records)
    assert stats(redis_client, "bad") == {"attempts": 2, "failures": 2, "dead": 1}
    assert due(redis_client, "bad") == {}  # no third attempt is scheduled
    assert scheduled_jobs(redis_client) == 0


def test_retry_after_is_honoured(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    use_routes(routes_for({"s": {"url": targets.url("/slow/s/1/30")}}))
    event = make_event(["s"])
    store_events(redis_client, [event], enqueue=False)
    before = time.time()
    jobs.deliver_due()
    assert field(redis_client, event.id, "s:s") == DeliveryState.RETRYING
    [(event_id, at)] = due(redis_client, "s").items()
    assert event_id == event.id
    assert before + 30 <= at <= time.time() + 30


@pytest.mark.parametrize(
    ("path", "error"),
    [("refused", "connection failed"), ("/redirect/r", None)],
)
def test_refused_connections_and_redirects_are_failures(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any, path: str, error: str | None
) -> None:
    url = refused_url() if path == "refused" else targets.url(path)
    use_routes(routes_for({"r": {"url": url}}))
    event = make_event(["r"])
    store_events(redis_client, [event], enqueue=False)
    jobs.deliver_due()
    assert field(redis_client, event.id, "s:r") == DeliveryState.RETRYING
    [record] = attempt_records(redis_client, event.id)
    if error:
        assert error in record["error"]
        assert record["status"] is None
    else:
        assert record["status"] == 302
        assert targets.by_name("r")[0].path == "/redirect/r"
        assert len(targets.received) == 1  # the redirect was not followed


def test_a_hanging_target_does_not_hold_the_kick(
    redis_client: redis.Redis,
    targets: TargetServer,
    use_routes: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jobs, "INLINE_BUDGET", 0.3)
    use_routes(
        routes_for(
            {
                "ok": {"url": targets.url("/ok/ok")},
                "h": {"url": targets.url("/hang/h"), "timeout": 1},
            }
        )
    )
    event = make_event(["ok", "h"])
    store_events(redis_client, [event], enqueue=False)
    before = time.time()
    jobs.deliver_due()

    # The kick returned with the hanging attempt still in flight (its 1 s timeout not reached),
    # leased: due again only when the lease (timeout + LEASE_MARGIN) ends.
    assert field(redis_client, event.id, "s:ok") == DeliveryState.DELIVERED
    assert field(redis_client, event.id, "s:h") == DeliveryState.PENDING
    lease_end = due(redis_client, "h")[event.id]
    assert before + 1 + LEASE_MARGIN <= lease_end <= time.time() + 1 + LEASE_MARGIN
    assert scheduled_jobs(redis_client) == 0
    assert queued(redis_client) == []
    jobs.deliver_due()  # another kick does not take a leased delivery
    assert len(targets.by_name("h")) == 1

    # The attempt ends on the background loop and records its own outcome and retry time.
    deadline = time.monotonic() + 10
    while (
        field(redis_client, event.id, "s:h") == DeliveryState.PENDING
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert field(redis_client, event.id, "s:h") == DeliveryState.RETRYING
    [record] = [r for r in attempt_records(redis_client, event.id) if r["target"] == "h"]
    assert record["error"] == "timeout after 1s"
    retry_at = due(redis_client, "h")[event.id]
    assert record["retry_in_s"] == constants.DEFAULT_FIRST_DELAY
    assert record["at"] + constants.DEFAULT_FIRST_DELAY < retry_at < lease_end
    jobs.deliver_due()  # the retry is not due yet: nothing happens
    assert len(targets.by_name("h")) == 1

    # The hanging target is now known to be slow: the next kick does not wait for it at all.
    assert get_runtime().is_slow("h")
    monkeypatch.setattr(jobs, "INLINE_BUDGET", 30.0)
    second = make_event(["ok", "h"])
    store_events(redis_client, [second], enqueue=False)
    jobs.deliver_due()
    assert field(redis_client, second.id, "s:ok") == DeliveryState.DELIVERED
    assert field(redis_client, second.id, "s:h") == DeliveryState.PENDING
    assert due(redis_client, "h")[second.id] > time.time()  # leased while in flight


def test_an_attempt_in_flight_elsewhere_is_not_repeated_until_its_lease_ends(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    use_routes(routes_for({"a": {"url": targets.url("/ok/a")}}))
    event = make_event(["a"])
    store_events(redis_client, [event], enqueue=False)
    # Another worker claims it: the entry moves to the end of that worker's lease.
    now = time.time()
    other = Store(redis_client, 3600)
    assert other.claim([Wanted("a", 10, now + 30)], 10, now).ids == {"a": [event.id]}
    jobs.deliver_due()
    assert targets.received == []
    assert due(redis_client, "a") == {event.id: pytest.approx(now + 30)}
    assert field(redis_client, event.id, "n:a") == "0"

    # That worker dies; when its lease ends the delivery is taken again, as attempt 1.
    come_due(redis_client, "a", event.id)
    jobs.deliver_due()
    assert [r.headers["x-relay-attempt"] for r in targets.received] == ["1"]
    assert field(redis_client, event.id, "s:a") == DeliveryState.DELIVERED
    assert due(redis_client, "a") == {}


def test_a_claim_leases_what_is_due_and_takes_it_again_after_the_lease(
    redis_client: redis.Redis,
) -> None:
    store = Store(redis_client, 3600)
    t0 = time.time()
    redis_client.zadd(keys.due_key("a"), {"e1": t0 - 5, "e2": t0 - 1, "e3": t0, "e4": t0 + 30})
    redis_client.zadd(keys.due_key("b"), {"f1": t0 - 2, "f2": t0 - 1})
    assert store.anything_due([("a", NO_LIMITS), ("b", NO_LIMITS)], t0) is True

    # Per-target limit and total limit; oldest first; a retry due later is not taken.
    taken = store.claim([Wanted("a", 2, t0 + 15), Wanted("b", 5, t0 + 20)], 3, t0).ids
    assert taken == {"a": ["e1", "e2"], "b": ["f1"]}
    assert due(redis_client, "a") == {
        "e1": pytest.approx(t0 + 15),
        "e2": pytest.approx(t0 + 15),
        "e3": pytest.approx(t0),
        "e4": pytest.approx(t0 + 30),
    }
    assert due(redis_client, "b") == {"f1": pytest.approx(t0 + 20), "f2": pytest.approx(t0 - 1)}
    assert store.claim([Wanted("a", 5, t0 + 15), Wanted("b", 5, t0 + 20)], 10, t0).ids == {
        "a": ["e3"],
        "b": ["f2"],
    }

    # Another worker, before the leases end, finds nothing to take.
    assert store.anything_due([("a", NO_LIMITS), ("b", NO_LIMITS)], t0 + 14) is False
    assert store.claim([Wanted("a", 10, t0 + 99), Wanted("b", 10, t0 + 99)], 100, t0 + 14).ids == {}
    assert due(redis_client, "a")["e1"] == pytest.approx(t0 + 15)

    # The worker that held them died: once its lease ends they are claimable again.
    assert store.claim([Wanted("a", 10, t0 + 40), Wanted("b", 10, t0 + 40)], 100, t0 + 15).ids == {
        "a": ["e1", "e2", "e3"]
    }
    assert store.claim([Wanted("a", 10, t0 + 60)], 100, t0 + 30).ids == {"a": ["e4"]}
    assert (
        store.claim([Wanted("a", 0, t0 + 99)], 100, t0 + 99).ids == {}
    )  # no free slot: nothing taken


def test_a_record_sets_the_next_due_time_with_the_state_and_stale_ones_change_nothing(
    redis_client: redis.Redis,
) -> None:
    store = Store(redis_client, 3600)
    event = make_event(["a"])
    store_events(redis_client, [event], enqueue=False)
    now = time.time()
    assert store.claim([Wanted("a", 10, now + 20)], 10, now).ids == {"a": [event.id]}

    def record(attempt: int, state: str, due_at: float | None) -> int:
        counter = TargetStat(state) if state in FINAL_STATES else None
        entry = AttemptRecord("a", attempt, now, 0.01, None, "", Outcome.NONE, "")
        rec = Record(event.id, "a", attempt, state, "why", entry, counter, True, True, due_at)
        return store.record(rec, now)

    # Attempt 1 failed: retrying, due again at its retry time (the lease end is replaced).
    assert record(1, DeliveryState.RETRYING, now + 7) == 1
    assert due(redis_client, "a") == {event.id: pytest.approx(now + 7)}
    assert (field(redis_client, event.id, "s:a"), field(redis_client, event.id, "n:a")) == (
        DeliveryState.RETRYING,
        "1",
    )

    # A second attempt 1 (its first lease ended while it still ran) and an out-of-order attempt
    # are stale: state, attempt log and due time stay as they are.
    assert record(1, DeliveryState.DELIVERED, None) == 0
    assert record(5, DeliveryState.RETRYING, now + 100) == 0
    assert due(redis_client, "a") == {event.id: pytest.approx(now + 7)}
    assert field(redis_client, event.id, "s:a") == DeliveryState.RETRYING
    assert len(attempt_records(redis_client, event.id)) == 1

    # A final outcome takes the delivery off the due set.
    assert record(2, DeliveryState.DELIVERED, None) == 1
    assert due(redis_client, "a") == {}
    # ... and anything touching a stray entry of a finished delivery clears it, stale or not.
    redis_client.zadd(keys.due_key("a"), {event.id: now})
    assert record(2, DeliveryState.RETRYING, now + 5) == 0
    assert due(redis_client, "a") == {}
    assert field(redis_client, event.id, "s:a") == DeliveryState.DELIVERED

    # An expired event has nothing left to deliver: its entry goes.
    redis_client.delete(keys.event_key(event.id))
    redis_client.zadd(keys.due_key("a"), {event.id: now})
    assert record(3, DeliveryState.RETRYING, now + 5) == -1
    assert due(redis_client, "a") == {}


def test_inbound_duplicates_are_not_delivered(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    use_routes(routes_for({"a": {"url": targets.url("/ok/a")}}))
    dd = keys.dedupe_key("shop", "order-1")
    first, second = make_event(["a"], dedupe_key=dd), make_event(["a"], dedupe_key=dd)
    store_events(redis_client, [first, second], enqueue=False)
    jobs.deliver_due()
    assert [r.headers["webhook-id"] for r in targets.received] == [first.id]
    assert field(redis_client, second.id, "s:a") == DeliveryState.DUPLICATE
    # Counted once, by the receiver when it took the repeat in; the worker only skips it.
    assert redis_client.hget(keys.source_stats_key("shop"), "duplicates") is None
    assert due(redis_client, "a") == {}


def test_an_expired_event_is_dropped_from_the_due_set(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    use_routes(routes_for({"a": {"url": targets.url("/ok/a")}}))
    event = make_event(["a"])
    store_events(redis_client, [event], enqueue=False)
    redis_client.delete(keys.event_key(event.id))  # retention ran out before the delivery
    jobs.deliver_due()
    assert targets.received == []
    assert due(redis_client, "a") == {}


def test_a_target_removed_from_routes_is_dead_lettered(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    use_routes(routes_for({"a": {"url": targets.url("/ok/a")}}))
    event = make_event(["a", "removed"])
    store_events(redis_client, [event], enqueue=False)
    jobs.deliver_due()
    assert field(redis_client, event.id, "s:a") == DeliveryState.DELIVERED
    assert field(redis_client, event.id, "s:removed") == DeliveryState.DEAD
    assert "no longer in routes.toml" in (field(redis_client, event.id, "r:removed") or "")
    assert redis_client.zscore(keys.DEAD, keys.dead_member(event.id, "removed")) is not None
    assert due(redis_client, "removed") == {}


def test_replay_gets_a_fresh_attempt_budget(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    retry = {"attempts": 2, "first": "1s", "max": "1s"}
    use_routes(routes_for({"a": {"url": targets.url("/fail/a/2"), "retry": retry}}))
    event = make_event(["a"])
    store_events(redis_client, [event], enqueue=False)
    jobs.deliver_due()
    come_due(redis_client, "a", event.id)
    jobs.deliver_due()
    assert field(redis_client, event.id, "s:a") == DeliveryState.DEAD
    assert due(redis_client, "a") == {}

    # `relay replay`: b = n, state pending, out of the dead-letter store, due now, one kick.
    result = replay_delivery(redis_client, event.id, "a")
    assert (result.outcome, result.attempt) == ("replayed", 3)
    assert due(redis_client, "a")[event.id] <= time.time()
    assert queued(redis_client) == [DELIVER_DUE]
    jobs.deliver_due()
    assert field(redis_client, event.id, "s:a") == DeliveryState.DELIVERED
    assert [r.headers["x-relay-attempt"] for r in targets.received] == ["1", "2", "3"]
    assert {r.headers["webhook-id"] for r in targets.received} == {event.id}
    assert due(redis_client, "a") == {}


def test_form_bodies_become_json_for_json_targets(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    use_routes(
        routes_for(
            {"j": {"url": targets.url("/ok/j"), "body": "json"}, "o": {"url": targets.url("/ok/o")}}
        )
    )
    form = b"event=COURSEMEMBER_CREATED&courseId=7&memberId=9"
    event = make_event(["j", "o"], body=form, content_type="application/x-www-form-urlencoded")
    store_events(redis_client, [event], enqueue=False)
    jobs.deliver_due()
    [j] = targets.by_name("j")
    [o] = targets.by_name("o")
    assert orjson.loads(j.body) == {
        "event": "COURSEMEMBER_CREATED",
        "courseId": "7",
        "memberId": "9",
    }
    assert j.headers["content-type"] == "application/json"
    assert o.body == form
    assert o.headers["content-type"] == "application/x-www-form-urlencoded"


def test_keep_alive_reuses_connections(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    use_routes(routes_for({"a": {"url": targets.url("/ok/a")}}))
    for _ in range(5):
        event = make_event(["a"])
        store_events(redis_client, [event], enqueue=False)
        jobs.deliver_due()
    runtime = get_runtime()

    async def connections() -> int:
        session = runtime._get_session()
        connector = session.connector
        assert connector is not None
        return sum(len(v) for v in connector._conns.values())  # idle pooled connections

    assert len(targets.received) == 5
    assert runtime.run(connections()) == 1


def test_a_hanging_target_holds_only_its_own_slots(
    redis_client: redis.Redis,
    targets: TargetServer,
    use_routes: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime_module, "PER_TARGET_IN_FLIGHT", 1)
    monkeypatch.setattr(jobs, "INLINE_BUDGET", 0.2)
    use_routes(
        routes_for(
            {
                "ok": {"url": targets.url("/ok/ok")},
                "h": {"url": targets.url("/hang/h"), "timeout": 8},
            }
        )
    )
    first, second = make_event(["ok", "h"]), make_event(["ok", "h"])
    store_events(redis_client, [first, second], enqueue=False)
    jobs.deliver_due()  # "h" hangs and holds its only slot; "ok" goes on, one slot at a time

    assert len(targets.by_name("ok")) == 2
    [hung] = targets.by_name("h")  # the other is not started while the first hangs
    taken = hung.headers["webhook-id"]
    [left] = {first.id, second.id} - {taken}
    assert field(redis_client, left, "n:h") == "0"  # and it does not use up an attempt
    h_due = due(redis_client, "h")
    assert h_due[taken] > time.time() + 8  # leased: timeout + LEASE_MARGIN
    assert h_due[left] <= time.time()  # still due, unclaimed, waiting for a slot
    assert scheduled_jobs(redis_client) == 0

    # While the slot is held, this process neither takes it nor asks for a kick for it.
    assert jobs.anything_due(current(), get_runtime()) is False
    jobs.deliver_due()
    assert len(targets.by_name("h")) == 1
    assert field(redis_client, left, "n:h") == "0"


def test_a_claim_that_finds_no_slot_is_due_again_shortly_without_an_attempt(
    redis_client: redis.Redis,
    targets: TargetServer,
    use_routes: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime_module, "PER_TARGET_IN_FLIGHT", 1)
    monkeypatch.setattr(jobs, "INLINE_BUDGET", 0.2)
    use_routes(routes_for({"h": {"url": targets.url("/hang/h"), "timeout": 8}}))
    runtime = get_runtime()
    # Another kick of this process took the slot between our claim and our start.
    monkeypatch.setattr(runtime, "free_slots", lambda key: 2)
    first, second = make_event(["h"]), make_event(["h"])
    store_events(redis_client, [first, second], enqueue=False)
    before = time.time()
    jobs.deliver_due()

    [hung] = targets.by_name("h")
    [left] = {first.id, second.id} - {hung.headers["webhook-id"]}
    assert field(redis_client, left, "n:h") == "0"
    assert field(redis_client, left, "s:h") == DeliveryState.PENDING
    at = due(redis_client, "h")[left]
    assert before + jobs.DEFER_DELAY <= at <= time.time() + jobs.DEFER_DELAY


def test_what_becomes_due_goes_out_while_a_slow_attempt_is_still_in_flight(
    redis_client: redis.Redis,
    targets: TargetServer,
    use_routes: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The kick would wait for "slow" as long as it likes; it must not make "ok" wait with it.
    monkeypatch.setattr(jobs, "INLINE_BUDGET", 30.0)
    use_routes(
        routes_for(
            {"ok": {"url": targets.url("/ok/ok")}, "slow": {"url": targets.url("/delay/slow/3")}}
        )
    )
    first = make_event(["ok", "slow"])
    store_events(redis_client, [first], enqueue=False)
    kick = threading.Thread(target=jobs.deliver_due)
    kick.start()
    try:
        targets.wait_for(lambda got: len(got) == 2, timeout=10)
        assert {r.name for r in targets.received} == {"ok", "slow"}
        second = make_event(["ok"])
        store_events(redis_client, [second], enqueue=False)  # no kick of its own

        got = targets.wait_for(lambda got: len(got) == 3, timeout=10)
        assert [r.headers["webhook-id"] for r in got if r.name == "ok"] == [first.id, second.id]
        # The same kick took it while the slow attempt was still unanswered.
        assert field(redis_client, first.id, "s:slow") == DeliveryState.PENDING
        assert kick.is_alive()
    finally:
        kick.join(timeout=15)
    assert not kick.is_alive()
    assert (
        field(redis_client, first.id, "s:slow") == DeliveryState.DELIVERED
    )  # recorded by the kick
    assert field(redis_client, second.id, "s:ok") == DeliveryState.DELIVERED
    assert queued(redis_client) == []


def test_what_an_attempt_logs_carries_its_event_id(
    redis_client: redis.Redis,
    targets: TargetServer,
    use_routes: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_post = runtime_module.Runtime.post

    async def logging_post(self: Any, request: Any, limit: float) -> AttemptResult:
        structlog.get_logger("test").info("inside the attempt")  # on the loop thread
        return await real_post(self, request, limit)

    monkeypatch.setattr(runtime_module.Runtime, "post", logging_post)
    use_routes(routes_for({"a": {"url": targets.url("/ok/a")}, "b": {"url": targets.url("/ok/b")}}))
    events = [make_event(["a", "b"]) for _ in range(2)]
    store_events(redis_client, events, enqueue=False)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        jobs.deliver_due()
    inside = [
        (e["event_id"], e["target"], e["attempt"])
        for e in logs
        if e["event"] == "inside the attempt"
    ]
    assert sorted(inside) == sorted((e.id, t, 1) for e in events for t in "ab")
