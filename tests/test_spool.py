"""The Redis-outage spool (relay.receiver.spool.spool) and its drain into Redis
(relay.receiver.spool.drain)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.config.settings import Settings
from relay.core.errors import Unavailable
from relay.core.ids import new_event_id
from relay.receiver.spool.directory import SpoolDir
from relay.receiver.spool.drain import Commit, SpoolDrainer, commit_spooled, redis_commit
from relay.receiver.spool.errors import SpoolError, SpoolFull
from relay.receiver.spool.files import CURSOR_NAME, LOCK_NAME, Position
from relay.receiver.spool.ownership import adopt_dir
from relay.receiver.spool.records import MAGIC, SpooledEvent, decode_payload, encode_record
from relay.receiver.spool.spool import Spool
from relay.store import keys
from relay.store.queue import make_queue
from relay.store.records import Event, state_field
from tests.support.stored import indexed, kicks, stored_event

ROOT = Path(__file__).resolve().parent.parent
_NOW = float(int(time.time()))


def make_event(
    n: int = 0, *, body: bytes | None = None, targets: tuple[str, ...] = ("crm",)
) -> Event:
    """A Fellow-like form event."""
    return Event(
        id=new_event_id(),
        source="fellow",
        type="COURSEMEMBER_CREATED",
        received_at=_NOW + 0.5 + n,  # same length every time: record sizes in tests are exact
        content_type="application/x-www-form-urlencoded",
        method="POST",
        headers=(("user-agent", "fellow/1.0"),),
        body=body if body is not None else f"event=COURSEMEMBER_CREATED&memberId={n}".encode(),
        targets=targets,
    )


def only_dir(spool: Spool) -> SpoolDir:
    (directory,) = spool.directories()
    return directory


def read_all(directory: SpoolDir) -> tuple[list[SpooledEvent], int]:
    """Every record past the cursor (without advancing it) and the bytes skipped."""
    batch = directory.read_batch(10_000, 1 << 30)
    assert batch.done
    return list(batch.records), batch.skipped


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("seg-*.log"))


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool(tmp_path / "spool")
    yield s
    s.close()


# ---------------------------------------------------------------------------------------------
# Record format

_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=24)
_events = st.builds(
    Event,
    id=_text,
    source=_text,
    type=st.none() | _text,
    received_at=st.floats(allow_nan=False, allow_infinity=False),
    content_type=_text,
    method=st.sampled_from(["POST", "PUT"]),
    headers=st.lists(st.tuples(_text, _text), max_size=4).map(tuple),
    body=st.binary(max_size=4096),
    targets=st.lists(_text, max_size=3).map(tuple),
    dedupe_key=_text,
)
_windows = st.floats(min_value=0, max_value=1e9, allow_nan=False)


@given(event=_events, window=_windows)
def test_record_round_trip_is_exact(event: Event, window: float) -> None:
    record = SpooledEvent(event, window)
    data = encode_record(record)
    assert data.startswith(MAGIC)
    assert decode_payload(data[12:]) == record


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(_events, min_size=1, max_size=6), window=_windows)
def test_append_then_read_is_byte_exact_and_ordered(events: list[Event], window: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(tmp, segment_bytes=2048)  # small segments: records cross many files
        try:
            for event in events:
                spool.append(event, window)
            records, skipped = read_all(only_dir(spool))
        finally:
            spool.close()
    assert skipped == 0
    assert records == [SpooledEvent(e, window) for e in events]
    assert [r.event.body for r in records] == [e.body for e in events]


def test_decode_rejects_garbage_with_value_error() -> None:
    for payload in (b"", b"\x00\x00\x00\x05abc", b"\x00\x00\x00\x02{}", b"\x00\x00\x00\x01["):
        with pytest.raises(ValueError, match="not a spool record"):
            decode_payload(payload)


def test_spool_errors_answer_503() -> None:
    assert issubclass(SpoolFull, SpoolError)
    assert issubclass(SpoolError, Unavailable)
    assert SpoolFull("x").status == 503


def test_settings_read_spool_max() -> None:
    assert Settings.from_env({"RELAY_SPOOL_MAX": "64MiB"}).spool_max == 64 * 1024 * 1024
    assert Settings.from_env({}).spool_max == 256 * 1024 * 1024


# ---------------------------------------------------------------------------------------------
# Durability: fsync before append returns


def test_append_fsyncs_the_segment_after_writing_it(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int]] = []
    real_write, real_fsync = os.write, os.fsync

    def write(fd: int, data: Any) -> int:
        calls.append(("write", fd))
        return real_write(fd, data)

    def fsync(fd: int) -> None:
        calls.append(("fsync", fd))
        real_fsync(fd)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)
    spool.append(make_event())
    segment_fd = only_dir(spool)._fd
    assert segment_fd is not None
    last_write = max(i for i, c in enumerate(calls) if c == ("write", segment_fd))
    assert ("fsync", segment_fd) in calls[last_write:]
    calls.clear()
    spool.append_many([make_event(1), make_event(2)])
    assert calls.count(("write", segment_fd)) == 1  # one request, one write
    assert calls[-1] == ("fsync", segment_fd)


def test_concurrent_appends_share_an_fsync(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    spool.append(make_event())  # the directory and segment exist before the race
    directory = only_dir(spool)
    segment_fd = directory._fd
    real_fsync = os.fsync
    first_entered, release = threading.Event(), threading.Event()
    segment_syncs: list[int] = []

    def fsync(fd: int) -> None:
        if fd == segment_fd:
            segment_syncs.append(fd)
            if len(segment_syncs) == 1:
                first_entered.set()
                assert release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    threads = [threading.Thread(target=spool.append, args=(make_event(i),)) for i in range(3)]
    threads[0].start()
    assert first_entered.wait(10)
    for t in threads[1:]:
        t.start()
    # Both later appends have written their record; they now wait for the fsync in progress.
    deadline = time.monotonic() + 10
    while len(read_all(directory)[0]) < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(read_all(directory)[0]) == 4
    release.set()
    for t in threads:
        t.join(10)
    assert len(segment_syncs) == 2  # the second fsync covered the third append too


def test_failed_write_is_cut_back_and_raises(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    spool.append(make_event(0))
    directory = only_dir(spool)
    size_before = directory.size
    real_write = os.write

    def half_then_enospc(fd: int, data: Any) -> int:
        real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_enospc)
    with pytest.raises(SpoolError, match="cannot be written"):
        spool.append(make_event(1))
    monkeypatch.setattr(os, "write", real_write)
    assert segment_files(directory.path)[0].stat().st_size == size_before
    spool.append(make_event(2))
    records, skipped = read_all(directory)
    assert skipped == 0
    assert [r.event.body for r in records] == [make_event(0).body, make_event(2).body]


def test_failed_fsync_refuses_and_moves_to_a_new_segment(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool.append(make_event(0))
    directory = only_dir(spool)
    real_fsync = os.fsync
    failing = directory._fd

    def fsync(fd: int) -> None:
        if fd == failing:
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(SpoolError, match="cannot be synced"):
        spool.append(make_event(1))
    spool.append(make_event(2))  # a new segment, synced for real
    assert directory._fd != failing
    assert len(segment_files(directory.path)) == 2


# ---------------------------------------------------------------------------------------------
# Damage: torn and corrupt records never crash the reader


def _spool_in_dead_dir(root: Path, events: Sequence[Event]) -> Path:
    """Spool events as a receiver that then dies: its directory is left behind, unlocked."""
    writer = Spool(root)
    writer.append_many(events)
    directory = only_dir(writer)
    directory.close()  # what the kernel does to the flock when the process dies
    return directory.path


def test_torn_final_record_is_ignored_on_recovery(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    events = [make_event(i) for i in range(3)]
    path = _spool_in_dead_dir(root, events)
    segment = segment_files(path)[0]
    whole = segment.stat().st_size
    torn = encode_record(SpooledEvent(make_event(99)))[:20]  # crash mid-write
    with segment.open("ab") as f:
        f.write(torn)
    adopter = Spool(root)
    try:
        adopter.adopt_orphans()
        records, skipped = read_all(only_dir(adopter))
    finally:
        adopter.close()
    assert [r.event for r in records] == events
    assert skipped == len(torn)
    assert segment.stat().st_size == whole + len(torn)


def test_corrupt_record_in_the_middle_is_skipped_and_the_rest_recovered(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    events = [make_event(i, body=b"x" * 100) for i in range(5)]
    path = _spool_in_dead_dir(root, events)
    segment = segment_files(path)[0]
    data = bytearray(segment.read_bytes())
    record_size = len(data) // 5
    data[2 * record_size + 50] ^= 0xFF  # flip a byte inside the third record's payload
    segment.write_bytes(bytes(data))
    directory = adopt_dir(path)
    assert directory is not None
    try:
        records, skipped = read_all(directory)
    finally:
        directory.close()
    assert [r.event for r in records] == events[:2] + events[3:]
    assert skipped == record_size


@pytest.mark.parametrize("cut", [1, 5, 11, 12, 40])
def test_any_truncation_reads_the_whole_records_before_it(tmp_path: Path, cut: int) -> None:
    root = tmp_path / "spool"
    events = [make_event(i) for i in range(2)]
    path = _spool_in_dead_dir(root, events)
    segment = segment_files(path)[0]
    first = len(encode_record(SpooledEvent(events[0])))
    with segment.open("r+b") as f:
        f.truncate(first + cut)
    directory = adopt_dir(path)
    assert directory is not None
    try:
        records, skipped = read_all(directory)
    finally:
        directory.close()
    assert [r.event for r in records] == events[:1]
    assert skipped == cut


# ---------------------------------------------------------------------------------------------
# Size bound


def test_full_spool_raises_spool_full_and_recovers_once_drained(tmp_path: Path) -> None:
    record = len(encode_record(SpooledEvent(make_event(0))))
    spool = Spool(tmp_path / "spool", max_bytes=3 * record + record // 2)
    try:
        for i in range(3):
            spool.append(make_event(i))
        with pytest.raises(SpoolFull, match=r"local spool is full \(\d+ bytes\)") as caught:
            spool.append(make_event(3))
        assert caught.value.status == 503
        assert len(read_all(only_dir(spool))[0]) == 3  # the refused event was not written
        drained: list[SpooledEvent] = []

        def commit(records: Sequence[SpooledEvent]) -> int:
            drained.extend(records)
            return len(records)

        SpoolDrainer(spool, commit).drain_pass()
        assert len(drained) == 3
        spool.append(make_event(4))  # the drained segment was deleted: room again
    finally:
        spool.close()


def test_bound_counts_other_directories(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    record = len(encode_record(SpooledEvent(make_event(0))))
    _spool_in_dead_dir(root, [make_event(i) for i in range(3)])
    spool = Spool(root, max_bytes=4 * record)
    try:
        spool.append(make_event(3))
        with pytest.raises(SpoolFull):
            spool.append(make_event(4))
        assert spool.stats().bytes == 4 * record
    finally:
        spool.close()


# ---------------------------------------------------------------------------------------------
# Directories: ownership, adoption, cleanup


def test_each_spool_writes_its_own_locked_directory(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    a, b = Spool(root), Spool(root)
    try:
        a.append(make_event(1))
        b.append(make_event(2))
        dir_a, dir_b = only_dir(a), only_dir(b)
        assert dir_a.path != dir_b.path
        assert str(os.getpid()) in dir_a.name
        # A live owner's directory cannot be adopted, not even from the same process.
        assert adopt_dir(dir_a.path) is None
        assert a.adopt_orphans() == []
        assert b.adopt_orphans() == []
    finally:
        a.close()
        b.close()


def test_two_drainers_never_take_the_same_orphan(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    path = _spool_in_dead_dir(root, [make_event(0)])
    first, second = Spool(root), Spool(root)
    try:
        assert [d.path for d in first.adopt_orphans()] == [path]
        assert second.adopt_orphans() == []
        first.close()  # let go without draining (say, a shutdown)
        assert [d.path for d in second.adopt_orphans()] == [path]
    finally:
        first.close()
        second.close()


def test_close_removes_a_drained_own_directory_and_keeps_a_pending_one(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    drained = Spool(root)
    drained.append(make_event(0))
    SpoolDrainer(drained, lambda rs: len(rs)).drain_pass()
    drained.close()
    assert [p for p in root.iterdir()] == []
    pending = Spool(root)
    pending.append(make_event(1))
    pending.close()
    (left,) = root.iterdir()
    assert sorted(p.name for p in left.iterdir()) == [LOCK_NAME, "seg-00000001.log"]


def test_unused_spool_creates_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    assert spool.adopt_orphans() == []
    SpoolDrainer(spool, lambda rs: pytest.fail("nothing to commit")).drain_pass()
    spool.close()
    assert not (tmp_path / "spool").exists()


def test_stale_half_made_directory_is_removed(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    half = root / ".new-20260101T000000000000Z-host-1"
    half.mkdir(parents=True)
    (half / LOCK_NAME).touch()
    old = time.time() - 3600
    os.utime(half, (old, old))
    fresh = root / ".new-20260101T000000000001Z-host-2"
    fresh.mkdir()
    (fresh / LOCK_NAME).touch()
    spool = Spool(root)
    try:
        spool.adopt_orphans()
    finally:
        spool.close()
    assert not half.exists()
    assert fresh.exists()  # possibly being made by a live receiver right now


CHILD = """
import os, signal, sys
from relay.store.records import Event
from relay.core.logs import configure_logging
from relay.receiver.spool.spool import Spool
configure_logging("warning", "json")  # log lines to stderr: stdout is the test's channel
root, count, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
spool = Spool(root)
ids = sys.stdin.readline().split()
for i, event_id in enumerate(ids):
    spool.append(Event(id=event_id, source="fellow", type="COURSEMEMBER_CREATED",
        received_at=1.0 + i, content_type="application/x-www-form-urlencoded", method="POST",
        headers=(), body=b"memberId=" + event_id.encode(), targets=("crm",)))
print("spooled", flush=True)
if mode == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.readline()  # "hold": keep the directory until told to go
"""


def run_receiver(root: Path, ids: Sequence[str], mode: str) -> subprocess.Popen[str]:
    """A child process standing in for a receiver that spools `ids`, then dies or holds."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), str(len(ids)), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    child.stdin.write(" ".join(ids) + "\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "spooled"
    return child


def test_directory_of_a_killed_process_is_adopted_and_a_live_one_is_not(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    dead_ids = [new_event_id() for _ in range(3)]
    dead = run_receiver(root, dead_ids, "kill")
    assert dead.wait(10) == -signal.SIGKILL
    live = run_receiver(root, [new_event_id()], "hold")
    spool = Spool(root)
    try:
        adopted = spool.adopt_orphans()
        assert [d.name for d in adopted] == [f for f in os.listdir(root) if str(dead.pid) in f]
        records, _ = read_all(adopted[0])
        assert [r.event.id for r in records] == dead_ids
    finally:
        spool.close()
        assert live.stdin is not None
        live.stdin.write("go\n")
        live.stdin.close()
        live.wait(10)
    # The live one exited cleanly without draining: its directory is now adoptable too.
    later = Spool(root)
    try:
        assert len(later.adopt_orphans()) == 2
    finally:
        later.close()


# ---------------------------------------------------------------------------------------------
# Draining into a real redis-server


def due_ids(connection: redis.Redis, target: str = "crm") -> list[str]:
    """Event ids due for a target, in the order they are due (their receive time)."""
    return [m.decode() for m in connection.zrange(keys.due_key(target), 0, -1)]


def received(connection: redis.Redis) -> int:
    """Events the drain wrote for the source: a record written twice would count twice."""
    return int(connection.hget(keys.source_stats_key("fellow"), "received") or 0)


class CommitLog:
    """A drain commit that notes, after each call, the event ids it made due: commit order.

    Within one commit (one MULTI) ids are noted in due order; across commits, in call order.
    """

    def __init__(self, connection: redis.Redis, commit: Commit | None = None) -> None:
        self.connection = connection
        self.commit = commit if commit is not None else redis_commit(connection)
        self.ids: list[str] = []
        self.calls = 0

    def __call__(self, records: Sequence[SpooledEvent]) -> int:
        written = self.commit(records)
        self.calls += 1
        seen = set(self.ids)
        self.ids.extend(i for i in due_ids(self.connection) if i not in seen)
        return written


def test_drain_commits_in_order_into_redis(spool: Spool, redis_client: redis.Redis) -> None:
    events = [make_event(i) for i in range(10)]
    unrouted = make_event(10, targets=())
    for event in events[:4]:
        spool.append(event)
    spool.append_many([*events[4:], unrouted], dedupe_window=3600)
    log = CommitLog(redis_client)
    drainer = SpoolDrainer(spool, log, batch_size=4)
    assert drainer.drain_pass() == 11
    assert drainer.drained == 11
    assert log.ids == [e.id for e in events]  # in order, unrouted not due
    assert redis_client.smembers(keys.DUE_TARGETS) == {b"crm"}
    assert received(redis_client) == 11  # each once
    assert kicks(redis_client) == log.calls == 3  # one kick per commit (4 + 4 + 3 records)
    for event in [*events, unrouted]:
        stored: dict[bytes, bytes] = redis_client.hgetall(keys.event_key(event.id))  # type: ignore[assignment]
        assert Event.from_redis(event.id, stored) == event
        assert not event.targets or stored[state_field("crm").encode()] == b"pending"
    assert redis_client.zscore(keys.UNROUTED, unrouted.id) is not None
    assert len(indexed(redis_client)) == 11
    directory = only_dir(spool)
    assert not directory.pending()
    assert segment_files(directory.path) == []  # drained segments are deleted
    assert drainer.drain_pass() == 0


def test_drain_keeps_the_dedupe_window(spool: Spool, redis_client: redis.Redis) -> None:
    event = make_event(0)
    event = Event(**{**event.__dict__, "dedupe_key": keys.dedupe_key("fellow", "k1")})
    spool.append(event, dedupe_window=600)
    SpoolDrainer(spool, redis_commit(redis_client)).drain_pass()
    assert redis_client.get(event.dedupe_key) == event.id.encode()
    assert 590 < redis_client.ttl(event.dedupe_key) <= 600


def test_drain_crash_between_commit_and_cursor_makes_no_duplicate(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    root = tmp_path / "spool"
    events = [make_event(i) for i in range(6)]
    spool = Spool(root)
    spool.append_many(events)
    real = CommitLog(redis_client)
    calls: list[int] = []

    def commit_then_crash(records: Sequence[SpooledEvent]) -> int:
        calls.append(real(records))
        if len(calls) == 2:
            raise RuntimeError("crash after EXEC, before the cursor moved")
        return calls[-1]

    with pytest.raises(RuntimeError):
        SpoolDrainer(spool, commit_then_crash, batch_size=4).drain_pass()
    directory = only_dir(spool)
    assert directory.cursor == Position(
        1, sum(len(encode_record(SpooledEvent(e))) for e in events[:4])
    )
    directory.close()  # the process dies here; a new receiver adopts the directory
    after = Spool(root)
    try:
        drainer = SpoolDrainer(after, CommitLog(redis_client, real))
        assert drainer.drain_pass() == 2
        assert (drainer.drained, drainer.already) == (0, 2)
        assert real.ids == [e.id for e in events]
        assert received(redis_client) == 6  # each once: the re-read batch was not written again
        assert kicks(redis_client) == 2  # nor kicked for again
        assert len(indexed(redis_client)) == 6
        assert list(root.iterdir()) == []  # the adopted directory is gone once drained
    finally:
        after.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(1, 30),
    batch_size=st.integers(1, 8),
    segment_bytes=st.integers(200, 3000),
    crash_at=st.integers(1, 10),
)
def test_crash_at_any_commit_loses_nothing_and_rereads_one_batch_at_most(
    count: int, batch_size: int, segment_bytes: int, crash_at: int
) -> None:
    store: dict[str, int] = {}  # what an idempotent commit leaves behind: id -> commit order
    reread: list[int] = []
    calls = 0

    def commit(records: Sequence[SpooledEvent]) -> int:
        nonlocal calls
        calls += 1
        fresh = [r.event.id for r in records if r.event.id not in store]
        reread.append(len(records) - len(fresh))
        for event_id in fresh:
            store[event_id] = len(store)
        if calls == crash_at:
            raise RuntimeError("crash after commit, before the cursor")
        return len(fresh)

    events = [make_event(i) for i in range(count)]
    with tempfile.TemporaryDirectory() as tmp:
        first = Spool(tmp, segment_bytes=segment_bytes)
        first.append_many(events[: count // 2])
        for event in events[count // 2 :]:
            first.append(event)
        with contextlib.suppress(RuntimeError):
            SpoolDrainer(first, commit, batch_size=batch_size).drain_pass()
        only_dir(first).close()  # the process dies
        second = Spool(tmp)
        try:
            SpoolDrainer(second, commit, batch_size=batch_size).drain_pass()
            assert os.listdir(tmp) == []
        finally:
            second.close()
    assert sorted(store, key=store.__getitem__) == [e.id for e in events]
    assert sum(reread) <= batch_size


def test_commit_skips_events_already_in_redis(redis_client: redis.Redis) -> None:
    events = [SpooledEvent(make_event(i)) for i in range(3)]
    queue = make_queue(redis_client)
    assert commit_spooled(redis_client, queue, events[1:2], retention=60) == 1
    assert commit_spooled(redis_client, queue, events, retention=60) == 2
    assert commit_spooled(redis_client, queue, events, retention=60) == 0
    assert sorted(due_ids(redis_client)) == sorted(e.event.id for e in events)
    assert received(redis_client) == 3  # each once
    assert kicks(redis_client) == 2  # the commit that wrote nothing kicked nobody


def test_drain_takes_the_oldest_directory_first(tmp_path: Path, redis_client: redis.Redis) -> None:
    root = tmp_path / "spool"
    older = [make_event(i) for i in range(3)]
    _spool_in_dead_dir(root, older)
    spool = Spool(root)
    try:
        newer = [make_event(i) for i in range(3, 5)]
        spool.append_many(newer)
        log = CommitLog(redis_client)
        SpoolDrainer(spool, log).drain_pass()
        assert log.ids == [e.id for e in older + newer]
    finally:
        spool.close()


def test_drain_during_appends_loses_nothing(spool: Spool, redis_client: redis.Redis) -> None:
    log = CommitLog(redis_client)
    drainer = SpoolDrainer(spool, log, batch_size=3)
    appended: list[str] = []
    for round_ in range(5):
        for i in range(round_ + 1):
            event = make_event(i)
            spool.append(event)
            appended.append(event.id)
        drainer.drain_pass()
    assert log.ids == appended
    assert received(redis_client) == len(appended)  # each once
    assert spool.stats().bytes == 0  # each drained live segment was retired and deleted


def test_segments_are_drained_in_order_and_deleted(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    spool = Spool(tmp_path / "spool", segment_bytes=600)
    try:
        events = [make_event(i, body=b"b" * 200) for i in range(12)]
        for event in events:
            spool.append(event)
        directory = only_dir(spool)
        assert len(segment_files(directory.path)) >= 4
        log = CommitLog(redis_client)
        SpoolDrainer(spool, log, batch_size=5).drain_pass()
        assert log.ids == [e.id for e in events]
        assert received(redis_client) == 12
        assert segment_files(directory.path) == []
        assert (directory.path / CURSOR_NAME).exists()
    finally:
        spool.close()


def _wait_for(predicate: Callable[[], bool], seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_receiver_restart_while_redis_is_down_delivers_every_event_once(
    tmp_path: Path, make_redis: Any
) -> None:
    """Kill Redis; spool; kill the receiver; spool in its successor; Redis back: each event once."""
    server = make_redis()
    server.start()
    root = tmp_path / "spool"
    server.kill()
    first_ids = [new_event_id() for _ in range(5)]
    first = run_receiver(root, first_ids, "kill")  # the receiver dies outright
    assert first.wait(10) == -signal.SIGKILL
    second_ids = [new_event_id() for _ in range(4)]
    second = run_receiver(root, second_ids, "hold")  # its successor, Redis still down

    client = redis.Redis.from_url(server.url, socket_connect_timeout=0.5, socket_timeout=2)
    spool = Spool(root)  # the drain task of a third live receiver: adopts the dead one
    log = CommitLog(client)
    drainer = SpoolDrainer(spool, log)
    try:
        with pytest.raises(redis.ConnectionError):
            drainer.drain_pass()
        assert drainer.drained == 0
        server.start()
        drainer.drain_pass()
        assert log.ids == first_ids  # the live successor keeps its own
        assert second.stdin is not None
        second.stdin.write("exit\n")
        second.stdin.flush()
        assert second.wait(10) == 0  # stopped with its spool undrained: left for adoption
        drainer.drain_pass()
        assert log.ids == first_ids + second_ids
        assert received(client) == 9  # each once
        for event_id in first_ids + second_ids:
            body = stored_event(client, event_id).body
            assert body == b"memberId=" + event_id.encode()
        assert list(root.iterdir()) == []
    finally:
        spool.close()
        client.close()
        if second.poll() is None:
            second.kill()
            second.wait(10)


async def test_background_task_backs_off_while_redis_is_down_then_drains(
    tmp_path: Path, make_redis: Any
) -> None:
    server = make_redis()
    server.start()
    server.kill()
    client = redis.Redis.from_url(server.url, socket_connect_timeout=0.2, socket_timeout=1)
    spool = Spool(tmp_path / "spool")
    log = CommitLog(client)
    drainer = SpoolDrainer(spool, log, interval=0.05, max_backoff=0.2)
    events = [make_event(i) for i in range(3)]
    try:
        drainer.start()
        await asyncio.to_thread(spool.append_many, events)
        await asyncio.sleep(0.3)
        assert drainer.drained == 0
        assert drainer._down_since is not None
        await asyncio.to_thread(server.start)
        drainer.wake()
        for _ in range(200):  # the count goes up before the drain marks Redis as back
            if drainer.drained == 3 and drainer._down_since is None:
                break
            await asyncio.sleep(0.05)
        assert drainer.drained == 3
        assert log.ids == [e.id for e in events]
        assert await asyncio.to_thread(received, client) == 3
        assert drainer._down_since is None
    finally:
        await drainer.close()
        spool.close()
        client.close()
    assert drainer._task is None


async def test_background_task_survives_a_bug_in_commit(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    calls: list[int] = []

    def broken(records: Sequence[SpooledEvent]) -> int:
        calls.append(len(records))
        raise KeyError("bug")

    commit: Commit = broken
    drainer = SpoolDrainer(spool, commit, interval=0.01, max_backoff=0.01)
    spool.append(make_event())
    drainer.start()
    for _ in range(200):
        if len(calls) >= 2:
            break
        await asyncio.sleep(0.01)
    await drainer.close()
    spool.close()
    assert len(calls) >= 2  # still running after the first failure
    assert only_dir_pending(tmp_path / "spool")  # nothing was dropped


def only_dir_pending(root: Path) -> bool:
    (path,) = root.iterdir()
    directory = adopt_dir(path)
    assert directory is not None
    try:
        return directory.pending()
    finally:
        directory.close()


# ---------------------------------------------------------------------------------------------
# End to end over HTTP: real `relay serve` processes (active once relay.receiver.app wires the
# spool)


def _spool_wired() -> bool:
    import relay.receiver.app

    return hasattr(relay.receiver.app, "SPOOL")


ROUTES_TOML = """
[sources.fellow]
kind = "form"
event = "event"
token_env = "FELLOW_TOKEN"
spool = true

[targets.crm]
url = "http://127.0.0.1:9/crm"

[[routes]]
source = "fellow"
events = ["*"]
targets = ["crm"]
"""
TOKEN = "t0ken-for-the-spool-test-0123456789"


def _http(method: str, port: int, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _start_receiver(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def up() -> bool:
        try:
            return _http("GET", port, "/healthz")[0] == 200
        except OSError:
            return False

    assert _wait_for(up), "the receiver did not start"
    return child


@pytest.mark.skipif(not _spool_wired(), reason="relay.receiver.app does not wire the spool yet")
def test_http_receiver_restart_while_redis_is_down_loses_nothing(
    tmp_path: Path, make_redis: Any
) -> None:
    import orjson

    from tests.support.redis_server import free_port

    server = make_redis()
    server.start()
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES_TOML)
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": server.url,
        "RELAY_ROUTES": str(routes),
        "RELAY_SPOOL_DIR": str(tmp_path / "spool"),
        "FELLOW_TOKEN": TOKEN,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "RELAY_LOG_FORMAT": "json",
    }
    accepted: list[str] = []

    def post(n: int) -> None:
        body = f"event=COURSEMEMBER_CREATED&memberId={n}".encode()
        status, reply = _http("POST", port, f"/hooks/fellow/{TOKEN}", body)
        assert status == 202, reply
        assert orjson.loads(reply)["spooled"] is True
        accepted.append(orjson.loads(reply)["id"])

    receivers = [_start_receiver(env, port)]
    try:
        server.kill()
        for n in range(3):
            post(n)
        assert list((tmp_path / "spool").iterdir())  # on disk, not in Redis
        receivers[0].kill()  # the receiver dies outright; Redis is still down
        receivers[0].wait(10)
        receivers.append(_start_receiver(env, port))
        for n in range(3, 5):
            post(n)
        server.start()
        client = redis.Redis.from_url(server.url)
        try:
            assert _wait_for(lambda: len(indexed(client)) >= 5, 60)
            # Every event once, due in the order it was accepted (received time).
            assert due_ids(client) == accepted
            assert received(client) == len(accepted)
        finally:
            client.close()
    finally:
        for receiver in receivers:
            if receiver.poll() is None:
                receiver.send_signal(signal.SIGTERM)
                receiver.wait(15)


def test_drained_repeats_count_as_duplicates_once(spool: Spool, redis_client: redis.Redis) -> None:
    # A call-once provider's repeat spooled during an outage: the drain's commit finds the first
    # event's dedupe key and counts the repeat in the source's counter, exactly once.
    first, repeat = make_event(0), make_event(1)
    key = keys.dedupe_key(first.source, "same")
    first = Event(**{**first.__dict__, "dedupe_key": key})
    repeat = Event(**{**repeat.__dict__, "dedupe_key": key})
    spool.append(first, dedupe_window=600)
    spool.append(repeat, dedupe_window=600)
    SpoolDrainer(spool, redis_commit(redis_client)).drain_pass()
    assert redis_client.get(key) == first.id.encode()
    assert redis_client.hget(keys.source_stats_key(first.source), "duplicates") == b"1"
