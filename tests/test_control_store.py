"""Rate, concurrency and FIFO per key in Redis: the claim, record, release and commit scripts.

Against a real redis-server, with the clock passed in (`now`), so what a limit lets through is
checked exactly, never timed.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.config.control import parse_rate
from relay.ops.deliveries import replay_delivery
from relay.receiver.spool.records import SpooledEvent, decode_payload, encode_record
from relay.store import keys
from relay.store.commit import commit_arguments
from relay.store.control import (
    NO_LIMITS,
    WAITING_FIELD,
    Held,
    Hold,
    Limits,
    held_counts,
    read_control,
)
from relay.store.deliveries import (
    Record,
    Store,
    Wanted,
    drop_due,
    due_again,
    mark_duplicate,
)
from relay.store.queue import make_queue
from relay.store.records import DeliveryState, Event, TargetStat
from tests.support.seed_events import make_event, store_events
from tests.support.stored import due, field


def rate_limits(text: str) -> Limits:
    rate = parse_rate(text)
    return Limits(interval=rate.interval, tolerance=rate.tolerance)


def seed_due(conn: redis.Redis, target: str, count: int, at: float) -> list[str]:
    ids = [f"e{i:04d}" for i in range(count)]
    conn.zadd(keys.due_key(target), {eid: at + i * 1e-6 for i, eid in enumerate(ids)})
    return ids


# --- rate ---------------------------------------------------------------------------------------


def test_a_rate_lets_one_start_per_interval_and_holds_the_rest_due(
    redis_client: redis.Redis,
) -> None:
    store = Store(redis_client, 3600)
    t0 = 1_800_000_000.0
    seed_due(redis_client, "a", 10, t0 - 10)
    before = due(redis_client, "a")
    one_per_s = rate_limits("1/s")  # interval 1 s, tolerance 0.5 s

    def claim(at: float) -> tuple[list[str], Hold | None]:
        got = store.claim([Wanted("a", 10, at + 30, one_per_s)], 100, at)
        return got.ids.get("a", []), got.holds.get("a")

    assert claim(t0) == (["e0000"], None)
    # Held: nothing taken, told how long until the next start is allowed.
    ids, hold = claim(t0 + 0.2)
    assert ids == []
    assert hold == Hold(Held.RATE, pytest.approx(0.3, abs=0.002))
    # What the rate held stays due, untouched: no lease, no attempt.
    assert {k: v for k, v in due(redis_client, "a").items() if k != "e0000"} == {
        k: pytest.approx(v) for k, v in before.items() if k != "e0000"
    }
    assert claim(t0 + 0.5) == (["e0001"], None)
    assert claim(t0 + 1.49)[0] == []
    assert claim(t0 + 1.5) == (["e0002"], None)
    # A claim late by less than the tolerance loses nothing: the next start stays on schedule.
    assert claim(t0 + 2.9) == (["e0003"], None)
    assert claim(t0 + 3.5) == (["e0004"], None)


def test_two_workers_share_one_rate(redis_client: redis.Redis) -> None:
    first, second = Store(redis_client, 3600), Store(redis_client, 3600)
    t0 = 1_800_000_000.0
    seed_due(redis_client, "a", 50, t0 - 10)
    limits = rate_limits("10/s")
    taken = []
    for step in range(40):  # 2 s, each worker claiming every 50 ms, in turn
        store = first if step % 2 == 0 else second
        got = store.claim([Wanted("a", 10, t0 + 99, limits)], 100, t0 + step * 0.05)
        taken += got.ids.get("a", [])
    # 2 s at 10/s, plus what the tolerance (0.1 s: one interval) lets start at first.
    assert len(taken) == 21
    assert len(set(taken)) == len(taken)


def starts_per_window(starts: Sequence[float], window: float) -> int:
    """The most starts in any window of that length (windows starting at a start)."""
    best, j = 0, 0
    for i, start in enumerate(starts):
        while j < len(starts) and starts[j] < start + window:
            j += 1
        best = max(best, j - i)
    return best


def test_fifty_per_second_over_a_simulated_minute(redis_client: redis.Redis) -> None:
    """Two workers claiming every 50 ms for 60 s (a simulated clock): the issue's rate goal,
    exactly, without timing anything."""
    stores = (Store(redis_client, 3600), Store(redis_client, 3600))
    t0 = 1_800_000_000.0
    seed_due(redis_client, "a", 4000, t0 - 1)
    limits = rate_limits("50/s")
    starts: list[float] = []
    for step in range(1200):
        now = t0 + step * 0.05
        got = stores[step % 2].claim([Wanted("a", 128, now + 30, limits)], 256, now)
        starts += [now] * len(got.ids.get("a", []))
    assert 3000 <= len(starts) <= 3000 + 6  # 50/s over 60 s, plus the tolerance's burst
    assert starts_per_window(starts, 1.0) <= 53  # 50 + 1 + the tolerance (50 ms) of starts


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rate=st.sampled_from(["50/s", "10/s", "3/s", "1/s", "30/m"]),
    gaps=st.lists(st.floats(0.001, 0.7), min_size=1, max_size=120),
    limits=st.lists(st.integers(1, 20), min_size=1, max_size=120),
)
def test_no_window_ever_holds_more_than_the_rate_allows(
    redis_client: redis.Redis, rate: str, gaps: list[float], limits: list[int]
) -> None:
    redis_client.delete(keys.rate_key("a"), keys.due_key("a"))
    store = Store(redis_client, 3600)
    parsed = parse_rate(rate)
    t0 = 1_800_000_000.0
    seed_due(redis_client, "a", 2000, t0 - 1)
    now, starts = t0, []
    for gap, limit in zip(gaps, limits * len(gaps), strict=False):
        now += gap
        got = store.claim([Wanted("a", limit, now + 99, rate_limits(rate))], 100, now)
        starts += [now] * len(got.ids.get("a", []))
    burst = int(parsed.tolerance / parsed.interval + 1e-9) + 1
    for window in (parsed.interval, 1.0, 5.0):
        allowed = int(window / parsed.interval + 1e-9) + burst
        assert starts_per_window(starts, window) <= allowed


def test_a_target_without_a_rate_or_due_work_is_never_held(redis_client: redis.Redis) -> None:
    store = Store(redis_client, 3600)
    t0 = 1_800_000_000.0
    limits = rate_limits("1/m")
    seed_due(redis_client, "a", 1, t0 - 1)
    assert store.claim([Wanted("a", 10, t0 + 9, limits)], 10, t0).ids == {"a": ["e0000"]}
    # Nothing else is due: nothing is held, though the rate would hold it.
    assert store.claim([Wanted("a", 10, t0 + 9, limits)], 10, t0 + 1).holds == {}
    seed_due(redis_client, "b", 5, t0 - 1)
    got = store.claim([Wanted("b", 10, t0 + 9)], 10, t0)
    assert (len(got.ids["b"]), got.holds) == (5, {})
    assert redis_client.exists(keys.rate_key("b"), keys.in_flight_key("b")) == 0


# --- concurrency --------------------------------------------------------------------------------


def record(store: Store, event_id: str, target: str, attempt: int, due_at: float | None) -> int:
    """Record an attempt: a retry when `due_at` is given, else delivered."""
    state = DeliveryState.RETRYING if due_at is not None else DeliveryState.DELIVERED
    return store.record(
        Record(
            event_id=event_id,
            target=target,
            attempt=attempt,
            state=state,
            reason="",
            entry=None,
            counter=None if due_at is not None else TargetStat.DELIVERED,
            failed=due_at is not None,
            counts=True,
            due_at=due_at,
        ),
        time.time(),
    )


def in_flight(conn: redis.Redis, target: str = "a") -> set[str]:
    return {m.decode() for m in conn.zrange(keys.in_flight_key(target), 0, -1)}


def test_concurrency_caps_the_attempts_in_flight_and_a_record_frees_a_slot(
    redis_client: redis.Redis,
) -> None:
    store = Store(redis_client, 3600)
    events = [make_event(["a"]) for _ in range(5)]
    store_events(redis_client, events, enqueue=False)
    two = Limits(concurrency=2)
    now = time.time()
    got = store.claim([Wanted("a", 10, now + 30, two)], 10, now)
    first = got.ids["a"]
    assert len(first) == 2
    assert in_flight(redis_client) == set(first)
    again = store.claim([Wanted("a", 10, now + 30, two)], 10, now)
    assert (again.ids, again.holds) == ({}, {"a": Hold(Held.CONCURRENCY, 0.0)})

    # A retry recorded frees its slot (the delivery waits for its retry time, not a slot).
    assert record(store, first[0], "a", 1, now + 60) == 1
    assert in_flight(redis_client) == {first[1]}
    third = store.claim([Wanted("a", 10, now + 30, two)], 10, now).ids["a"]
    assert len(third) == 1
    assert third[0] not in first
    # Delivered: the slot is free again.
    assert record(store, first[1], "a", 1, None) == 1
    assert in_flight(redis_client) == set(third)


def test_the_slot_of_a_worker_that_died_comes_back_when_its_lease_ends(
    redis_client: redis.Redis,
) -> None:
    store = Store(redis_client, 3600)
    event = make_event(["a"])
    store_events(redis_client, [event], enqueue=False)
    serial = Limits(concurrency=1)
    now = time.time()
    assert store.claim([Wanted("a", 10, now + 12, serial)], 10, now).ids == {"a": [event.id]}
    # The worker is SIGKILLed: no record. Before the lease ends, nothing may start.
    assert store.claim([Wanted("a", 10, now + 99, serial)], 10, now + 11).ids == {}
    # At the lease end the slot and the delivery come back together.
    got = store.claim([Wanted("a", 10, now + 30, serial)], 10, now + 12)
    assert got.ids == {"a": [event.id]}
    assert redis_client.zscore(keys.in_flight_key("a"), event.id) == pytest.approx(now + 30)


def test_a_stale_record_keeps_the_slot_and_releases_free_it(redis_client: redis.Redis) -> None:
    store = Store(redis_client, 3600)
    events = [make_event(["a"]) for _ in range(3)]
    store_events(redis_client, events, enqueue=False)
    now = time.time()
    taken = store.claim([Wanted("a", 10, now + 30, Limits(concurrency=3))], 10, now).ids["a"]
    assert record(store, taken[0], "a", 5, None) == 0  # not the current attempt: stale
    assert in_flight(redis_client) == set(taken)
    due_again(redis_client, [(taken[0], "a")], now + 1)  # could not start after all
    drop_due(redis_client, [(taken[1], "a")])  # nothing left to do
    assert in_flight(redis_client) == {taken[2]}
    assert taken[0] in due(redis_client, "a")
    assert taken[1] not in due(redis_client, "a")


def test_this_process_limit_and_the_concurrency_both_bound_a_claim(
    redis_client: redis.Redis,
) -> None:
    store = Store(redis_client, 3600)
    seed_due(redis_client, "a", 10, 1.0)
    got = store.claim([Wanted("a", 2, 99.0, Limits(concurrency=5))], 10, 10.0)
    assert len(got.ids["a"]) == 2
    got = store.claim([Wanted("a", 10, 99.0, Limits(concurrency=5))], 10, 10.0)
    assert len(got.ids["a"]) == 3


def test_the_probe_sees_what_the_limits_would_let_start(redis_client: redis.Redis) -> None:
    store = Store(redis_client, 3600)
    t0 = 1_800_000_000.0
    seed_due(redis_client, "a", 3, t0 - 1)
    slow, serial = rate_limits("1/m"), Limits(concurrency=1)
    assert store.anything_due([("a", slow)], t0) is True
    store.claim([Wanted("a", 1, t0 + 30, slow)], 10, t0)
    assert store.anything_due([("a", slow)], t0 + 1) is False  # held by the rate
    assert store.anything_due([("a", NO_LIMITS)], t0 + 1) is True  # the same, unlimited
    assert store.anything_due([("a", slow)], t0 + 61) is True
    redis_client.delete(keys.rate_key("a"))
    store.claim([Wanted("a", 1, t0 + 30, serial)], 10, t0)
    assert store.anything_due([("a", serial)], t0 + 1) is False  # its one slot is taken
    assert store.anything_due([("b", NO_LIMITS), ("a", NO_LIMITS)], t0 + 1) is True


# --- FIFO per key -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    events: Sequence[Event]
    dedupe_window: int = 0


def commit(conn: redis.Redis, events: Sequence[Event]) -> None:
    """Commit events the receiver's way (the intake commit script)."""
    call = commit_arguments([Batch(events)], 3600, time.time(), make_queue(conn).key)
    conn.execute_command(*call.command())


def ordered(targets: Sequence[str], *digests: str) -> Event:
    return dataclasses.replace(make_event(targets), order=digests)


def waiting(conn: redis.Redis, target: str = "a") -> int:
    return int(conn.hget(keys.order_key(target), WAITING_FIELD) or 0)


def queue_of(conn: redis.Redis, digest: str, target: str = "a") -> list[str]:
    return [m.decode() for m in conn.lrange(keys.order_queue_key(target, digest), 0, -1)]


def test_only_the_head_of_each_key_is_due(redis_client: redis.Redis) -> None:
    k1 = [ordered(["a"], "k1") for _ in range(3)]
    k2 = ordered(["a", "b"], "k2", "")
    free = make_event(["a"])
    commit(redis_client, [k1[0], k1[1], k2, k1[2], free])
    assert set(due(redis_client, "a")) == {k1[0].id, k2.id, free.id}
    assert set(due(redis_client, "b")) == {k2.id}  # unordered there
    assert queue_of(redis_client, "k1") == [e.id for e in k1]
    assert waiting(redis_client) == 2
    assert field(redis_client, k1[1].id, "o:a") == "k1"
    assert field(redis_client, k2.id, "o:b") is None
    assert field(redis_client, free.id, "o:a") is None


def test_the_next_of_a_key_is_due_only_when_the_one_before_is_over(
    redis_client: redis.Redis,
) -> None:
    store = Store(redis_client, 3600)
    e1, e2, e3 = (ordered(["a"], "k1") for _ in range(3))
    other = ordered(["a"], "k2")
    commit(redis_client, [e1, e2, e3, other])
    now = time.time()
    taken = store.claim([Wanted("a", 10, now + 30)], 10, now).ids["a"]
    assert sorted(taken) == sorted([e1.id, other.id])
    # The head retries: it holds back its own key only.
    assert record(store, e1.id, "a", 1, now + 60) == 1
    assert set(due(redis_client, "a")) == {e1.id, other.id}
    assert record(store, other.id, "a", 1, None) == 1
    assert set(due(redis_client, "a")) == {e1.id}
    assert redis_client.exists(keys.order_queue_key("a", "k2")) == 0
    # Delivered at last: the next one is due now, the third still waits.
    assert record(store, e1.id, "a", 2, None) == 1
    assert set(due(redis_client, "a")) == {e2.id}
    assert due(redis_client, "a")[e2.id] <= time.time()
    assert queue_of(redis_client, "k1") == [e2.id, e3.id]
    assert waiting(redis_client) == 1


def test_a_crashed_head_keeps_its_place(redis_client: redis.Redis) -> None:
    store = Store(redis_client, 3600)
    e1, e2 = ordered(["a"], "k1"), ordered(["a"], "k1")
    commit(redis_client, [e1, e2])
    now = time.time()
    assert store.claim([Wanted("a", 10, now + 12)], 10, now).ids == {"a": [e1.id]}
    # Its worker died: no record. The head comes back when its lease ends, the next waits.
    assert store.claim([Wanted("a", 10, now + 99)], 10, now + 11).ids == {}
    assert store.claim([Wanted("a", 10, now + 99)], 10, now + 12).ids == {"a": [e1.id]}


def test_dead_expired_and_duplicate_heads_let_the_next_go(redis_client: redis.Redis) -> None:
    store = Store(redis_client, 3600)
    events = [ordered(["a"], "k1") for _ in range(4)]
    commit(redis_client, events)
    dead = store.record(
        Record(events[0].id, "a", 1, DeliveryState.DEAD, "out of attempts", None,
               TargetStat.DEAD, True, True),
        time.time(),
    )  # fmt: skip
    assert dead == 1
    assert set(due(redis_client, "a")) == {events[1].id}
    # Its event expired (retention) while it was the head.
    redis_client.delete(keys.event_key(events[1].id))
    assert record(store, events[1].id, "a", 1, None) == -1
    assert set(due(redis_client, "a")) == {events[2].id}
    # An inbound duplicate.
    mark_duplicate(redis_client, dataclasses.replace(events[2]), 3600)
    assert set(due(redis_client, "a")) == {events[3].id}
    assert waiting(redis_client) == 0


def test_a_claimed_head_with_nothing_left_to_do_lets_the_next_go(
    redis_client: redis.Redis,
) -> None:
    e1, e2 = ordered(["a"], "k1"), ordered(["a"], "k1")
    commit(redis_client, [e1, e2])
    redis_client.delete(keys.event_key(e1.id))  # expired: the worker finds no event
    drop_due(redis_client, [(e1.id, "a")])
    assert set(due(redis_client, "a")) == {e2.id}
    assert redis_client.hget(keys.order_key("a"), e2.id) == b"k1"


def test_a_replay_goes_after_what_already_waits_for_its_key(redis_client: redis.Redis) -> None:
    store = Store(redis_client, 3600)
    e1, e2, e3 = (ordered(["a"], "k1") for _ in range(3))
    commit(redis_client, [e1, e2, e3])
    dead = Record(e1.id, "a", 1, DeliveryState.DEAD, "out", None, TargetStat.DEAD, True, True)
    assert store.record(dead, time.time()) == 1
    assert replay_delivery(redis_client, e1.id, "a").ok
    assert queue_of(redis_client, "k1") == [e2.id, e3.id, e1.id]
    assert set(due(redis_client, "a")) == {e2.id}
    assert record(store, e2.id, "a", 1, None) == 1
    assert record(store, e3.id, "a", 1, None) == 1
    assert set(due(redis_client, "a")) == {e1.id}
    # With nothing waiting for its key, a replay is due at once.
    assert record(store, e1.id, "a", 2, None) == 1
    e4 = ordered(["a"], "k9")
    commit(redis_client, [e4])
    store.record(
        Record(e4.id, "a", 1, DeliveryState.DEAD, "out", None, TargetStat.DEAD, True, True),
        time.time(),
    )
    assert replay_delivery(redis_client, e4.id, "a").ok
    assert set(due(redis_client, "a")) == {e4.id}


def test_the_commit_arguments_of_ordered_events() -> None:
    plain = make_event(["a", "b"])
    mixed = ordered(["a", "b"], "", "k1")
    call = commit_arguments([Batch([plain, mixed])], 3600, 1.0, "rq:queue:relay")
    assert call.keys[4:] == [
        keys.event_key(plain.id),
        keys.source_stats_key("shop"),
        keys.due_key("a"),
        keys.due_key("b"),
        keys.event_key(mixed.id),
        keys.source_stats_key("shop"),
        keys.due_key("a"),
        keys.due_key("b"),
        keys.order_key("b"),
    ]
    assert call.args[-2].endswith(b"ab")  # no order items
    assert call.args[-1].endswith(b"abk1")  # "", "", "k1"


# --- what status and metrics read ---------------------------------------------------------------


def test_reading_the_control_state_and_what_is_held(redis_client: redis.Redis) -> None:
    store = Store(redis_client, 3600)
    commit(redis_client, [ordered(["a"], "k1") for _ in range(3)])
    now = time.time()
    limits = Limits(interval=60.0, tolerance=0.5, concurrency=1)
    seed_due(redis_client, "a", 2, now - 5)
    store.claim([Wanted("a", 10, now + 30, limits)], 10, now)
    reading = read_control(redis_client, ["a", "idle"], now)
    assert reading["a"].in_flight == 1
    assert reading["a"].waiting == 2
    assert reading["a"].keys == 1
    assert reading["a"].next_start is not None
    assert reading["a"].next_start > now
    assert reading["idle"].in_flight == reading["idle"].waiting == 0
    assert held_counts(limits, reading["a"], 2, now) == {"rate": 0, "concurrency": 2, "order": 2}
    assert held_counts(Limits(interval=60.0, tolerance=0.5), reading["a"], 2, now) == {
        "rate": 2,
        "concurrency": 0,
        "order": 2,
    }
    assert held_counts(NO_LIMITS, reading["idle"], 0, now) == {
        "rate": 0,
        "concurrency": 0,
        "order": 0,
    }


def test_a_spooled_event_keeps_its_fifo_keys() -> None:
    event = ordered(["a", "b"], "k1", "")
    back = decode_payload(encode_record(SpooledEvent(event, 0.0))[12:]).event
    assert back.order == ("k1", "")
    # A record spooled by a version without FIFO per key reads as unordered.
    payload = encode_record(SpooledEvent(event))[12:]  # past magic, length and CRC
    size = int.from_bytes(payload[:4], "big")
    meta = orjson.loads(payload[4 : 4 + size])
    del meta["order"]
    older = orjson.dumps(meta)
    body = payload[4 + size :]
    assert decode_payload(len(older).to_bytes(4, "big") + older + body).event.order == ()


def test_only_a_claim_that_took_a_slot_frees_one(redis_client: redis.Redis) -> None:
    """A target without concurrency records with no in-flight command (it pays nothing)."""
    event = make_event(["a"])
    store_events(redis_client, [event], enqueue=False)
    redis_client.zadd(keys.in_flight_key("a"), {event.id: 1e12})  # left there by hand
    store = Store(redis_client, 3600)
    now = time.time()
    assert store.claim([Wanted("a", 10, now + 30)], 10, now).ids == {"a": [event.id]}
    assert record(store, event.id, "a", 1, None) == 1
    assert in_flight(redis_client) == {event.id}  # untouched: the claim took no slot
