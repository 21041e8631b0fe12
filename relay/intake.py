"""Group commit of inbound events: many requests, one Redis transaction, at most one RQ kick.

Every request hands its events to the `IntakeWriter` and waits. A background task takes the
first waiting request, drains whatever else is already waiting (up to `MAX_BATCH` events), and
writes the whole batch in ONE round trip: a redis-py pipeline inside MULTI/EXEC holding, per
event, its hash (body, headers, per-target state) with an expiry, one entry per routed target
in that target's due set (relay.keys.due_key) and, for a deduplicated source,
`SET dedupe-key id NX GET EX window`; per batch, the index entries, the source counters and one
RQ kick (`worker.jobs.deliver_due`), skipped while enough kicks already wait (a waiting kick
takes everything due when it runs). Only after EXEC does any request get its answer, so a 202
always means "durable in Redis".

RQ has no async API (rq#2261), so the commit runs in a thread (`asyncio.to_thread`) on a sync
client and uses RQ's public `Queue.enqueue_many(pipeline=...)`, which only buffers commands.
Batching is what pays: the Redis round trip and RQ's per-job cost are shared by the batch, and
under load by many batches (kicks coalesce).

A Redis error fails every request of the batch (503: providers that retry will retry). The
client never retries by itself: a retried MULTI whose first EXEC did land would enqueue the
batch twice. redis-py opens a fresh connection on the next batch, so the writer recovers alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import structlog
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue

from relay import constants, keys
from relay.envelope import Event
from relay.errors import Unavailable
from relay.queueing import KICKS_ENOUGH, kick, make_queue

log = structlog.get_logger("relay.intake")

#: A batch also stops growing at this many body bytes, so one MULTI stays a few MiB at most
#: even when every request is near the 1 MiB limit (a single larger request still goes alone).
MAX_BATCH_BYTES = 8 * 1024 * 1024

#: Connecting to a local or same-network Redis takes well under a second; a dead host should
#: fail the batch quickly rather than hold every waiting request until the intake timeout.
CONNECT_TIMEOUT = 1.0


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


def _expire(future: asyncio.Future[Committed], max_wait: float) -> None:
    if not future.done():
        future.set_exception(
            Unavailable(f"Redis did not take the event within {max_wait:g} s; retry later")
        )


def intake_client(url: str, socket_timeout: float) -> redis.Redis:
    """A sync client for the writer: bounded socket waits and no silent re-execution."""
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=min(CONNECT_TIMEOUT, socket_timeout),
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )


def write_batch(
    pipe: Any,
    queue: Queue,
    batch: Sequence[_Pending],
    retention: float,
    now: float,
    *,
    kick_workers: bool = True,
) -> list[tuple[int, int, int]]:
    """Buffer the commands of one batch on a MULTI pipeline.

    Returns (request index, event index, reply index) of each dedupe `SET`, whose reply after
    EXEC tells whether the event was seen before. The batch's last command is `LLEN` of the
    queue: the kicks waiting, which decides whether the next batch needs a kick of its own.
    """
    ttl = max(1, int(retention))
    indexed: dict[str, float] = {}
    unrouted: dict[str, float] = {}
    counters: dict[str, list[int]] = {}
    routed: list[str] = []
    due_targets: set[str] = set()
    dedupe_replies: list[tuple[int, int, int]] = []
    for r, pending in enumerate(batch):
        for e, event in enumerate(pending.events):
            key = keys.event_key(event.id)
            fields: dict[str, Any] = event.to_redis()
            for target in event.targets:
                fields[keys.state_field(target)] = keys.PENDING
                fields[keys.attempts_field(target)] = 0
            pipe.hset(key, mapping=fields)
            pipe.expire(key, ttl)
            if event.dedupe_key:
                dedupe_replies.append((r, e, len(pipe.command_stack)))
                pipe.set(
                    event.dedupe_key,
                    event.id,
                    nx=True,
                    get=True,
                    ex=max(1, pending.dedupe_window),
                )
            indexed[event.id] = event.received_at
            counts = counters.setdefault(event.source, [0, 0])
            counts[0] += 1
            if event.targets:
                routed.append(event.id)
                for target in event.targets:
                    due_targets.add(target)
                    pipe.zadd(keys.due_key(target), {event.id: event.received_at})
            else:
                unrouted[event.id] = event.received_at
                counts[1] += 1
    # One command per index and per source for the whole batch, not one per event.
    pipe.zadd(keys.EVENTS_INDEX, indexed)
    pipe.zremrangebyscore(keys.EVENTS_INDEX, "-inf", now - retention)
    if unrouted:
        pipe.zadd(keys.UNROUTED, unrouted)
        pipe.zremrangebyscore(keys.UNROUTED, "-inf", now - retention)
    for source, (received, not_routed) in counters.items():
        stats = keys.source_stats_key(source)
        pipe.hincrby(stats, "received", received)
        if not_routed:
            pipe.hincrby(stats, "unrouted", not_routed)
    if due_targets:
        pipe.sadd(keys.DUE_TARGETS, *sorted(due_targets))
    if routed and kick_workers:
        kick(queue, pipeline=pipe)
    pipe.llen(queue.key)
    return dedupe_replies


def record_duplicates(
    connection: redis.Redis,
    batch: Sequence[_Pending],
    replies_at: Sequence[tuple[int, int, int]],
    replies: Sequence[Any],
) -> list[tuple[str | None, ...]]:
    """Read a committed batch's dedupe replies: per request, the earlier event each repeats.

    Counts the repeats in the sources' `duplicates` counters: here, once per inbound repeat, and
    nowhere else (the worker only skips them).
    """
    found: list[list[str | None]] = [[None] * len(p.events) for p in batch]
    seen: dict[str, int] = {}
    for r, e, at in replies_at:
        previous = replies[at]
        if previous is None:
            continue
        first = previous.decode() if isinstance(previous, bytes) else str(previous)
        if first != batch[r].events[e].id:  # our own id back means nothing was there before
            found[r][e] = first
            source = batch[r].events[e].source
            seen[source] = seen.get(source, 0) + 1
    if seen:
        # Best effort, after EXEC: a lost counter must not turn a durable event into a 503.
        try:
            pipe = connection.pipeline(transaction=False)
            for source, count in seen.items():
                pipe.hincrby(keys.source_stats_key(source), "duplicates", count)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("duplicate_count_lost", error=str(exc), sources=sorted(seen))
    return [tuple(f) for f in found]


class IntakeWriter:
    """Commits events to Redis in groups; `submit` returns once its events are durable."""

    def __init__(
        self,
        connection: redis.Redis,
        *,
        retention: float = float(constants.DEFAULT_RETENTION),
        max_batch: int = constants.MAX_BATCH,
    ) -> None:
        self.connection = connection
        self.queue = make_queue(connection)
        self.retention = retention
        self.max_batch = max_batch
        self._pending: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._down_since: float | None = None  # monotonic time of the first failed batch
        self._failed_batches = 0
        self.batches = 0  # committed batches, for tests and the benchmark
        self.events = 0  # committed events
        self.kicks_waiting = 0  # RQ kicks queued at the last commit (its LLEN reply)

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
        await self._pending.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def submit(
        self, events: Sequence[Event], *, dedupe_window: float = 0.0, max_wait: float
    ) -> Committed:
        """Make `events` durable; raise Unavailable when Redis fails or `max_wait` seconds pass."""
        if self._closing or self._task is None:
            raise Unavailable("the receiver is shutting down; retry later")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Committed] = loop.create_future()
        size = sum(len(event.body) for event in events)
        self._pending.put_nowait(_Pending(events, int(dedupe_window), future, size))
        # One timer per request, cheaper than wait_for + shield on the hot path. On expiry the
        # request is answered 503: not yet taken, it is skipped; already taken, its commit may
        # still land, and the provider's retry then makes a duplicate that dedupe (where
        # configured) recognises.
        timer = loop.call_later(max_wait, _expire, future, max_wait)
        try:
            return await future
        finally:
            timer.cancel()

    def _take_batch(self, first: _Pending) -> list[_Pending]:
        batch = [first]
        count, size = len(first.events), first.size
        while count < self.max_batch and size < MAX_BATCH_BYTES and not self._pending.empty():
            item = self._pending.get_nowait()
            batch.append(item)
            count += len(item.events)
            size += item.size
        return batch

    async def _run(self) -> None:
        while True:
            batch = self._take_batch(await self._pending.get())
            try:
                live = [p for p in batch if not p.future.done()]
                if live:
                    await self._commit(live)
            finally:
                for _ in batch:
                    self._pending.task_done()

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            duplicates = await asyncio.to_thread(self._commit_sync, batch)
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

    @staticmethod
    def _fail(batch: list[_Pending], message: str) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(Unavailable(message))

    def _commit_sync(self, batch: list[_Pending]) -> list[tuple[str | None, ...]]:
        """One MULTI/EXEC for the batch (runs in a worker thread)."""
        pipe = self.connection.pipeline(transaction=True)
        replies_at = write_batch(
            pipe,
            self.queue,
            batch,
            self.retention,
            time.time(),
            kick_workers=self.kicks_waiting < KICKS_ENOUGH,
        )
        replies = pipe.execute()
        self.kicks_waiting = int(replies[-1])
        return record_duplicates(self.connection, batch, replies_at, replies)

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
