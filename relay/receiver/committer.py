"""One batch's way into Redis: the commit script and at most one RQ kick, in one round trip.

With redis.asyncio the commit runs on the event loop, on a connection of its own
(relay.receiver.link): handing it to a thread would cost more than the commit itself. RQ has no
async API (rq#2261), so a kick is recorded with `Queue.enqueue_many(pipeline=...)` on a sync
pipeline that is never sent, and its commands are sent on the link
(relay.store.queue.kick_commands). A sync client (fakeredis in `relay dev`'s embedded mode)
commits in a thread, in a MULTI pipeline.

With `ack_replicas` N > 0 the same round trip ends with `WAIT N ms`, bounded by the batch's
earliest deadline: the batch counts as committed only once N replicas have it
(relay.store.replication); otherwise `ReplicasUnconfirmed` and the requests get 503 (or spool).

With `all` the WAIT's count is the number of replicas to wait for: online, and acknowledging
the primary within RELAY_ACK_MAX_LAG (relay.store.replication.fresh_from_info). The WAIT is a
slice of at most WAIT_SLICE, and the round trip ends with `INFO replication` after it, which
says who counts now: the batch needs all of those (at least one). While it has fewer
confirmations and time left before its deadline, another slice (WAIT for the count just read,
then INFO) follows on the same connection, which covers the same writes: a replica killed or
gone stale during the WAIT stops being waited for within about a slice, and one that came online
is waited for. A healthy batch is answered by its first slice: one round trip. The count is
kept for the next batch's first WAIT. Read in the commit's own round trip, on the commit's own
connection, it costs no round trip under load and always comes from the primary the WAIT runs
on (a poller on another connection could still be reading the old primary just after a
failover, and a count too high holds a batch to its deadline). A count older than ONLINE_FRESH
(an idle receiver), or none (a new connection), is read first, one round trip more.

The kick is skipped while enough kicks already wait (a waiting kick takes everything due when
it runs); a batch that skipped it when in fact none was left waiting owes one, sent after its
requests are answered. A failed kick fails nothing: the events are committed, and a worker's
poll finds them due within half a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import redis
import structlog
from redis import asyncio as aioredis
from redis.exceptions import NoScriptError

from relay.core.acks import PRIMARY_ONLY, AckReplicas
from relay.receiver.batch import (
    BatchReplies,
    Pending,
    kick_owed,
    kicks_waiting,
    record_duplicates,
    write_batch,
)
from relay.receiver.link import RedisLink
from relay.store import keys
from relay.store.commit import commit_arguments
from relay.store.failover import NotSent
from relay.store.queue import KICKS_ENOUGH, kick, kick_commands, make_queue
from relay.store.replication import (
    INFO_COMMAND,
    WAIT_SLICE,
    check_confirmed,
    confirm_replicas,
    next_slice,
    replica_counts,
    wait_command,
)

__all__ = ["BatchCommitter"]

log = structlog.get_logger("relay.intake")

#: Seconds kept from a batch's deadline for the WAIT's reply to come back before it: on a loaded
#: machine 50 ms was too little, and the deadline (not the WAIT) answered the unconfirmed batch.
WAIT_MARGIN = 0.25
#: Bounds of a WAIT's timeout: never 0 (forever), never past a sane intake deadline.
MIN_WAIT = 0.01
MAX_WAIT = 60.0
#: Seconds an online-replica count read by a commit is used for the next one's WAIT; older, it
#: is read again first. Under load every batch reads it anew, so this only matters after a
#: pause, when a replica may have left or joined unseen.
ONLINE_FRESH = 1.0


def _kick_failed(exc: BaseException) -> None:
    # The events are committed either way; a worker's poll finds them due within half a second.
    log.warning("intake_kick_failed", error=str(exc), error_type=type(exc).__name__)


class BatchCommitter:
    """Commits one batch at a time on `connection` and keeps count of the kicks waiting."""

    def __init__(
        self,
        connection: redis.Redis | aioredis.Redis,
        *,
        queue_connection: redis.Redis | None,
        retention: float,
        ack_replicas: AckReplicas = PRIMARY_ONLY,
    ) -> None:
        """Commit on `connection`: redis.asyncio on the event loop, a sync client in a thread.

        RQ needs a sync client for its Queue (`queue_connection`, required with redis.asyncio;
        it only answers RQ's one-off version query: kicks are recorded, then sent on the link).
        """
        self.connection = connection
        sync = connection if isinstance(connection, redis.Redis) else queue_connection
        if sync is None:
            raise TypeError("a redis.asyncio connection needs queue_connection (sync, for RQ)")
        self.queue = make_queue(sync)
        self.retention = retention
        self.ack_replicas = ack_replicas
        # With `all`: replicas online and fresh at the end of the last commit, and when
        # (monotonic).
        self._online: int | None = None
        self._online_at = 0.0
        self._stale = 0  # online replicas last skipped for their lag (logged when it changes)
        self.kicks_waiting = 0  # RQ kicks queued at the last commit (the script's count)
        self.kick_owed = False  # the last commit skipped its kick and found none waiting
        # The asyncio commit's own connection (a sync client commits on a pipeline instead).
        self._link = RedisLink(connection) if isinstance(connection, aioredis.Redis) else None

    async def commit(self, batch: list[Pending]) -> list[tuple[str | None, ...]]:
        """One script call for the batch: on the loop on the link, else in a thread.

        Returns, per request, the earlier event each of its events repeats (or None). Raises
        ReplicasUnconfirmed when `ack_replicas` replicas did not confirm it in time.
        """
        link = self._link
        if link is None:
            return await asyncio.to_thread(self._commit_sync, batch, self._wait_time(batch))
        try:
            return await self._commit_on(link, batch)
        except BaseException:
            self._online = None  # read again on the next (perhaps new) connection
            raise

    async def _commit_on(
        self, link: RedisLink, batch: list[Pending], *, resent: bool = False
    ) -> list[tuple[str | None, ...]]:
        ack = self.ack_replicas
        wanted = await self._wanted(link) if ack.enabled else 0
        call = commit_arguments(batch, self.retention, time.time(), self.queue.key)
        kicking = call.routed and self.kicks_waiting < KICKS_ENOUGH
        kicks = await self._kick_commands() if kicking else []
        wait = self._wait_time(batch)  # after the kick's one-off version query
        waiting: list[tuple[Any, ...]] = []
        if ack.every_online:
            waiting = [wait_command(wanted, min(wait, WAIT_SLICE)), INFO_COMMAND]
        elif ack.enabled:
            waiting = [wait_command(wanted, wait)]
        await link.send([call.command(), *kicks, *waiting])
        try:
            reply = await link.read()  # every event of the batch is on the primary once here
        except NoScriptError:
            # The script went by its digest to a server whose script cache was emptied (SCRIPT
            # FLUSH): nothing of the batch ran. The link dropped the connection and sends the
            # script whole on the next one; the kick that went with it only finds less to do.
            if resent:
                raise
            return await self._commit_on(link, batch, resent=True)
        kicked = kicking and await self._read_kick(link, len(kicks))
        replies_at = BatchReplies(0, call.dedupe, kicked, kick_skipped=call.routed and not kicked)
        duplicates = self._read(batch, replies_at, [reply])
        if ack.enabled:
            # A kick that failed dropped the link: the WAIT's reply is lost with it, and the
            # batch counts as unconfirmed (a redis.ConnectionError).
            confirmed = await link.read()
            if ack.every_online:
                await self._confirm_online(link, batch, int(confirmed), wait)
            else:
                check_confirmed(confirmed, wanted, wait)
        return duplicates

    async def _wanted(self, link: RedisLink) -> int:
        """The count a WAIT asks for: the fixed one, or with `all` the replicas online and
        fresh (read first when the last commit's count is missing or stale, see ONLINE_FRESH)."""
        ack = self.ack_replicas
        if not ack.every_online:
            return ack.count
        fresh = time.monotonic() - self._online_at < ONLINE_FRESH
        if self._online is None or not fresh:
            try:
                await link.send([INFO_COMMAND])
                self._note_online(await link.read())
            except NotSent:
                raise
            except (redis.RedisError, OSError) as exc:
                # Nothing of the batch was sent yet: the intake may send it again.
                raise NotSent(f"cannot read the replicas online: {exc}") from exc
        assert self._online is not None
        return ack.wanted(self._online)

    async def _confirm_online(
        self, link: RedisLink, batch: list[Pending], confirmed: int, wait: float
    ) -> None:
        """With `all`, after the first WAIT slice (`confirmed`, its reply): read who counts
        (the INFO sent after it), and while fewer confirmed and the batch has time left, WAIT
        another slice for the count just read, on the same connection, which covers the same
        writes. `wait` is the whole time the batch was given, for the error."""
        # Who counts once a slice answered decides: a replica lost or gone stale during it is
        # not waited for, one that came online during it is.
        needed = self.ack_replicas.wanted(self._note_online(await link.read()))
        while (timeout := next_slice(confirmed, needed, self._time_left(batch))) is not None:
            await link.send([wait_command(needed, timeout), INFO_COMMAND])
            confirmed = int(await link.read())
            needed = self.ack_replicas.wanted(self._note_online(await link.read()))
        check_confirmed(confirmed, needed, wait)

    def _note_online(self, info: Any) -> int:
        counts = replica_counts(info, self.ack_replicas.max_lag)
        online, stale = counts.fresh, counts.stale
        self._online, self._online_at = online, time.monotonic()
        if stale != self._stale:
            # Once per change, not per batch: an operator must hear that 202s now stand on
            # fewer replicas (and when they stand on all of them again).
            self._stale = stale
            log.warning(
                "replicas_skipped_stale" if stale else "replicas_fresh_again",
                stale=stale,
                waiting_for=online,
                max_lag_s=self.ack_replicas.max_lag,
            )
        return online

    def _time_left(self, batch: list[Pending]) -> float:
        """Seconds until the batch's earliest deadline, less a margin for the round trip (the
        request is answered 503 at its deadline in any case); negative once past it."""
        deadline = min(p.deadline for p in batch)
        return deadline - asyncio.get_running_loop().time() - WAIT_MARGIN

    def _wait_time(self, batch: list[Pending]) -> float:
        """Seconds a WAIT may take in all: `_time_left`, within MIN_WAIT and MAX_WAIT."""
        if not self.ack_replicas.enabled:
            return 0.0
        return max(MIN_WAIT, min(self._time_left(batch), MAX_WAIT))

    async def send_owed_kick(self) -> None:
        """One kick on its own, for a batch that skipped its kick when none was left waiting."""
        self.kick_owed = False
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

    async def drop(self) -> None:
        """Close the link's connection, if there is one."""
        if self._link is not None:
            await self._link.drop()

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) of the server the link is connected to, if any (relay.receiver.stall)."""
        return None if self._link is None else self._link.address

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

    def _kick_sync(self) -> None:
        assert isinstance(self.connection, redis.Redis)
        with self.connection.pipeline(transaction=True) as pipe:
            kick(self.queue, pipeline=pipe)
            pipe.execute()

    def _commit_sync(self, batch: list[Pending], wait: float) -> list[tuple[str | None, ...]]:
        """The same on a sync client (fakeredis in `relay dev`'s embedded mode): in a thread."""
        assert isinstance(self.connection, redis.Redis)
        with self.connection.pipeline(transaction=True) as pipe:
            kick_workers = self.kicks_waiting < KICKS_ENOUGH
            replies_at = write_batch(
                pipe, self.queue, batch, self.retention, time.time(), kick_workers=kick_workers
            )
            duplicates = self._read(batch, replies_at, pipe.execute())
        # A repeat is stored as the event it repeats: that one must be on the confirming server.
        present = [
            keys.event_key(earlier or event.id)
            for pending, repeats in zip(batch, duplicates, strict=True)
            for event, earlier in zip(pending.events, repeats, strict=True)
        ]
        confirm_replicas(self.connection, self.ack_replicas, wait, present=present)
        return duplicates

    def _read(
        self, batch: list[Pending], replies_at: BatchReplies, replies: Sequence[Any]
    ) -> list[tuple[str | None, ...]]:
        self.kicks_waiting = kicks_waiting(replies_at, replies)
        self.kick_owed = kick_owed(replies_at, self.kicks_waiting)
        return record_duplicates(batch, replies_at, replies)
