"""IntakeWriter: group commit against a real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from relay.core.errors import Unavailable
from relay.core.ids import derived_event_id, id_from_bytes
from relay.receiver.batch import (
    ONE_NEW,
    BatchReplies,
    Committed,
    committed,
    kick_owed,
    kicks_waiting,
    record_duplicates,
    write_batch,
)
from relay.receiver.intake import IntakeWriter
from relay.store import clients, commit, keys
from relay.store.commit import ITEMS_LUA, pack_record, unpack_record
from relay.store.queue import KICKS_ENOUGH, make_queue
from relay.store.records import PART, PARTS_MAX, Event
from tests.support.stored import due, indexed, kicks


def event(
    n: int, targets: tuple[str, ...] = ("crm",), dedupe: str = "", source: str = "s"
) -> Event:
    return Event(
        id=f"evt_{n:025d}0",  # a real id's shape: its last digit's low bits are 0
        source=source,
        type="thing",
        received_at=time.time(),
        content_type="application/json",
        method="POST",
        headers=(("x-n", str(n)),),
        body=b'{"n": %d, "raw": "\xff"}' % n,  # bytes that are not UTF-8 stay as they are
        targets=targets,
        dedupe_key=dedupe,
    )


async def settled(writer: IntakeWriter) -> None:
    """Wait until the writer has finished what it does after answering (an owed kick)."""
    await asyncio.wait_for(writer.idle(), 5)


def due_targets(client: redis.Redis) -> set[str]:
    return {t.decode() for t in client.smembers(keys.DUE_TARGETS)}


@dataclass(frozen=True)
class Group:
    """What write_batch reads of one request."""

    events: tuple[Event, ...]
    dedupe_window: int = 0


@asynccontextmanager
async def running_writer(url: str, mode: str = "asyncio", **options: Any) -> AsyncIterator[Any]:
    """A started IntakeWriter: on redis.asyncio (the receiver's) or on a sync client (threads)."""
    sync = clients.sync_client(url, clients.intake(3.0))
    committer = clients.async_client(url, clients.intake(3.0)) if mode == "asyncio" else None
    w = IntakeWriter(committer or sync, queue_connection=sync, **options)
    w.start()
    try:
        yield w
    finally:
        await w.close()
        if committer is not None:
            await committer.aclose()
        sync.close()


@pytest.fixture(params=["asyncio", "thread"])
async def writer(redis_url: str, request: pytest.FixtureRequest) -> Any:
    async with running_writer(redis_url, request.param, retention=3600) as w:
        yield w


def test_an_asyncio_connection_needs_a_sync_one_for_rq(redis_url: str) -> None:
    with pytest.raises(TypeError, match="queue_connection"):
        IntakeWriter(clients.async_client(redis_url, clients.intake(3.0)))


async def test_events_written_with_state_expiry_indexes_due_entries_and_one_kick(
    writer: IntakeWriter, redis_client: redis.Redis
) -> None:
    routed, unrouted = event(1, ("crm", "bi")), event(2, ())
    result = await writer.submit([routed, unrouted], max_wait=5)
    assert result == Committed((None, None))
    assert result.duplicate is False
    data = redis_client.hgetall(keys.event_key(routed.id))
    assert Event.from_redis(routed.id, data) == routed
    assert data[b"s:crm"] == b"pending"
    assert data[b"s:bi"] == b"pending"
    assert data[b"n:crm"] == b"0"
    assert data[b"n:bi"] == b"0"
    assert 3500 < redis_client.ttl(keys.event_key(routed.id)) <= 3600
    assert len(indexed(redis_client)) == 2
    assert redis_client.zrange(keys.UNROUTED, 0, -1) == [unrouted.id.encode()]
    stats = redis_client.hgetall(keys.source_stats_key("s"))
    assert stats == {b"received": b"2", b"unrouted": b"1"}
    # Each routed target has the event due at its receive time; the unrouted one is due nowhere.
    assert due(redis_client, "crm") == {routed.id: routed.received_at}
    assert due(redis_client, "bi") == {routed.id: routed.received_at}
    assert due_targets(redis_client) == {"crm", "bi"}
    assert kicks(redis_client) == 1
    assert writer.kicks_waiting == 1


async def test_waiting_requests_are_committed_in_one_transaction(
    writer: IntakeWriter, redis_client: redis.Redis
) -> None:
    events = [event(n) for n in range(10)]
    # Submitted before the writer task runs again: it takes the first and drains the rest.
    results = await asyncio.gather(*(writer.submit([e], max_wait=5) for e in events))
    assert len(results) == 10
    assert writer.batches == 1
    assert kicks(redis_client) == 1  # one kick for the whole batch
    assert due(redis_client) == {e.id: e.received_at for e in events}


async def test_batch_is_capped(redis_url: str, redis_client: redis.Redis) -> None:
    async with running_writer(redis_url, max_batch=4) as w:
        await asyncio.gather(*(w.submit([event(n)], max_wait=5) for n in range(10)))
    assert w.batches == 3  # 4 + 4 + 2
    assert len(due(redis_client)) == 10  # every event due, whichever batch carried it
    # No worker runs: the first two batches kick, the third finds KICKS_ENOUGH waiting.
    assert KICKS_ENOUGH == 2
    assert kicks(redis_client) == 2
    assert w.kicks_waiting == 2


async def test_kicks_coalesce_while_enough_wait_and_resume_once_taken(
    writer: IntakeWriter, redis_client: redis.Redis
) -> None:
    waiting = []
    for n in range(4):
        await writer.submit([event(n)], max_wait=5)
        waiting.append(kicks(redis_client))
    assert writer.batches == 4
    assert waiting == [1, 2, 2, 2]
    assert len(due(redis_client)) == 4  # a skipped kick skips no due entry
    make_queue(redis_client).empty()  # workers took the kicks
    # The skip is decided on the last commit's LLEN (2); this commit's own LLEN says none is
    # left, so the kick is sent after all (else event 4 would wait for a worker's poll).
    await writer.submit([event(4)], max_wait=5)
    await settled(writer)  # the owed kick goes after the answers
    assert kicks(redis_client) == 1
    assert writer.kicks_waiting == 1
    await writer.submit([event(5)], max_wait=5)
    assert kicks(redis_client) == 2
    assert writer.kicks_waiting == 2
    assert len(due(redis_client)) == 6


async def test_an_owed_kick_that_fails_leaves_the_events_committed(
    writer: IntakeWriter, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(2):
        await writer.submit([event(n)], max_wait=5)
    make_queue(redis_client).empty()

    def broken(queue: Any) -> Any:
        raise redis.ConnectionError("gone between the commit and the kick")

    monkeypatch.setattr("relay.receiver.committer.kick_commands", broken)
    monkeypatch.setattr("relay.receiver.committer.kick", lambda queue, pipeline=None: broken(queue))
    assert await writer.submit([event(2)], max_wait=5) == Committed((None,))
    await settled(writer)
    assert len(due(redis_client)) == 3
    assert kicks(redis_client) == 0  # a worker's poll finds it due
    assert writer.available


def test_a_kick_is_owed_only_when_skipped_and_none_waits() -> None:
    skipped = BatchReplies(0, [], kick_skipped=True)
    sent = BatchReplies(0, [], kick_skipped=False)
    assert kick_owed(skipped, 0)
    assert not kick_owed(skipped, 1)
    assert not kick_owed(sent, 0)


async def test_unrouted_batch_makes_nothing_due_and_kicks_nobody(
    writer: IntakeWriter, redis_client: redis.Redis
) -> None:
    await writer.submit([event(1, ()), event(2, ())], max_wait=5)
    assert kicks(redis_client) == 0
    assert due_targets(redis_client) == set()
    assert redis_client.zcard(keys.UNROUTED) == 2


@pytest.mark.parametrize("kick_workers", [True, False])
def test_write_batch_kicks_when_asked_and_counts_the_kicks_waiting(
    redis_client: redis.Redis, kick_workers: bool
) -> None:
    queue = make_queue(redis_client)
    e = event(1, ("crm", "bi"))
    with redis_client.pipeline(transaction=True) as pipe:
        replies_at = write_batch(
            pipe, queue, [Group((e,))], 3600, time.time(), kick_workers=kick_workers
        )
        replies = pipe.execute()
    assert replies[replies_at.script_at][0] == 0  # the queue's length, read by the script
    assert replies_at.kicked is kick_workers
    assert replies_at.kick_skipped is not kick_workers
    assert kicks_waiting(replies_at, replies) == (1 if kick_workers else 0)
    assert kicks(redis_client) == (1 if kick_workers else 0)
    # The due entries do not depend on the kick: a poller finds them either way.
    assert due(redis_client, "crm") == {e.id: e.received_at}
    assert due(redis_client, "bi") == {e.id: e.received_at}
    assert due_targets(redis_client) == {"crm", "bi"}


async def test_dedupe_marks_repeats_within_and_across_batches(
    writer: IntakeWriter, redis_client: redis.Redis
) -> None:
    key = keys.dedupe_key("s", "abc")
    first, second = await asyncio.gather(
        writer.submit([event(1, dedupe=key)], dedupe_window=60, max_wait=5),
        writer.submit([event(2, dedupe=key)], dedupe_window=60, max_wait=5),
    )
    third = await writer.submit([event(3, dedupe=key)], dedupe_window=60, max_wait=5)
    assert first.duplicate_of == (None,)
    assert second.duplicate_of == (event(1).id,)
    assert third.duplicate_of == (event(1).id,)
    assert third.duplicate is True
    assert redis_client.get(key) == event(1).id.encode()
    assert 0 < redis_client.ttl(key) <= 60
    assert redis_client.hget(keys.source_stats_key("s"), "duplicates") == b"2"


async def test_request_is_a_duplicate_only_when_every_event_is(writer: IntakeWriter) -> None:
    a, b = keys.dedupe_key("s", "a"), keys.dedupe_key("s", "b")
    await writer.submit([event(1, dedupe=a)], dedupe_window=60, max_wait=5)
    mixed = await writer.submit(
        [event(2, dedupe=a), event(3, dedupe=b)], dedupe_window=60, max_wait=5
    )
    assert mixed.duplicate_of == (event(1).id, None)
    assert mixed.duplicate is False


async def test_redis_down_fails_the_batch_then_recovers(make_redis: Any) -> None:
    server = make_redis()
    server.start()
    async with running_writer(server.url) as w:
        await w.submit([event(1)], max_wait=5)
        server.stop()
        with pytest.raises(Unavailable):
            await w.submit([event(2)], max_wait=5)
        assert w.available is False
        server.start()
        await w.submit([event(3)], max_wait=5)
        assert w.available is True
    check = redis.Redis.from_url(server.url)
    try:
        assert check.exists(keys.event_key(event(3).id)) == 1
    finally:
        check.close()


async def test_redis_restarted_while_idle_takes_the_next_batch(make_redis: Any) -> None:
    # The link's connection was closed by the server; like redis-py's pool on checkout, the
    # writer notices before sending and reconnects, so no request pays for the restart.
    server = make_redis()
    server.start()
    async with running_writer(server.url) as w:
        await w.submit([event(1)], max_wait=5)
        server.stop()
        server.start()
        await asyncio.sleep(0.1)  # the loop sees the old connection's EOF
        assert await w.submit([event(2)], max_wait=5) == Committed((None,))
        assert w.available


async def test_a_kick_refused_after_the_commit_still_answers_and_is_owed(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The script's reply says the events are in; a kick that fails after it fails nothing.
    monkeypatch.setattr(
        "relay.receiver.committer.kick_commands", lambda queue: [(("NO-SUCH-COMMAND",), {})]
    )
    with capture_logs() as logs:
        async with running_writer(redis_url) as w:
            assert await w.submit([event(1)], max_wait=5) == Committed((None,))
            await settled(w)  # the owed kick: tried once more, after the answer
            assert w.available
            assert await w.submit([event(2)], max_wait=5) == Committed((None,))
    assert len(due(redis_client)) == 2
    failures = [entry for entry in logs if entry["event"] == "intake_kick_failed"]
    assert len(failures) >= 2  # the batch's kick and the owed one
    assert failures[0]["error_type"] == "ResponseError"


async def test_expired_request_is_not_written_later(
    writer: IntakeWriter, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    release, entered = asyncio.Event(), asyncio.Event()
    original = writer._commit_once

    async def held(batch: Any) -> Any:
        entered.set()
        await release.wait()  # the first commit stalls, as on a slow Redis
        return await original(batch)

    monkeypatch.setattr(writer, "_commit_once", held)
    slow = asyncio.ensure_future(writer.submit([event(1)], max_wait=10))
    await asyncio.wait_for(entered.wait(), 10)  # the writer has taken the first request
    with pytest.raises(Unavailable, match="within"):
        await writer.submit([event(2)], max_wait=0.05)
    release.set()
    await slow
    await writer.submit([event(3)], max_wait=5)
    assert redis_client.exists(keys.event_key(event(1).id)) == 1
    assert redis_client.exists(keys.event_key(event(2).id)) == 0  # answered 503: never written
    assert redis_client.exists(keys.event_key(event(3).id)) == 1


async def test_bug_in_commit_fails_requests_but_not_the_writer(
    writer: IntakeWriter, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = writer._commit_once
    calls = []

    async def broken_once(batch: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise TypeError("a bug")
        return await original(batch)

    monkeypatch.setattr(writer, "_commit_once", broken_once)
    with pytest.raises(Unavailable):
        await writer.submit([event(1)], max_wait=5)
    await writer.submit([event(2)], max_wait=5)
    assert redis_client.exists(keys.event_key(event(2).id)) == 1


async def test_close_commits_what_is_waiting_then_refuses(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async with running_writer(redis_url) as w:
        pending = [asyncio.ensure_future(w.submit([event(n)], max_wait=5)) for n in range(3)]
        await asyncio.sleep(0)
        await w.close()
        assert all(p.done() and p.exception() is None for p in pending)
        assert len(indexed(redis_client)) == 3
        with pytest.raises(Unavailable, match="shutting down"):
            await w.submit([event(9)], max_wait=5)


# --- the commit script's record framing ----------------------------------------------------------

record_items = st.lists(st.binary(max_size=64) | st.sampled_from([b"", b"\n", b",", b"1,2\n"]))


@given(items=record_items)
def test_pack_record_round_trips(items: list[bytes]) -> None:
    assert unpack_record(pack_record(items)) == items


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=record_items)
def test_the_script_reads_a_record_as_python_wrote_it(
    items: list[bytes], redis_client: redis.Redis
) -> None:
    script = ITEMS_LUA + "return items(ARGV[1])"
    assert redis_client.eval(script, 0, pack_record(items)) == items


_names = st.sampled_from(["shop", "crm", "bi", "x" * 70, "caf\u00e9"])
_ids = st.binary(min_size=16, max_size=16).map(id_from_bytes)
_events = st.builds(
    Event,
    id=_ids | st.builds(derived_event_id, _ids, st.integers(0, 99)),
    source=_names,
    type=st.none() | st.text(max_size=80),
    received_at=st.floats(0, 2**40),
    content_type=st.sampled_from(["application/json", "", "text/plain; charset=\u00e9"]),
    method=st.sampled_from(["POST", "PUT"]),
    headers=st.lists(st.tuples(st.text(max_size=10), st.text(max_size=90)), max_size=3).map(tuple),
    body=st.binary(max_size=200),
    targets=st.lists(_names, max_size=3, unique=True).map(tuple),
    dedupe_key=st.sampled_from(["", "relay:dd:shop:k"]),
    order=st.just(()),
)


@given(st.lists(st.lists(_events, min_size=1, max_size=3), max_size=4))
def test_commit_arguments_pack_every_event_as_its_items(batch: list[list[Event]]) -> None:
    requests = [SimpleNamespace(events=events, dedupe_window=60) for events in batch]
    call = commit.commit_arguments(requests, 86400, 1.0, "rq:queue:default")
    events = [event for request in batch for event in request]
    records = call.args[len(call.args) - len(events) :]
    expected_keys = [keys.EVENTS_MINUTES, keys.UNROUTED, keys.DUE_TARGETS, "rq:queue:default"]
    for event, record in zip(events, records, strict=True):
        window = b"60" if event.dedupe_key else b"0"
        assert record == pack_record(commit.record_items(event, window))
        expected_keys += [keys.event_key(event.id), keys.source_stats_key(event.source)]
        expected_keys += [event.dedupe_key] if event.dedupe_key else []
        expected_keys += [keys.due_key(t) for t in event.targets]
    assert call.keys == expected_keys


def test_the_usual_answer_is_shared_and_any_other_is_its_own() -> None:
    assert committed((None,)) is ONE_NEW
    assert not ONE_NEW.duplicate
    assert committed(("evt_x",)) == Committed(("evt_x",))
    assert committed(("evt_x",)).duplicate
    assert committed((None, None)) == Committed((None, None))


def test_a_batch_without_dedupe_keys_repeats_nothing() -> None:
    batch: Any = [SimpleNamespace(events=["a", "b"]), SimpleNamespace(events=["c"])]
    assert record_duplicates(batch, BatchReplies(0, []), [[b"0"]]) == [(None, None), (None,)]


async def test_a_long_body_is_committed_in_parts_so_the_hash_stays_compact(
    writer: IntakeWriter, redis_client: redis.Redis
) -> None:
    long = Event(**{**event(3, ("crm", "bi")).__dict__, "body": b'{"pad": "%s"}' % (b"x" * 300)})
    await writer.submit([long, event(4, ("crm",))], max_wait=5)
    key = keys.event_key(long.id)
    assert redis_client.object("encoding", key) == b"listpack"
    # 313 bytes in parts of 64: "body", then "body.1" to "body.4".
    assert redis_client.hget(key, "body.4") is not None
    assert redis_client.hget(key, "body.5") is None
    assert Event.from_redis(long.id, redis_client.hgetall(key)) == long
    assert redis_client.hget(key, "s:bi") == b"pending"
    assert redis_client.hget(keys.event_key(event(4).id), "s:crm") == b"pending"


#: Lengths around each edge of the rule that cuts a long value into parts (records.split_value).
EDGES = (0, 1, PART - 1, PART, PART + 1, 2 * PART, 2 * PART + 1, 5000)
EDGES += (PARTS_MAX - PART, PARTS_MAX - 1, PARTS_MAX, PARTS_MAX + 1)


def padded_headers(size: int) -> tuple[tuple[str, str], ...]:
    """Headers whose stored JSON is `size` bytes long (() for 0)."""
    frame = len(b'[["x-pad",""]]')
    return (("x-pad", "h" * (size - frame)),) if size >= frame else ()


async def test_the_commit_writes_each_hash_as_event_to_redis_gives_it(
    writer: IntakeWriter, redis_client: redis.Redis
) -> None:
    # The script cuts a long body or headers itself (relay.store.commit): byte for byte, and
    # field for field in order, what Python's split_value gives, which readers and other writers
    # (the spool, replay) rely on.
    events = [
        Event(**{**event(100 + n).__dict__, "body": (bytes(range(256)) * 20)[:size]})
        for n, size in enumerate(EDGES)
    ]
    events += [
        Event(**{**event(200 + n).__dict__, "headers": padded_headers(size), "type": None})
        for n, size in enumerate(EDGES)
    ]
    both = event(300, ("crm", "bi"), "relay:dd:s:both")
    events.append(
        Event(**{**both.__dict__, "headers": padded_headers(PART + 1), "body": b"\xff" * 129})
    )
    await writer.submit(events, dedupe_window=60, max_wait=5)
    for e in events:
        key = keys.event_key(e.id)
        stored = redis_client.hgetall(key)
        own = {k: v for k, v in stored.items() if not k.startswith((b"s:", b"n:"))}
        expected = {k.encode(): v for k, v in e.to_redis().items()}
        assert own == expected, len(e.body)
        if redis_client.object("encoding", key) == b"listpack":
            assert list(own.items()) == list(expected.items())  # the same order too
        assert Event.from_redis(e.id, stored) == e
    lengths = [len(e.body) for e in events[: len(EDGES)]]
    assert lengths == list(EDGES)
    long = keys.event_key(events[EDGES.index(PARTS_MAX)].id)
    assert redis_client.object("encoding", long) == b"listpack"  # 32 parts of 64 bytes
    assert redis_client.hget(long, "body.31") is not None
    assert redis_client.hget(long, "body.32") is None
    whole = keys.event_key(events[EDGES.index(PARTS_MAX + 1)].id)
    assert redis_client.hget(whole, "body.1") is None
    assert len(redis_client.hget(whole, "body") or b"") == PARTS_MAX + 1


async def test_fields_at_their_default_are_left_out_but_an_empty_body_is_kept(
    writer: IntakeWriter, redis_client: redis.Redis
) -> None:
    plain = Event(**{**event(5).__dict__, "headers": (), "body": b"", "type": None})
    put = Event(**{**event(6).__dict__, "method": "PUT", "dedupe_key": "relay:dd:s:x"})
    await writer.submit([plain, put], max_wait=5)
    stored = redis_client.hgetall(keys.event_key(plain.id))
    assert not {b"method", b"headers", b"dedupe", b"type"} & set(stored)
    assert stored[b"body"] == b""  # a replay tells a stored event by its body field
    assert Event.from_redis(plain.id, stored) == plain
    stored = redis_client.hgetall(keys.event_key(put.id))
    assert stored[b"method"] == b"PUT"
    assert Event.from_redis(put.id, stored) == put


async def test_a_flushed_script_cache_costs_the_batch_a_resend_not_an_answer(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # The link sends the commit script by its digest after the first batch; a server whose
    # script cache was flushed refuses that with NOSCRIPT, which ran nothing: the batch is sent
    # again whole, and committed once.
    first, second, third = event(1), event(2), event(3)
    async with running_writer(redis_url) as w:
        await w.submit([first], max_wait=5)
        redis_client.script_flush()
        assert await w.submit([second], max_wait=5) == Committed((None,))
        assert w.available
        await w.submit([third], max_wait=5)
    assert due(redis_client) == {e.id: e.received_at for e in (first, second, third)}
    assert redis_client.hget(keys.source_stats_key("s"), "received") == b"3"


async def test_a_request_of_more_events_than_lua_can_unpack_is_committed(
    writer: IntakeWriter, redis_client: redis.Redis
) -> None:
    # One request may split into thousands of events (an ASP.NET WebHooks post): the minute
    # list's RPUSH and the unrouted index's ZADD get more values than Lua's unpack takes (about
    # 8,000), so the script sends them in chunks.
    events = [event(n, targets=("crm",) if n % 2 else ()) for n in range(9_000)]
    await writer.submit(events, max_wait=30)
    assert len(indexed(redis_client)) == 9_000
    assert redis_client.zcard(keys.UNROUTED) == 4_500
    assert len(due(redis_client, "crm")) == 4_500
