"""Group commit of inbound events: many requests, one atomic script call, at most one RQ kick.

Every request hands its events to the `IntakeWriter` and waits. A background task takes the
waiting requests (up to `MAX_BATCH` events) and writes the whole batch in one round trip: one
call of the commit script (relay.store.commit), then one RQ kick (`worker.jobs.deliver_due`)
unless enough kicks already wait (a waiting kick takes everything due when it runs). The script
runs atomically, so when its reply arrives every event of the batch is in Redis, and only then
does any request get its answer: a 202 always means "durable in Redis". The kick is not part of
that promise: if it fails, the events stay committed and a worker's poll finds them due within
half a second. Batching is what pays: the round trip and RQ's per-job cost are shared.

The commit runs on the event loop, on a connection of its own (relay.receiver.link): handing it
to a thread costs more than the commit itself. RQ has no async API (rq#2261), so a kick is
recorded with `Queue.enqueue_many(pipeline=...)` on a sync pipeline that is never sent, and its
commands are sent on the link (relay.store.queue.kick_commands). A sync client (fakeredis in
`relay dev`'s embedded mode) commits in a thread, in a MULTI pipeline.

A Redis error fails every request of the batch (503: providers that retry will retry). The
writer never retries by itself: a retried script whose first call did land would write the
batch twice. The link opens a fresh connection on the next batch, so the writer recovers alone.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import structlog
from redis import asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.connection import HiredisRespSerializer
from rq import Queue

from relay.core import constants
from relay.core.errors import Unavailable
from relay.receiver.deadlines import Deadlines
from relay.receiver.link import RedisLink
from relay.store import clients
from relay.store.commit import commit_arguments
from relay.store.event import Event
from relay.store.queue import KICKS_ENOUGH, kick, kick_commands, make_queue

log = structlog.get_logger("relay.intake")

#: A batch also stops growing at this many body bytes, so one MULTI stays a few MiB at most
#: even when every request is near the 1 MiB limit (a single larger request still goes alone).
MAX_BATCH_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Committed:
    """What the commit says about each event of one request, in order."""

    duplicate_of: tuple[str | None, ...]  # the first event with the same dedupe value, or None

    @property
    def duplicate(self) -> bool:
        """Whether every event of the request repeats an earlier one."""
        return bool(self.duplicate_of) and all(d is not None for d in self.duplicate_of)


@dataclass
class _Pending:
    """One request's events waiting for the next commit."""

    events: Sequence[Event]
    dedupe_window: int
    future: asyncio.Future[Committed]
    size: int = field(default=0)


def _expire(future: asyncio.Future[Any], max_wait: float) -> None:
    if not future.done():
        future.set_exception(
            Unavailable(f"Redis did not take the event within {max_wait:g} s; retry later")
        )


def _kick_failed(exc: BaseException) -> None:
    # The events are committed either way; a worker's poll finds them due within half a second.
    log.warning("intake_kick_failed", error=str(exc), error_type=type(exc).__name__)


def sync_client(url: str, socket_timeout: float) -> redis.Redis:
    """A sync client with the intake's bounds, for what runs in threads (and RQ's queue)."""
    return clients.sync_client(url, clients.intake(socket_timeout))


def intake_client(url: str, socket_timeout: float) -> aioredis.Redis:
    """The writer's redis.asyncio client, with the same bounds and hiredis's command packer."""
    client = clients.async_client(url, clients.intake(socket_timeout))
    pool = client.connection_pool
    # The URL chose the class (TCP, TLS or Unix socket); no connection exists yet.
    pool.connection_class = c_packing(pool.connection_class)
    return client


_HIREDIS = HiredisRespSerializer()


def c_packing(base: type[AbstractConnection]) -> type[AbstractConnection]:
    """`base` packing its commands with hiredis, in C, as redis-py's sync client does.

    redis.asyncio packs commands in Python, a large part of what the commit costs the receiver
    per event. The bytes sent are the same (tests/test_intake.py).
    """

    def pack_command(self: AbstractConnection, *args: Any) -> list[bytes]:
        return _HIREDIS.pack(*args)  # type: ignore[no-any-return]

    return type(f"CPacked{base.__name__}", (base,), {"pack_command": pack_command})


@dataclass(frozen=True)
class BatchReplies:
    """Where the replies of one batch's commit are, in the pipeline's reply list."""

    script_at: int  # the commit script's reply: the queue's length, then the dedupe strings
    dedupe: list[tuple[int, int]]  # (request index, event index) of each, in reply order
    kicked: bool = False  # a kick was sent after the script (and went through)
    #: Something was routed but no kick went out: kicks were waiting at the last commit (or
    #: the kick failed after the script had committed the batch).
    kick_skipped: bool = False


def write_batch(
    pipe: Any,
    queue: Queue,
    batch: Sequence[_Pending],
    retention: float,
    now: float,
    *,
    kick_workers: bool = True,
) -> BatchReplies:
    """Buffer the commands of one batch on a sync MULTI pipeline.

    The events go in one call of the commit script (relay.store.commit), which also reads the
    length of RQ's queue; then, if asked and anything was routed, one RQ kick. (The receiver's
    own commit sends the same commands on its link: `IntakeWriter`.)
    """
    call = commit_arguments(batch, retention, now, queue.key)
    at = len(pipe.command_stack)
    pipe.execute_command(*call.command())  # the same EVAL the link sends
    kicked = call.routed and kick_workers
    if kicked:
        for args, options in kick_commands(queue):
            pipe.execute_command(*args, **options)
    return BatchReplies(at, call.dedupe, kicked=kicked, kick_skipped=call.routed and not kicked)


def kicks_waiting(replies_at: BatchReplies, replies: Sequence[Any]) -> int:
    """The kicks in the queue once the batch is in: the script's count plus the batch's own."""
    return int(replies[replies_at.script_at][0]) + replies_at.kicked


def kick_owed(replies_at: BatchReplies, kicks_waiting: int) -> bool:
    """Whether a committed batch still needs a kick: it sent none, and none waits.

    The skip was decided on the queue length of the previous commit; workers may have taken
    every kick since. The length read by this commit's own script is exact: a kick still
    waiting then will claim this batch's deliveries when it runs; with none waiting, they
    would wait for a worker's poll (half a second) unless a kick is sent now.
    """
    return replies_at.kick_skipped and kicks_waiting == 0


def record_duplicates(
    batch: Sequence[_Pending], replies_at: BatchReplies, replies: Sequence[Any]
) -> list[tuple[str | None, ...]]:
    """Read a committed batch's dedupe replies: per request, the earlier event each repeats.

    (The commit script has already counted the repeats in the sources' `duplicates` counters.)
    """
    found: list[list[str | None]] = [[None] * len(p.events) for p in batch]
    firsts = replies[replies_at.script_at][1:]  # [0] is the queue's length
    for (r, e), previous in zip(replies_at.dedupe, firsts, strict=True):
        first = previous.decode() if isinstance(previous, bytes) else str(previous)
        if first and first != batch[r].events[e].id:  # "" or our own id: nothing was there
            found[r][e] = first
    return [tuple(f) for f in found]


class IntakeWriter:
    """Commits events to Redis in groups; `submit` returns once its events are durable."""

    def __init__(
        self,
        connection: redis.Redis | aioredis.Redis,
        *,
        queue_connection: redis.Redis | None = None,
        retention: float = float(constants.DEFAULT_RETENTION),
        max_batch: int = constants.MAX_BATCH,
    ) -> None:
        """Commit on `connection`: redis.asyncio on the event loop, a sync client in a thread.

        RQ needs a sync client for its Queue (`queue_connection`, required with redis.asyncio;
        it only answers RQ's one-off version query: kicks are recorded, then sent on the
        asyncio pipeline).
        """
        self.connection = connection
        sync = connection if isinstance(connection, redis.Redis) else queue_connection
        if sync is None:
            raise TypeError("a redis.asyncio connection needs queue_connection (sync, for RQ)")
        self.queue = make_queue(sync)
        self.retention = retention
        self.max_batch = max_batch
        self._waiting: deque[_Pending] = deque()  # submitted, not yet taken by a batch
        self._wakeup: asyncio.Future[None] | None = None  # the writer's, while it has no work
        self._idle = asyncio.Event()  # set while the writer waits for work
        self._deadlines = Deadlines(_expire)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._down_since: float | None = None  # monotonic time of the first failed batch
        self._failed_batches = 0
        self.batches = 0  # committed batches, for tests and the benchmark
        self.events = 0  # committed events
        self.kicks_waiting = 0  # RQ kicks queued at the last commit (the script's count)
        self._kick_owed = False  # the last commit skipped its kick and found none waiting
        # The asyncio commit's own connection (a sync client commits on a pipeline instead).
        self._link = RedisLink(connection) if isinstance(connection, aioredis.Redis) else None

    @property
    def available(self) -> bool:
        """False between a failed commit and the next successful one."""
        return self._down_since is None

    def start(self) -> None:
        """Start the background commit task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="relay-intake")

    async def close(self) -> None:
        """Commit what is already waiting, then stop the background task."""
        self._closing = True
        if self._task is None:
            return
        self._wake()
        await self._task  # it ends once nothing is left waiting
        self._task = None
        self._deadlines.close()
        if self._link is not None:
            await self._link.drop()

    async def idle(self) -> None:
        """Wait until the writer has nothing to do (what it does after answering, too)."""
        await self._idle.wait()

    def submit(
        self, events: Sequence[Event], *, dedupe_window: float = 0.0, max_wait: float
    ) -> asyncio.Future[Committed]:
        """Make `events` durable: await the future, which fails with Unavailable when Redis
        fails or `max_wait` seconds pass.

        A plain function returning the future, not a coroutine: the receiver awaits it directly
        (one coroutine less to make and to resume per request).
        """
        if self._closing or self._task is None:
            raise Unavailable("the receiver is shutting down; retry later")
        loop = self._task.get_loop()
        future: asyncio.Future[Committed] = loop.create_future()
        size = sum(len(event.body) for event in events)
        self._waiting.append(_Pending(events, int(dedupe_window), future, size))
        self._wake()
        # A deadline, not wait_for + shield (or a timer per request): relay.receiver.deadlines. On
        # expiry the request is answered 503: not yet taken, it is skipped; already taken, its
        # commit may still land, and the provider's retry then makes a duplicate that dedupe (where
        # configured) recognises.
        self._deadlines.add(loop, future, max_wait)
        return future

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            self._idle.clear()
            wakeup.set_result(None)

    def _take_batch(self) -> list[_Pending]:
        waiting = self._waiting
        first = waiting.popleft()
        batch = [first]
        count, size = len(first.events), first.size
        while count < self.max_batch and size < MAX_BATCH_BYTES and waiting:
            item = waiting.popleft()
            batch.append(item)
            count += len(item.events)
            size += item.size
        return batch

    async def _run(self) -> None:
        # One batch at a time: while it waits for Redis the next one grows. Two in flight would
        # only make the batches smaller, not the throughput larger.
        loop = asyncio.get_running_loop()
        while True:
            if not self._waiting:
                if self._closing:
                    self._idle.set()
                    return
                self._wakeup = loop.create_future()
                self._idle.set()
                await self._wakeup
                continue
            batch = self._take_batch()
            try:
                live = [p for p in batch if not p.future.done()]
                if live:
                    await self._commit(live)
            finally:
                self._deadlines.forget_answered()

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            duplicates = await self._commit_once(batch)
        except (redis.RedisError, OSError) as exc:
            self._note_failure(exc)
            self._fail(batch, "Redis cannot take the event right now; retry later")
            return
        except Exception:
            # A bug must not kill the commit task (every later request would time out).
            log.exception("intake_commit_failed", events=sum(len(p.events) for p in batch))
            self._fail(batch, "the event could not be recorded; retry later")
            return
        self._note_success()
        self.batches += 1
        for r, pending in enumerate(batch):
            self.events += len(pending.events)
            if not pending.future.done():
                pending.future.set_result(Committed(duplicates[r]))
        if self._kick_owed:  # after the answers: the events are durable, only delivery waits
            await self._send_owed_kick()

    @staticmethod
    def _fail(batch: list[_Pending], message: str) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(Unavailable(message))

    async def _commit_once(self, batch: list[_Pending]) -> list[tuple[str | None, ...]]:
        """One script call for the batch: on the loop on the link, else in a thread."""
        link = self._link
        if link is None:
            return await asyncio.to_thread(self._commit_sync, batch)
        call = commit_arguments(batch, self.retention, time.time(), self.queue.key)
        kicking = call.routed and self.kicks_waiting < KICKS_ENOUGH
        commands = [call.command(), *(await self._kick_commands() if kicking else ())]
        await link.send(commands)
        reply = await link.read()  # every event of the batch is in Redis once this arrives
        kicked = kicking and await self._read_kick(link, len(commands) - 1)
        replies_at = BatchReplies(0, call.dedupe, kicked, kick_skipped=call.routed and not kicked)
        return self._read(batch, replies_at, [reply])

    async def _kick_commands(self) -> list[tuple[Any, ...]]:
        """The commands of one kick, for the link (redis-py's per-command options are only
        hints for its reply parsing; the link reads raw replies)."""
        if not self.queue.redis_server_version:
            # RQ asks the server's version once per Queue, with a sync INFO: not on the loop.
            await asyncio.to_thread(self.queue.get_redis_server_version)
        return [args for args, _ in kick_commands(self.queue)]

    @staticmethod
    async def _read_kick(link: RedisLink, replies: int) -> bool:
        """Read a kick's replies; False (logged) if it failed: its events are committed
        anyway, and a worker's poll finds them due within half a second."""
        try:
            for _ in range(replies):
                await link.read()
        except (redis.RedisError, OSError) as exc:
            _kick_failed(exc)
            return False
        return True

    async def _send_owed_kick(self) -> None:
        """One kick on its own, for a batch that skipped its kick when none was left waiting."""
        self._kick_owed = False
        try:
            if self._link is not None:
                commands = await self._kick_commands()
                await self._link.send(commands)
                if not await self._read_kick(self._link, len(commands)):
                    return
            else:
                await asyncio.to_thread(self._kick_sync)
        except (redis.RedisError, OSError) as exc:
            _kick_failed(exc)
            return
        self.kicks_waiting += 1

    def _kick_sync(self) -> None:
        assert isinstance(self.connection, redis.Redis)
        with self.connection.pipeline(transaction=True) as pipe:
            kick(self.queue, pipeline=pipe)
            pipe.execute()

    def _commit_sync(self, batch: list[_Pending]) -> list[tuple[str | None, ...]]:
        """The same on a sync client (fakeredis in `relay dev`'s embedded mode): in a thread."""
        assert isinstance(self.connection, redis.Redis)
        with self.connection.pipeline(transaction=True) as pipe:
            kick_workers = self.kicks_waiting < KICKS_ENOUGH
            replies_at = write_batch(
                pipe, self.queue, batch, self.retention, time.time(), kick_workers=kick_workers
            )
            return self._read(batch, replies_at, pipe.execute())

    def _read(
        self, batch: list[_Pending], replies_at: BatchReplies, replies: Sequence[Any]
    ) -> list[tuple[str | None, ...]]:
        self.kicks_waiting = kicks_waiting(replies_at, replies)
        self._kick_owed = kick_owed(replies_at, self.kicks_waiting)
        return record_duplicates(batch, replies_at, replies)

    def _note_failure(self, exc: BaseException) -> None:
        self._failed_batches += 1
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error(
                "redis_unavailable",
                error=str(exc),
                error_type=type(exc).__name__,
                effect="requests are answered 503 until Redis takes writes again",
            )

    def _note_success(self) -> None:
        if self._down_since is not None:
            log.warning(
                "redis_available",
                outage_s=round(time.monotonic() - self._down_since, 3),
                failed_batches=self._failed_batches,
            )
            self._down_since = None
            self._failed_batches = 0
