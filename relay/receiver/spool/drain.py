"""Moving spooled events into Redis once it is back: in order, in batches, without duplicates.

A background task of the receiver. Each pass adopts orphaned spool directories (their receiver
died), then drains every directory it holds, oldest first: read a batch past the cursor, commit
it, and only then advance the durable cursor (deleting segments left wholly behind). While
Redis is down a pass fails at its first commit and the task backs off; with an empty spool a
pass never touches Redis.

No duplicates, although a crash can fall between a commit and the cursor write: the commit
WATCHes the batch's event hashes (`relay:ev:{id}`), reads which already exist, and writes only
the others with the intake's own `write_batch` (hash, due-set entries, indexes, counters, one
RQ kick) in one MULTI/EXEC. A record committed before the crash is re-read after it and found,
so it is neither written nor made due again. WATCH rather than a marker key: the event hash
already is the marker, and any write to one of those hashes between the check and EXEC (say,
the intake committing the same event after a timed-out attempt) aborts the EXEC, and the batch
is checked again. Not Lua: RQ's enqueue is Python that only buffers commands on the pipeline.

An event hash expires with the retention period (7 days by default), so a record re-read after
that would be committed again: only a spool left undrained for a week can do that.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
import structlog
from redis.exceptions import WatchError
from rq import Queue

from relay.core import constants
from relay.core.acks import PRIMARY_ONLY, AckReplicas
from relay.receiver.batch import MAX_BATCH_BYTES, write_batch
from relay.receiver.spool.records import SpooledEvent
from relay.receiver.spool.spool import Spool
from relay.store import keys
from relay.store.queue import make_queue
from relay.store.records import Event
from relay.store.replication import confirm_replicas

log = structlog.get_logger("relay.spool")

#: Writes the records not yet in Redis, in order; returns how many it wrote. Raises
#: redis.RedisError when Redis cannot take them.
Commit = Callable[[Sequence[SpooledEvent]], int]

#: Seconds between passes while nothing fails: an idle pass only lists the spool directory.
DRAIN_INTERVAL = 1.0
#: Longest wait between passes while Redis is down (the wait doubles from DRAIN_INTERVAL).
MAX_BACKOFF = 10.0
#: A batch whose hashes keep changing under WATCH is retried this often within one pass.
WATCH_ATTEMPTS = 5


@dataclass(frozen=True)
class _Group:
    """Consecutive records sharing a dedupe window: what `write_batch` reads of one request."""

    events: tuple[Event, ...]
    dedupe_window: int


def _groups(records: Sequence[SpooledEvent]) -> list[_Group]:
    groups: list[_Group] = []
    for record in records:
        window = int(record.dedupe_window)
        if groups and groups[-1].dedupe_window == window:
            groups[-1] = _Group((*groups[-1].events, record.event), window)
        else:
            groups.append(_Group((record.event,), window))
    return groups


def _existing(connection: redis.Redis, names: Sequence[str]) -> list[bool]:
    """Which keys exist, in one round trip."""
    pipe = connection.pipeline(transaction=False)
    for name in names:
        pipe.exists(name)
    return [bool(n) for n in pipe.execute()]


def commit_spooled(
    connection: redis.Redis,
    queue: Queue,
    records: Sequence[SpooledEvent],
    *,
    retention: float,
    now: float | None = None,
) -> int:
    """Write the records whose event hash is not in Redis yet, in one MULTI; return how many."""
    if not records:
        return 0
    names = [keys.event_key(r.event.id) for r in records]
    for _ in range(WATCH_ATTEMPTS):
        with connection.pipeline(transaction=True) as pipe:
            pipe.watch(*names)  # type: ignore[no-untyped-call]
            # Read after WATCH (on another connection: the watching one is in immediate mode):
            # any change from here on aborts the EXEC below.
            present = _existing(connection, names)
            fresh = [r for r, here in zip(records, present, strict=True) if not here]
            if not fresh:
                return 0
            pipe.multi()
            # write_batch reads only `.events` and `.dedupe_window` of each group.
            groups = cast("Sequence[Any]", _groups(fresh))
            # The commit script counts inbound repeats itself; the drain reads no replies.
            write_batch(pipe, queue, groups, retention, time.time() if now is None else now)
            try:
                pipe.execute()
            except WatchError:
                continue
            return len(fresh)
    raise WatchError(f"event hashes kept changing during {WATCH_ATTEMPTS} commit attempts")


def redis_commit(
    connection: redis.Redis,
    *,
    retention: float = float(constants.DEFAULT_RETENTION),
    ack_replicas: AckReplicas = PRIMARY_ONLY,
    ack_timeout: float = constants.DEFAULT_INTAKE_TIMEOUT,
) -> Commit:
    """The drain's commit on a sync Redis client (the receiver's intake client will do).

    With `ack_replicas` N > 0 (or `all`: every replica online, at least one) a batch counts as
    drained (and the cursor moves past it) only once those replicas have it, the records found
    already in Redis included: those may have been written by an intake commit whose replicas
    never confirmed it (relay.store.replication).
    """
    queue = make_queue(connection)

    def commit(records: Sequence[SpooledEvent]) -> int:
        written = commit_spooled(connection, queue, records, retention=retention)
        # On the server whose replicas confirm: during a failover the pool's connections may
        # lead to two primaries (relay.store.replication.confirm_replicas).
        present = [keys.event_key(r.event.id) for r in records]
        confirm_replicas(connection, ack_replicas, ack_timeout, present=present)
        return written

    return commit


class SpoolDrainer:
    """Drains a Spool into Redis; `run` is the receiver's background task."""

    def __init__(
        self,
        spool: Spool,
        commit: Commit,
        *,
        interval: float = DRAIN_INTERVAL,
        max_backoff: float = MAX_BACKOFF,
        batch_size: int = constants.MAX_BATCH,
        batch_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        self.spool = spool
        self.commit = commit
        self.interval = interval
        self.max_backoff = max_backoff
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.drained = 0  # events written to Redis by the drain
        self.already = 0  # events found in Redis already (re-read after a crash)
        self.skipped_bytes = 0  # torn or damaged spool bytes passed over
        self._stopping = threading.Event()  # seen by the pass running in a worker thread
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._down_since: float | None = None

    def drain_pass(self) -> int:
        """Adopt orphans, then drain every held directory, oldest first; return records moved."""
        self.spool.adopt_orphans()
        self.spool.refresh_usage()
        moved = 0
        for directory in self.spool.directories():
            while not self._stopping.is_set():
                batch = directory.read_batch(self.batch_size, self.batch_bytes)
                if batch.skipped:
                    self.skipped_bytes += batch.skipped
                    log.error(
                        "spool_records_skipped",
                        directory=directory.name,
                        bytes=batch.skipped,
                        cause="torn by a crash mid-write, or damaged on disk",
                    )
                if batch.records:
                    written = self.commit(batch.records)
                    self.drained += written
                    self.already += len(batch.records) - written
                    moved += len(batch.records)
                if batch.end != directory.cursor:
                    directory.advance(batch.end)
                if batch.done:
                    break
            if self._stopping.is_set():
                break
            if not directory.owned and not directory.pending():
                self.spool.release(directory)
        return moved

    def start(self) -> None:
        """Start the background task on the running loop."""
        if self._task is None:
            self._wake = asyncio.Event()
            self._stopping.clear()
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self.run(), name="relay-spool-drain")

    def wake(self) -> None:
        """Start the next pass now (e.g. when the intake sees Redis come back)."""
        if self._wake is not None:
            self._wake.set()

    async def close(self) -> None:
        """Stop after the batch in flight (never in the middle of a commit)."""
        self._stopping.set()
        self.wake()
        if self._task is not None:
            await self._task
            self._task = None

    async def run(self) -> None:
        """Drain every interval; back off (doubling, with jitter) while a pass fails."""
        delay = self.interval
        while not self._stopping.is_set():
            try:
                moved = await asyncio.to_thread(self.drain_pass)
            except redis.RedisError as exc:
                self._note_down(exc)
                delay = min(max(delay * 2, self.interval), self.max_backoff)
            except OSError as exc:
                # The spool's own disk: nothing is lost (the cursor did not move); say so loudly.
                log.error("spool_drain_disk_error", error=str(exc), path=exc.filename)
                delay = self.max_backoff
            except Exception:
                # A bug must not end the task: spooled events would wait for a restart.
                log.exception("spool_drain_failed")
                delay = self.max_backoff
            else:
                self._note_up(moved)
                delay = self.interval
            await self._sleep(delay * random.uniform(0.8, 1.2))

    async def _sleep(self, seconds: float) -> None:
        if self._wake is None or self._stopping.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    def _note_down(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "spool_drain_waiting",
                error=str(exc),
                error_type=type(exc).__name__,
                effect="spooled events stay on disk until Redis takes writes again",
            )

    def _note_up(self, moved: int) -> None:
        if self._down_since is not None:
            log.warning(
                "spool_drain_resumed", waited_s=round(time.monotonic() - self._down_since, 3)
            )
            self._down_since = None
        if moved:
            stats = self.spool.stats()
            log.info(
                "spool_drained",
                events=moved,
                drained_total=self.drained,
                already_in_redis=self.already,
                spool_bytes=stats.bytes,
            )
