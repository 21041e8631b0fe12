"""Group commit of inbound events: many requests, one atomic script call, at most one RQ kick.

Every request hands its events to the `IntakeWriter` and waits. A background task takes the
waiting requests (relay.receiver.batch.take_batch) and commits the whole batch in one round trip
(relay.receiver.committer). The commit script runs atomically, so when its reply arrives every
event of the batch is in Redis, and only then does any request get its answer: a 202 always
means "durable in Redis". Batching is what makes this cheap: the round trip and RQ's per-job
cost are shared by the whole batch.

A Redis error fails every request of the batch (503: providers that retry will retry). The
writer never re-sends a commit that may have landed: a retried script whose first call did land
would write the batch twice. It does re-send one that provably did not (relay.store.failover:
no connection could be made, or the server refused it as no primary: a Sentinel failover under
way): the batch goes back to the front of the queue and is sent again after a short backoff,
through the Sentinels to whichever primary they name, until it commits or its requests reach
their deadline. The link opens a fresh connection on the next batch, so the writer recovers
alone.

With `ack_replicas` N > 0 (or `all`: every replica online) a batch counts as committed only once
those replicas confirm it (relay.receiver.committer); a batch they do not confirm in time fails
like a Redis error.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import redis
import structlog
from redis import asyncio as aioredis

from relay.core import constants
from relay.core.acks import PRIMARY_ONLY, AckReplicas
from relay.core.errors import Unavailable
from relay.receiver.batch import Committed, Pending, committed, take_batch
from relay.receiver.committer import BatchCommitter
from relay.receiver.deadlines import Deadlines
from relay.receiver.stall import StallWatch
from relay.store.failover import not_written
from relay.store.records import Event
from relay.store.replication import ReplicasUnconfirmed
from relay.store.sentinels import is_sentinel_client, named_primary

__all__ = ["IntakeWriter"]

log = structlog.get_logger("relay.intake")

#: Backoff before a batch that provably did not land is sent again (seconds, doubling, with
#: jitter): short, since a request waits for it; capped so a newly elected primary is found
#: within half a second.
RESEND_FIRST = 0.05
RESEND_CAP = 0.5


def _expire(future: asyncio.Future[Any], max_wait: float) -> None:
    if not future.done():
        future.set_exception(
            Unavailable(f"Redis did not take the event within {max_wait:g} s; retry later")
        )


class IntakeWriter:
    """Commits events to Redis in groups; `submit` returns once its events are durable."""

    def __init__(
        self,
        connection: redis.Redis | aioredis.Redis,
        *,
        queue_connection: redis.Redis | None = None,
        retention: float = float(constants.DEFAULT_RETENTION),
        max_batch: int = constants.MAX_BATCH,
        ack_replicas: AckReplicas = PRIMARY_ONLY,
        on_recovered: Callable[[], None] | None = None,
    ) -> None:
        """Commit on `connection`: redis.asyncio on the event loop, a sync client in a thread.

        RQ needs a sync client for its Queue (`queue_connection`, required with redis.asyncio;
        it only answers RQ's one-off version query: kicks are recorded, then sent on the link).
        `on_recovered` is called when a commit succeeds after failures (the spool drain waits
        for that).
        """
        self._committer = BatchCommitter(
            connection,
            queue_connection=queue_connection,
            retention=retention,
            ack_replicas=ack_replicas,
        )
        self._on_recovered = on_recovered
        # Under Sentinel, a commit stalled on a primary the Sentinels replaced is given up
        # (relay.receiver.stall); elsewhere a commit simply runs.
        self._watch = (
            StallWatch(lambda: named_primary(connection), lambda: self._committer.address)
            if isinstance(connection, aioredis.Redis) and is_sentinel_client(connection)
            else None
        )
        self._resend_delay = RESEND_FIRST
        self.max_batch = max_batch
        self._waiting: deque[Pending] = deque()  # submitted, not yet taken by a batch
        self._wakeup: asyncio.Future[None] | None = None  # the writer's, while it has no work
        self._idle = asyncio.Event()  # set while the writer waits for work
        self._deadlines = Deadlines(_expire)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._down_since: float | None = None  # monotonic time of the first failed batch
        self._failed_batches = 0
        self.batches = 0  # committed batches, for tests and the benchmark
        self.events = 0  # committed events

    @property
    def kicks_waiting(self) -> int:
        """RQ kicks queued at the last commit (the commit script's count)."""
        return self._committer.kicks_waiting

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
        await self._committer.drop()

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
        # One event (the usual request) without a generator's frame.
        size = len(events[0].body) if len(events) == 1 else sum(len(e.body) for e in events)
        deadline = loop.time() + max_wait
        self._waiting.append(Pending(events, int(dedupe_window), future, size, deadline))
        self._wake()
        # A deadline, not wait_for + shield (or a timer per request): relay.receiver.deadlines. On
        # expiry the request is answered 503: not yet taken, it is skipped; already taken, its
        # commit may still land, and the provider's retry then makes a duplicate that dedupe (where
        # configured) recognises.
        self._deadlines.add(loop, future, max_wait, deadline)
        return future

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            self._idle.clear()
            wakeup.set_result(None)

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
            batch = take_batch(self._waiting, self.max_batch)
            try:
                live = [p for p in batch if not p.future.done()]
                if live:
                    await self._commit(live)
            finally:
                self._deadlines.forget_answered()

    async def _commit(self, batch: list[Pending]) -> None:
        try:
            duplicates = await self._commit_once(batch)
        except ReplicasUnconfirmed as exc:
            self._note_failure(exc)
            self._fail(batch, f"{exc}; retry later")
            # Its replicas gone quiet: the primary may have been replaced (a failover, a
            # partition) while it still takes writes. The next batch asks the Sentinels again.
            await self._committer.drop()
            return
        except (redis.RedisError, OSError) as exc:
            self._note_failure(exc)
            if not_written(exc) and not self._closing:
                await self._send_again(batch)
                return
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
                pending.future.set_result(committed(duplicates[r]))
        # After the answers: the events are durable, only their delivery waits for the kick.
        if self._committer.kick_owed:
            await self._committer.send_owed_kick()

    async def _send_again(self, batch: list[Pending]) -> None:
        """Put a batch that did not land back at the front, after a backoff with jitter.

        Requests that reach their deadline meanwhile are answered 503 by their timer and left
        out of the next batch; new requests join it.
        """
        self._waiting.extendleft(reversed(batch))
        delay, self._resend_delay = self._resend_delay, min(RESEND_CAP, self._resend_delay * 2)
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    @staticmethod
    def _fail(batch: list[Pending], message: str) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(Unavailable(message))

    async def _commit_once(self, batch: list[Pending]) -> list[tuple[str | None, ...]]:
        """One round trip for the batch; per request, the earlier event each repeats."""
        if self._watch is None:
            return await self._committer.commit(batch)
        return await self._watch.run(self._committer.commit(batch))

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
        self._resend_delay = RESEND_FIRST
        if self._down_since is not None:
            log.warning(
                "redis_available",
                outage_s=round(time.monotonic() - self._down_since, 3),
                failed_batches=self._failed_batches,
            )
            self._down_since = None
            self._failed_batches = 0
            if self._on_recovered is not None:
                self._on_recovered()
