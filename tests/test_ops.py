"""relay.ops.deliveries and relay.cli.tables against a real redis-server: dead letters, status and
replay."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from relay.cli.tables import cell_text, render_fields, render_table
from relay.core.states import DeliveryState
from relay.ops import deliveries as ops
from relay.store import keys
from relay.store.deliveries import Record, Store, Wanted
from relay.store.queue import DELIVER_DUE, kick, make_queue
from relay.store.records import AttemptRecord, TargetStat
from tests.support.seed_events import make_event, store_events
from tests.support.seed_states import NOW, attempt_record, seed_dead, seed_event
from tests.support.stored import due as due_entries
from tests.support.stored import queued_jobs

# ---------------------------------------------------------------------------------------------
# tables


def test_render_table_pads_columns_and_right_aligns_numbers() -> None:
    text = render_table(("NAME", "COUNT", "NOTE"), [("crm", 5, "ok"), ("analytics", 120, None)])
    assert text.splitlines() == [
        "NAME       COUNT  NOTE",
        "crm            5  ok",
        "analytics    120  -",
    ]


def test_render_table_keeps_each_row_on_one_line() -> None:
    text = render_table(("A", "B"), [("two\nlines", "tab\there")])
    assert text.splitlines() == ["A          B", "two lines  tab here"]


def test_render_table_without_rows_prints_the_header() -> None:
    assert render_table(("A", "BB"), []) == "A  BB"


_word = st.text(
    alphabet=st.characters(codec="ascii", categories=["L", "N", "P"]), min_size=1, max_size=12
)
_cell = st.one_of(st.integers(-(10**9), 10**9), _word, st.none())


@given(st.integers(1, 5).flatmap(lambda n: st.lists(st.lists(_cell, min_size=n, max_size=n))))
def test_render_table_keeps_every_cell_in_its_column(rows: list[list[object]]) -> None:
    """Whatever the cells, each line holds exactly its cells, in order, and no more width."""
    headers = [f"H{i}" for i in range(len(rows[0]) if rows else 1)]
    rows = [row[: len(headers)] for row in rows] if rows else []
    lines = render_table(headers, rows).splitlines()
    assert len(lines) == len(rows) + 1
    assert lines[0].split() == headers
    for line, row in zip(lines[1:], rows, strict=True):
        assert line.split() == [cell_text(v) for v in row]
        assert line == line.rstrip()
    # No line is wider than its columns need: the widest cell of each, two spaces between.
    columns = zip(headers, *([cell_text(v) for v in row] for row in rows), strict=True)
    width = sum(max(len(x) for x in col) for col in columns) + 2 * (len(headers) - 1)
    assert max(len(line) for line in lines) <= width


def test_render_fields_aligns_values() -> None:
    assert render_fields([("source", "fellow"), ("content type", None)]) == (
        "source:       fellow\ncontent type: -"
    )


# ---------------------------------------------------------------------------------------------
# Attempt records


def test_attempt_from_json_reads_worker_records() -> None:
    record = ops.Attempt.from_redis(orjson.dumps(attempt_record("crm", 3, 502)))
    assert record == ops.Attempt(
        target="crm",
        attempt=3,
        at=NOW - 997,
        duration=0.0125,
        status=502,
        error="",
        outcome="retry",
        response="oops",
    )


def test_attempt_from_json_tolerates_junk() -> None:
    broken = ops.Attempt.from_redis(b"not json")
    assert broken.error == "unreadable attempt record: b'not json'"
    assert ops.Attempt.from_redis(b"[1, 2]") == ops.Attempt.unreadable(
        "unreadable attempt record: b'[1, 2]'"
    )
    odd = ops.Attempt.from_redis(b'{"attempt": "3", "status": true, "duration": 0.5}')
    assert (odd.attempt, odd.status, odd.duration) == (3, None, 0.5)


# ---------------------------------------------------------------------------------------------
# Dead letters


def test_list_dead_newest_first_joined_with_event_fields(redis_client: redis.Redis) -> None:
    old = seed_dead(redis_client, "crm", at=NOW - 900, made=10, reason="HTTP 500")
    new = seed_dead(
        redis_client,
        "analytics",
        at=NOW - 100,
        made=1,
        reason="HTTP 410 Gone",
        state=DeliveryState.GONE,
        source="learn365",
        event_type="CourseCompleted",
        received=NOW - 200,
    )
    letters = ops.list_dead(redis_client)
    assert [d.event_id for d in letters] == [new, old]
    assert letters[0] == ops.DeadLetter(
        event_id=new,
        target="analytics",
        dead_at=NOW - 100,
        state="gone",
        source="learn365",
        type="CourseCompleted",
        received_at=NOW - 200,
        attempts=1,
        reason="HTTP 410 Gone",
        expired=False,
    )
    assert letters[1].to_json()["reason"] == "HTTP 500"


def test_list_dead_filters(redis_client: redis.Redis) -> None:
    a = seed_dead(redis_client, "crm", at=NOW - 50, event_type="COURSEMEMBER_ADDED")
    b = seed_dead(redis_client, "crm", at=NOW - 5000, event_type="COURSE_PUBLISHED")
    c = seed_dead(redis_client, "analytics", at=NOW - 60, source="strigo", event_type="x.y")
    d = seed_dead(redis_client, "crm", at=NOW - 70, event_type="COURSEMEMBER_REMOVED")

    def ids(**kw: Any) -> list[str]:
        return [x.event_id for x in ops.list_dead(redis_client, ops.DeadFilter(**kw))]

    assert ids() == [a, c, d, b]
    assert ids(target="crm") == [a, d, b]
    assert ids(target="analytics") == [c]
    assert ids(source="strigo") == [c]
    assert ids(source="fellow") == [a, d, b]
    assert ids(event_type="COURSEMEMBER_*") == [a, d]
    assert ids(event_type="coursemember_*") == []  # globs are case-sensitive, as in routes
    assert ids(since=NOW - 65) == [a, c]
    assert ids(since=NOW - 65, target="crm") == [a]
    assert ids(limit=2) == [a, c]
    assert ids(limit=2, target="crm", event_type="COURSE*") == [a, d]
    assert ids(event_ids=(b, c)) == [c, b]
    assert ids(target="nobody") == []


def test_list_dead_reads_past_one_chunk(redis_client: redis.Redis) -> None:
    entries = {keys.dead_member(f"evt_{i:026d}", "crm"): NOW - i for i in range(1203)}
    redis_client.zadd(keys.DEAD, entries)
    letters = ops.list_dead(redis_client)
    assert len(letters) == 1203
    assert letters[0].event_id == f"evt_{0:026d}"
    assert letters[-1].event_id == f"evt_{1202:026d}"
    assert all(d.expired for d in letters)  # no event hashes were written
    assert len(ops.list_dead(redis_client, ops.DeadFilter(limit=501))) == 501


def test_list_dead_marks_expired_events(redis_client: redis.Redis) -> None:
    redis_client.zadd(keys.DEAD, {keys.dead_member("evt_GONE", "crm"): NOW})
    [letter] = ops.list_dead(redis_client)
    assert letter.expired
    assert (letter.source, letter.type, letter.attempts, letter.state) == ("", None, 0, "")
    assert ops.list_dead(redis_client, ops.DeadFilter(source="fellow")) == []


def test_dead_count_by_target(redis_client: redis.Redis) -> None:
    for _ in range(3):
        seed_dead(redis_client, "crm")
    seed_dead(redis_client, "analytics")
    assert ops.dead_count_by_target(redis_client) == {"crm": 3, "analytics": 1}


def test_show_event_returns_request_deliveries_and_attempts(redis_client: redis.Redis) -> None:
    event_id = seed_event(
        redis_client,
        deliveries={"crm": ("dead", 3, "HTTP 500"), "analytics": ("delivered", 1, "")},
        dead_at={"crm": NOW - 10},
        replay_base={"crm": 1},
        attempts=[
            attempt_record("crm", 1),
            attempt_record("analytics", 1, 200, outcome="delivered"),
            attempt_record("crm", 2, None),
            attempt_record("crm", 3),
        ],
    )
    detail = ops.show_event(redis_client, event_id)
    assert detail is not None
    assert detail.event is not None
    assert detail.event.source == "fellow"
    assert detail.event.body == b'{"event": "COURSEMEMBER_ADDED", "id": 7}'
    assert detail.deliveries == (
        ops.Delivery("crm", "dead", 3, "HTTP 500", before_replay=1, dead_at=NOW - 10),
        ops.Delivery("analytics", "delivered", 1, "", before_replay=0, dead_at=None),
    )
    assert [(a.target, a.attempt, a.status) for a in detail.attempts] == [
        ("crm", 1, 500),
        ("analytics", 1, 200),
        ("crm", 2, None),
        ("crm", 3, 500),
    ]
    only_crm = ops.show_event(redis_client, event_id, target="crm")
    assert only_crm is not None
    assert [d.target for d in only_crm.deliveries] == ["crm"]
    assert [a.attempt for a in only_crm.attempts] == [1, 2, 3]


def test_show_event_expired_or_unknown(redis_client: redis.Redis) -> None:
    redis_client.zadd(keys.DEAD, {keys.dead_member("evt_OLD", "crm"): NOW})
    detail = ops.show_event(redis_client, "evt_OLD")
    assert detail is not None
    assert detail.event is None
    assert detail.deliveries == (ops.Delivery("crm", "", 0, "", 0, NOW),)
    assert ops.show_event(redis_client, "evt_NOPE") is None
    # Another event whose id starts the same is not mistaken for this one.
    redis_client.zadd(keys.DEAD, {keys.dead_member("evt_OLD-1", "crm"): NOW})
    again = ops.show_event(redis_client, "evt_OLD")
    assert again is not None
    assert len(again.deliveries) == 1


# ---------------------------------------------------------------------------------------------
# Status


def worker_record(
    store: Store, event_id: str, attempt: int, state: str, due_at: float | None
) -> int:
    """Record the outcome of an attempt to crm as worker.recording.finalize does: 1, 0 stale, -1."""
    delivered = state == DeliveryState.DELIVERED
    record = Record(
        event_id=event_id,
        target="crm",
        attempt=attempt,
        state=state,
        reason="",
        entry=AttemptRecord.from_redis(
            orjson.dumps(attempt_record("crm", attempt, 200 if delivered else 500))
        ),
        counter=TargetStat.DELIVERED if delivered else None,
        failed=not delivered,
        counts=True,
        due_at=due_at,
    )
    return store.record(record, time.time())


def test_collect_status_counts_figures_per_target(redis_client: redis.Redis) -> None:
    now = time.time()
    queue = make_queue(redis_client)
    # Fresh events as the receiver writes them: due since they were received, and one kick.
    seed_event(
        redis_client,
        received=now - 5,
        deliveries={"crm": ("pending", 0, ""), "analytics": ("pending", 0, "")},
        due={"crm": now - 5, "analytics": now - 5},
    )
    seed_event(
        redis_client, received=now - 4, deliveries={"crm": ("pending", 0, "")}, due={"crm": now - 4}
    )
    # An inbound duplicate: marked so, and off the due sets.
    seed_event(redis_client, deliveries={"crm": ("duplicate", 0, "dedupe")})
    kick(queue)
    # A dead letter replayed now for analytics: due at once, with a kick of its own.
    replayed = seed_dead(redis_client, "analytics", made=4)
    assert ops.replay_delivery(redis_client, replayed, "analytics").ok
    # Two retries for crm waiting for their time, and a delivery already over (off the set).
    for _ in range(2):
        seed_event(redis_client, deliveries={"crm": ("retrying", 1, "")}, due={"crm": now + 3600})
    seed_event(redis_client, deliveries={"crm": ("delivered", 1, "")})
    # A target whose deliveries are all over keeps its name in relay:duetargets: no row.
    redis_client.sadd(keys.DUE_TARGETS, "drained")
    # Dead letters and counters.
    seed_dead(redis_client, "crm")
    seed_dead(redis_client, "legacy")
    redis_client.hset(
        keys.target_stats_key("crm"),
        mapping={"delivered": 40, "dead": 2, "attempts": 55, "failures": 15, "replayed": 1},
    )
    redis_client.hset(keys.target_stats_key("analytics"), mapping={"delivered": 7, "gone": 1})
    redis_client.hset(
        keys.source_stats_key("fellow"), mapping={"received": 48, "duplicates": 1, "unrouted": 2}
    )

    status = ops.collect_status(redis_client, ["crm", "analytics", "idle"])

    # The queue holds the two kicks; RQ schedules nothing (retries wait in the due sets).
    assert status.queue == ops.QueueStatus(
        name="relay", queued=2, started=0, scheduled=0, failed=0, deferred=0
    )
    assert status.workers == 0
    by_name = {t.name: t for t in status.targets}
    assert [t.name for t in status.targets] == ["crm", "analytics", "idle", "legacy"]
    assert by_name["crm"] == ops.TargetStatus(
        name="crm",
        configured=True,
        pending=2,
        scheduled=2,
        dead_letters=1,
        delivered=40,
        dead=2,
        gone=0,
        attempts=55,
        failures=15,
        replayed=1,
    )
    assert by_name["analytics"] == ops.TargetStatus(
        "analytics", True, pending=2, scheduled=0, dead_letters=0, delivered=7, gone=1, replayed=1
    )
    assert by_name["idle"] == ops.TargetStatus("idle", True, 0, 0, 0)
    assert by_name["legacy"] == ops.TargetStatus("legacy", False, 0, 0, 1)
    assert status.sources == (ops.SourceStatus("fellow", 48, 1, 2),)
    doc = status.to_json()
    assert doc["queue"]["queued"] == 2
    assert doc["targets"][0]["name"] == "crm"
    assert set(doc) == {"at", "queue", "workers", "targets", "sources", "reconciled"}
    assert doc["reconciled"] == []  # no source with a reconcile table


def test_collect_status_counts_each_delivery_once_where_it_stands(
    redis_client: redis.Redis,
) -> None:
    """Status follows the worker's own writes: claimed (leased), retried, delivered, stale."""
    store = Store(redis_client, 3600)
    events = [make_event(["crm"]) for _ in range(4)]
    store_events(redis_client, events)

    def crm() -> tuple[int, int]:
        [target] = ops.collect_status(redis_client).targets
        return target.pending, target.scheduled

    assert crm() == (4, 0)  # fresh events: due since they were received
    now = time.time()
    taken = store.claim([Wanted("crm", 3, now + 40)], 10, now).ids["crm"]
    assert len(taken) == 3
    # In flight: due again only when the lease ends, so counted later, never also pending.
    assert crm() == (1, 3)
    a, b, c = taken
    assert worker_record(store, a, 1, DeliveryState.RETRYING, now + 60) == 1  # a retry in a minute
    assert worker_record(store, b, 1, DeliveryState.DELIVERED, None) == 1  # over: off the due set
    assert (
        worker_record(store, c, 1, DeliveryState.RETRYING, now - 1) == 1
    )  # its retry time has come
    assert crm() == (2, 1)
    # Stale duplicates of attempts already recorded (a lease ended while they ran) change
    # nothing: neither the delivered one nor the retry waiting for its time.
    assert worker_record(store, b, 1, DeliveryState.RETRYING, now + 60) == 0
    assert worker_record(store, a, 1, DeliveryState.DELIVERED, None) == 0
    assert crm() == (2, 1)
    [d] = {e.id for e in events} - set(taken)
    assert due_entries(redis_client, "crm").keys() == {a, c, d}
    assert due_entries(redis_client, "crm")[a] == now + 60


def test_due_counts_put_each_entry_on_one_side_of_now(redis_client: redis.Redis) -> None:
    redis_client.zadd(keys.due_key("crm"), {"evt_a": NOW - 1, "evt_b": NOW, "evt_c": NOW + 0.001})
    redis_client.zadd(keys.due_key("analytics"), {"evt_d": NOW + 3600})
    pending, later = ops.due_counts(redis_client, ["crm", "analytics", "idle"], NOW)
    assert pending == {"crm": 2}  # due at exactly now is due now
    assert later == {"crm": 1, "analytics": 1}


def test_collect_status_is_exact_however_many_deliveries_wait(redis_client: redis.Redis) -> None:
    """No sampling: thousands of deliveries due now and later are each counted."""
    now = time.time()
    redis_client.zadd(keys.due_key("crm"), {f"evt_N{i:025d}": now - 1 - i for i in range(6000)})
    redis_client.zadd(keys.due_key("crm"), {f"evt_L{i:025d}": now + 600 + i for i in range(2500)})
    redis_client.zadd(keys.due_key("analytics"), {f"evt_A{i:025d}": now - 1 for i in range(7)})
    redis_client.sadd(keys.DUE_TARGETS, "crm", "analytics")
    status = ops.collect_status(redis_client)
    assert [(t.name, t.pending, t.scheduled) for t in status.targets] == [
        ("analytics", 7, 0),
        ("crm", 6000, 2500),
    ]
    assert "approximate" not in status.to_json()


def test_collect_status_on_an_empty_redis(redis_client: redis.Redis) -> None:
    status = ops.collect_status(redis_client)
    assert status.targets == ()
    assert status.sources == ()
    assert status.queue.queued == 0


# ---------------------------------------------------------------------------------------------
# Replay


def assert_one_kick(conn: redis.Redis) -> None:
    """Exactly one job waits, and it is a kick: deliver_due, no arguments, no result kept."""
    [job] = queued_jobs(conn)
    assert job.func_name == DELIVER_DUE
    assert (list(job.args), job.kwargs) == ([], {})
    assert job.result_ttl == 0


def assert_not_due(conn: redis.Redis, *targets: str) -> None:
    """Nothing waits for those targets: no due entry, no kick."""
    for target in targets:
        assert due_entries(conn, target) == {}, target
    assert queued_jobs(conn) == []


def test_replay_delivery_makes_it_due_now_atomically_at_the_next_attempt(
    redis_client: redis.Redis,
) -> None:
    event_id = seed_dead(redis_client, "crm", made=10, ttl=60, replay_base=None)
    redis_client.rpush(keys.attempts_key(event_id), b"{}")
    redis_client.expire(keys.attempts_key(event_id), 60)

    before = time.time()
    result = ops.replay_delivery(redis_client, event_id, "crm", retention=3600)
    after = time.time()

    assert result.outcome == "replayed"
    assert result.ok
    assert (result.state, result.attempt) == ("dead", 11)
    fields = redis_client.hgetall(keys.event_key(event_id))
    assert fields[b"s:crm"] == b"pending"
    assert fields[b"n:crm"] == b"10"  # attempts made are history; the replay starts at 11
    assert fields[b"b:crm"] == b"10"  # the worker gives the replay a fresh budget
    assert fields[b"r:crm"] == b""
    assert redis_client.zscore(keys.DEAD, keys.dead_member(event_id, "crm")) is None
    assert redis_client.hget(keys.target_stats_key("crm"), "replayed") == b"1"
    assert 3500 < redis_client.ttl(keys.event_key(event_id)) <= 3600
    assert 3500 < redis_client.ttl(keys.attempts_key(event_id)) <= 3600
    # Due at once in crm's due set, which the workers know of, and a kick to take it now.
    [(member, score)] = due_entries(redis_client, "crm").items()
    assert member == event_id
    assert before <= score <= after
    assert redis_client.smembers(keys.DUE_TARGETS) == {b"crm"}
    assert_one_kick(redis_client)


def test_replay_never_shortens_the_event_lifetime(redis_client: redis.Redis) -> None:
    event_id = seed_dead(redis_client, "crm", ttl=10_000)
    ops.replay_delivery(redis_client, event_id, "crm", retention=60)
    assert redis_client.ttl(keys.event_key(event_id)) > 9000


def test_replay_of_a_gone_delivery(redis_client: redis.Redis) -> None:
    event_id = seed_dead(redis_client, "crm", made=1, state=DeliveryState.GONE, reason="HTTP 410")
    result = ops.replay_delivery(redis_client, event_id, "crm")
    assert (result.outcome, result.state, result.attempt) == ("replayed", "gone", 2)
    assert due_entries(redis_client, "crm").keys() == {event_id}


def test_replay_of_one_target_leaves_the_others(redis_client: redis.Redis) -> None:
    event_id = seed_event(
        redis_client,
        deliveries={"crm": ("dead", 10, "HTTP 500"), "analytics": ("dead", 10, "timeout")},
        dead_at={"crm": NOW, "analytics": NOW},
    )
    ops.replay_delivery(redis_client, event_id, "crm")
    assert redis_client.hget(keys.event_key(event_id), "s:analytics") == b"dead"
    assert redis_client.zscore(keys.DEAD, keys.dead_member(event_id, "analytics")) == NOW
    assert due_entries(redis_client, "crm").keys() == {event_id}
    assert due_entries(redis_client, "analytics") == {}
    assert redis_client.smembers(keys.DUE_TARGETS) == {b"crm"}


@pytest.mark.parametrize("state", ["pending", "retrying", "delivered", "duplicate"])
def test_replay_refuses_deliveries_that_are_not_dead(redis_client: redis.Redis, state: str) -> None:
    event_id = seed_event(redis_client, deliveries={"crm": (state, 2, "")})
    before = redis_client.hgetall(keys.event_key(event_id))
    result = ops.replay_delivery(redis_client, event_id, "crm")
    assert result.outcome == "not_dead"
    assert not result.ok
    assert result.message == f"delivery of {event_id} to crm is {state}, not dead"
    assert redis_client.hgetall(keys.event_key(event_id)) == before
    assert_not_due(redis_client, "crm")


def test_replay_refuses_a_delivery_in_flight_and_keeps_its_lease(
    redis_client: redis.Redis,
) -> None:
    """A delivery whose attempt is in flight is not dead: its lease end stays its due time."""
    lease_end = time.time() + 40
    event_id = seed_event(
        redis_client, deliveries={"crm": ("pending", 3, "")}, due={"crm": lease_end}
    )
    assert ops.replay_delivery(redis_client, event_id, "crm").outcome == "not_dead"
    assert due_entries(redis_client, "crm") == {event_id: lease_end}
    assert queued_jobs(redis_client) == []


def test_replay_twice_makes_it_due_once(redis_client: redis.Redis) -> None:
    event_id = seed_dead(redis_client, "crm")
    assert ops.replay_delivery(redis_client, event_id, "crm").outcome == "replayed"
    assert ops.replay_delivery(redis_client, event_id, "crm").outcome == "not_dead"
    assert due_entries(redis_client, "crm").keys() == {event_id}
    assert_one_kick(redis_client)
    assert redis_client.hget(keys.target_stats_key("crm"), "replayed") == b"1"


def test_replay_of_an_expired_event_says_so(redis_client: redis.Redis) -> None:
    redis_client.zadd(keys.DEAD, {keys.dead_member("evt_OLD", "crm"): NOW})
    result = ops.replay_delivery(redis_client, "evt_OLD", "crm", retention=7 * 86400)
    assert result.outcome == "expired"
    assert result.message == (
        "event evt_OLD has expired: its body is no longer kept (retention 7 days), "
        "so it cannot be replayed"
    )
    assert_not_due(redis_client, "crm")
    assert redis_client.zscore(keys.DEAD, keys.dead_member("evt_OLD", "crm")) == NOW


def test_replay_of_an_unrouted_target(redis_client: redis.Redis) -> None:
    event_id = seed_dead(redis_client, "crm")
    result = ops.replay_delivery(redis_client, event_id, "analytics")
    assert result.outcome == "unknown_target"
    assert_not_due(redis_client, "crm", "analytics")
    assert redis_client.scard(keys.DUE_TARGETS) == 0


def test_replay_dry_run_changes_nothing(redis_client: redis.Redis) -> None:
    event_id = seed_dead(redis_client, "crm", made=4)
    before = redis_client.hgetall(keys.event_key(event_id))
    result = ops.replay_delivery(redis_client, event_id, "crm", dry_run=True)
    assert (result.outcome, result.attempt, result.ok) == ("would_replay", 5, True)
    assert redis_client.hgetall(keys.event_key(event_id)) == before
    assert redis_client.zcard(keys.DEAD) == 1
    assert_not_due(redis_client, "crm")
    assert redis_client.scard(keys.DUE_TARGETS) == 0


def test_replay_rereads_when_the_event_changes_under_it(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A concurrent change between check and write aborts the whole transaction (no kick)."""
    event_id = seed_dead(redis_client, "crm")
    queue = make_queue(redis_client)
    real_enqueue_many = queue.enqueue_many
    other = redis.Redis(connection_pool=redis_client.connection_pool)
    raced: list[bool] = []

    def racing_enqueue_many(*args: Any, **kwargs: Any) -> list[Job]:
        # Someone else (another operator's replay) wins the race before our EXEC.
        other.hset(keys.event_key(event_id), "s:crm", "pending")
        raced.append(True)
        return real_enqueue_many(*args, **kwargs)

    monkeypatch.setattr(queue, "enqueue_many", racing_enqueue_many)
    result = ops.replay_delivery(redis_client, event_id, "crm", queue=queue)
    assert raced == [True]  # the kick was buffered once, in the transaction that failed
    assert result.outcome == "not_dead"
    assert result.state == "pending"
    assert redis_client.hget(keys.event_key(event_id), "b:crm") is None
    assert redis_client.zcard(keys.DEAD) == 1  # our ZREM was discarded with the rest
    assert_not_due(redis_client, "crm")  # and so were our ZADD and the kick
    assert redis_client.scard(keys.DUE_TARGETS) == 0


def test_dead_targets_of(redis_client: redis.Redis) -> None:
    event_id = seed_event(
        redis_client,
        deliveries={"a": ("dead", 3, ""), "b": ("delivered", 1, ""), "c": ("gone", 1, "")},
    )
    assert ops.dead_targets_of(redis_client, event_id) == ["a", "c"]
    redis_client.zadd(keys.DEAD, {"evt_OLD:x": NOW, "evt_OLD:y": NOW, "evt_OLD-2:z": NOW})
    assert ops.dead_targets_of(redis_client, "evt_OLD") == ["x", "y"]
    assert ops.dead_targets_of(redis_client, "evt_NONE") == []


def test_replay_is_due_now_not_later(redis_client: redis.Redis) -> None:
    """A replay is pending at once: never a retry waiting for its time, never an RQ schedule."""
    event_id = seed_dead(redis_client, "crm")
    ops.replay_delivery(redis_client, event_id, "crm")
    assert ScheduledJobRegistry(queue=make_queue(redis_client)).count == 0
    assert make_queue(redis_client).count == 1
    [crm] = ops.collect_status(redis_client).targets
    assert (crm.name, crm.pending, crm.scheduled, crm.dead_letters) == ("crm", 1, 0, 0)
