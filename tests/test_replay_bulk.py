"""Bulk replay (relay.ops.deliveries.bulk): batches of dead deliveries put back by one script
call each, with the results and writes of one `replay_delivery` per delivery, and one kick per
batch at most instead of one RQ job per delivery. Against a real redis-server."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
import redis

import relay.ops.deliveries.batches as bulk
from relay.ops import deliveries as ops
from relay.store import keys
from relay.store.commit import commit_arguments
from relay.store.deliveries import Record, Store
from relay.store.queue import KICKS_ENOUGH, make_queue
from relay.store.records import DeliveryState, Event, TargetStat
from tests.support.seed_events import make_event
from tests.support.seed_states import seed_dead, seed_event
from tests.support.stored import due as due_entries
from tests.support.stored import queued_jobs


@dataclasses.dataclass(frozen=True)
class Batch:
    """What the commit script's arguments take of a receiver's batch."""

    events: Sequence[Event]
    dedupe_window: int = 0


def seed_mix(conn: redis.Redis) -> list[tuple[str, str]]:
    """Dead, gone, delivered, in-flight, expired and unrouted deliveries: what to replay."""
    dead = [seed_dead(conn, "crm", made=n) for n in (1, 3, 10)]
    gone = seed_dead(conn, "crm", made=1, state=DeliveryState.GONE, reason="HTTP 410")
    two = seed_event(
        conn,
        deliveries={"crm": ("dead", 2, "x"), "analytics": ("delivered", 1, "")},
        dead_at={"crm": 1.0},
    )
    pending = seed_event(conn, deliveries={"crm": ("pending", 2, "")})
    conn.zadd(keys.DEAD, {keys.dead_member("evt_OLD", "crm"): 1.0})
    return [
        *((d, "crm") for d in dead),
        (gone, "crm"),
        (two, "crm"),
        (two, "analytics"),
        (pending, "crm"),
        ("evt_OLD", "crm"),
        (dead[0], "billing"),
        (dead[1], "crm"),  # twice: replayed once
    ]


def written(conn: redis.Redis, pairs: Sequence[tuple[str, str]]) -> list[Any]:
    """What a replay writes, by the pairs' places (ids differ between seedings), without the
    times it writes (due scores, TTLs)."""
    events = [conn.hgetall(keys.event_key(e)) for e, _ in pairs]
    dead = [conn.zscore(keys.DEAD, keys.dead_member(e, t)) is not None for e, t in pairs]
    due = [conn.zscore(keys.due_key(t), e) is not None for e, t in pairs]
    stats = conn.hgetall(keys.target_stats_key("crm"))
    return [events, dead, due, stats, conn.smembers(keys.DUE_TARGETS)]


def test_bulk_replay_gives_and_writes_what_one_replay_per_delivery_does(
    redis_client: redis.Redis,
) -> None:
    pairs = seed_mix(redis_client)
    expected = [ops.replay_delivery(redis_client, e, t, retention=3600) for e, t in pairs]
    after_each = written(redis_client, pairs)
    redis_client.flushall()
    pairs = seed_mix(redis_client)
    got = ops.replay_deliveries(redis_client, pairs, retention=3600)
    outcomes = [(r.outcome, r.state, r.attempt, r.message != "") for r in got]
    # A pair named twice is replayed once, and its result given for both (the last pair).
    assert got[-1] == got[1]
    assert (
        outcomes[:-1] == [(r.outcome, r.state, r.attempt, r.message != "") for r in expected][:-1]
    )
    assert [r.outcome for r in got] == [
        *["replayed"] * 5, "not_dead", "not_dead", "expired", "unknown_target", "replayed"
    ]  # fmt: skip
    assert written(redis_client, pairs) == after_each
    assert redis_client.hget(keys.target_stats_key("crm"), "replayed") == b"5"
    assert len(due_entries(redis_client, "crm")) == 5
    assert redis_client.zcard(keys.DEAD) == 1  # evt_OLD's, which cannot be replayed
    assert len(queued_jobs(redis_client)) == 1  # one kick, not one per delivery


def test_a_bulk_replay_enqueues_a_few_kicks_for_many_batches(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "REPLAY_BATCH", 4)
    pairs = [(seed_dead(redis_client, "crm"), "crm") for _ in range(20)]
    seen: list[int] = []
    results = ops.replay_deliveries(redis_client, pairs, progress=seen.append)
    assert all(r.outcome == "replayed" and r.attempt == 11 for r in results)
    assert seen == [4, 8, 12, 16, 20]
    assert len(queued_jobs(redis_client)) == KICKS_ENOUGH
    assert set(due_entries(redis_client, "crm")) == {e for e, _ in pairs}
    fields = redis_client.hmget(keys.event_key(pairs[0][0]), ["s:crm", "b:crm", "r:crm"])
    assert fields == [b"pending", b"10", b""]


def test_a_delivery_changed_after_the_read_is_read_again(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The script refuses a delivery no longer as read; the next read finds it not dead."""
    raced, calm = seed_dead(redis_client, "crm"), seed_dead(redis_client, "crm")
    real_write = bulk._write
    calls: list[int] = []

    def racing_write(conn: redis.Redis, *args: Any) -> list[bool]:
        if not calls:  # another replay (or a worker) gets there between our read and write
            conn.hset(keys.event_key(raced), "s:crm", "pending")
        calls.append(1)
        return real_write(conn, *args)

    monkeypatch.setattr(bulk, "_write", racing_write)
    first, second = ops.replay_deliveries(redis_client, [(raced, "crm"), (calm, "crm")])
    assert (first.outcome, first.state) == ("not_dead", "pending")
    assert second.outcome == "replayed"
    assert redis_client.hget(keys.event_key(raced), "b:crm") is None
    assert redis_client.zscore(keys.DEAD, keys.dead_member(raced, "crm")) is not None
    assert set(due_entries(redis_client, "crm")) == {calm}
    assert len(calls) == 1  # nothing left to write after the second read


def test_a_bulk_replay_to_an_ordered_target_joins_its_key_queue(
    redis_client: redis.Redis,
) -> None:
    events = [dataclasses.replace(make_event(["a"]), order=("k1",)) for _ in range(3)]
    call = commit_arguments([Batch(events)], 3600, 1.0, make_queue(redis_client).key)
    redis_client.execute_command(*call.command())
    store = Store(redis_client, 3600)
    dead = Record(
        events[0].id, "a", 1, DeliveryState.DEAD, "out", None, TargetStat.DEAD, True, True
    )
    assert store.record(dead, 2.0) == 1
    [result] = ops.replay_deliveries(redis_client, [(events[0].id, "a")])
    assert result.outcome == "replayed"
    queue = redis_client.lrange(keys.order_queue_key("a", "k1"), 0, -1)
    assert [m.decode() for m in queue] == [events[1].id, events[2].id, events[0].id]
    assert set(due_entries(redis_client, "a")) == {events[1].id}
