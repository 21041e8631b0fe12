"""Recording many deliveries in one script call (Store.record_many, lua/record.lua).

The batched call must leave Redis exactly as the same records applied one call each would: the
states, attempt logs, counters, due sets, in-flight sets, FIFO queues and dead letters. Checked
on random mixes (current and stale attempts, the same delivery twice, expired events, ordered
and unordered targets, a target with concurrency) against a real redis-server, one database
recorded in one call and another one record at a time.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.store import keys
from relay.store.commit import commit_arguments
from relay.store.control import Limits
from relay.store.deliveries import Record, Store, Wanted
from relay.store.queue import make_queue
from relay.store.records import AttemptRecord, DeliveryState, Event, Outcome, TargetStat
from tests.support.seed_events import make_event
from tests.support.stored import due

NOW = 1_800_000_000.0


@dataclasses.dataclass(frozen=True)
class Batch:
    """What the commit script's arguments take of a receiver's batch."""

    events: Sequence[Event]
    dedupe_window: int = 0


#: What a record says became of the attempt: (state, counter, failed, retry in s or None).
OUTCOMES = {
    "delivered": (DeliveryState.DELIVERED, TargetStat.DELIVERED, False, None),
    "retry": (DeliveryState.RETRYING, None, True, 30.0),
    "dead": (DeliveryState.DEAD, TargetStat.DEAD, True, None),
}


def commit(conn: redis.Redis, events: Sequence[Event]) -> None:
    call = commit_arguments([Batch(events)], 3600, NOW, make_queue(conn).key)
    conn.execute_command(*call.command())


def events_of(digests: Sequence[str]) -> list[Event]:
    """One event per digest, routed to `a` (ordered by that key, "" unordered) and `b`."""
    return [
        dataclasses.replace(make_event(["a", "b"]), order=(d, "") if d else ()) for d in digests
    ]


def record_of(event: Event, target: str, attempt: int, outcome: str) -> Record:
    state, counter, failed, retry_in = OUTCOMES[outcome]
    entry = AttemptRecord(
        target, attempt, NOW, 0.1, 500 if failed else 200, "", Outcome(counter or "retry"), "",
        retry_in,
    )  # fmt: skip
    return Record(
        event.id, target, attempt, state, outcome, entry, counter, failed, True,
        None if retry_in is None else NOW + retry_in,
    )  # fmt: skip


def snapshot(conn: redis.Redis) -> dict[bytes, Any]:
    """Every key's type and value, and whether it expires."""
    found: dict[bytes, Any] = {}
    for key in conn.scan_iter(count=1000):
        kind = conn.type(key)
        if kind == b"hash":
            value: Any = conn.hgetall(key)
        elif kind == b"list":
            value = conn.lrange(key, 0, -1)
        elif kind == b"zset":
            value = conn.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            value = conn.smembers(key)
        else:
            value = conn.get(key)
        found[key] = (kind, value, conn.ttl(key) > 0)
    return found


def prepare(conn: redis.Redis, events: Sequence[Event], gone: Sequence[int]) -> Store:
    """Commit the events, claim every due delivery (`a` with concurrency), expire some."""
    commit(conn, events)
    store = Store(conn, 3600)
    wanted = [Wanted("a", 100, NOW + 60, Limits(concurrency=100)), Wanted("b", 100, NOW + 60)]
    store.claim(wanted, 200, NOW)
    for i in gone:
        conn.delete(keys.event_key(events[i].id))
    return store


records_st = st.lists(
    st.tuples(
        st.integers(0, 5),  # event
        st.sampled_from(["a", "b"]),
        st.sampled_from([1, 1, 1, 2]),  # 2: stale (no attempt 1 was recorded first) or a retry's
        st.sampled_from(sorted(OUTCOMES)),
    ),
    min_size=1,
    max_size=30,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    digests=st.lists(st.sampled_from(["", "k1", "k2"]), min_size=6, max_size=6),
    gone=st.sets(st.integers(0, 5), max_size=2),
    picks=records_st,
)
def test_one_call_writes_what_one_call_per_record_writes(
    redis_url: str, digests: list[str], gone: set[int], picks: list[tuple[int, str, int, str]]
) -> None:
    base = redis_url.rsplit("/", 1)[0]
    one, each = redis.Redis.from_url(f"{base}/0"), redis.Redis.from_url(f"{base}/1")
    try:
        one.flushall()
        events = events_of(digests)
        records = [record_of(events[e], t, n, what) for e, t, n, what in picks]
        batched, single = prepare(one, events, sorted(gone)), prepare(each, events, sorted(gone))
        got = batched.record_many(records, NOW)
        expected = [single.record(r, NOW) for r in records]
        assert got == expected
        assert snapshot(one) == snapshot(each)
    finally:
        one.close()
        each.close()


def test_a_batch_runs_fewer_commands_than_a_call_per_delivery(redis_client: redis.Redis) -> None:
    events = events_of([""] * 32)
    store = prepare(redis_client, events, [])
    records = [record_of(e, t, 1, "delivered") for e in events for t in ("a", "b")]
    redis_client.config_resetstat()
    assert store.record_many(records, NOW) == [1] * 64
    stats = redis_client.info("commandstats")
    inner = sum(
        v["calls"] for k, v in stats.items() if k not in ("cmdstat_evalsha", "cmdstat_eval")
    )
    # Per delivery: HMGET, HSET, RPUSH; per event: two EXPIREs; per call and target: the
    # counters, the due set and the in-flight set (record.lua once had 11 per delivery).
    assert inner / len(records) < 5
    assert due(redis_client, "a") == {}
    assert due(redis_client, "b") == {}
    assert redis_client.zcard(keys.in_flight_key("a")) == 0
    stats_a = redis_client.hgetall(keys.target_stats_key("a"))
    assert stats_a == {b"attempts": b"32", b"delivered": b"32"}


def test_a_batch_larger_than_one_call_is_split(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    import relay.store.deliveries as deliveries

    monkeypatch.setattr(deliveries, "RECORD_BATCH", 3)
    events = events_of([""] * 4)
    store = prepare(redis_client, events, [1])
    records = [record_of(e, "b", 1, "retry") for e in events]
    assert store.record_many(records, time.time()) == [1, -1, 1, 1]
    assert set(due(redis_client, "b")) == {events[0].id, events[2].id, events[3].id}
