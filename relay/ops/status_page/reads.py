"""The status page's Redis reads: bounded, sync (run in a thread), shared by reloads close together.

The figures are `relay.ops.deliveries`' (`collect_status`, `list_dead`); only the recent failures
and the health of each target are read here, from the attempt logs (relay:att:{id}) of the newest
events and of the newest dead letters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import cast

import redis

from relay.ops import deliveries as ops
from relay.ops.status_page.model import RecentAttempt, StatusPage, summarize
from relay.store import events_index, keys
from relay.store.attempts import attempt_log

#: Newest events whose attempt logs are read for failures and health (one pipelined round trip).
RECENT_EVENTS = 500
#: Events of the newest dead letters read too: an old event may fail long after it arrived.
RECENT_DEAD_EVENTS = 50
#: Newest attempt records read per event (a log grows with every retry and replay).
ATTEMPTS_PER_EVENT = 10
#: Rows of the "newest dead letters" table.
DEAD_LETTERS_SHOWN = 10
#: Reloads within this many seconds (several tabs, several operators) share one Redis read.
CACHE_SECONDS = 2.0
#: A status read slower than this answers 503 instead of holding the request.
COLLECT_TIMEOUT = 10.0

#: What a status read may raise when Redis is away or slow.
UNAVAILABLE = (redis.RedisError, OSError, TimeoutError)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def read_recent_attempts(
    conn: redis.Redis,
    events: int = RECENT_EVENTS,
    dead: int = RECENT_DEAD_EVENTS,
    per_event: int = ATTEMPTS_PER_EVENT,
) -> list[RecentAttempt]:
    """The newest attempt records of the newest events and dead letters (bounded reads)."""
    newest = events_index.newest_ids(conn, events)
    dead_members = cast("list[bytes]", conn.zrevrange(keys.DEAD, 0, dead - 1))
    ids = list(dict.fromkeys(newest + [keys.split_dead_member(_text(m))[0] for m in dead_members]))
    if not ids:
        return []
    with conn.pipeline(transaction=False) as pipe:
        for event_id in ids:
            # The attempts are fields of the event hash (a listpack of a few hundred bytes);
            # an event stored before 2026-12 has them in a list of their own.
            pipe.hgetall(keys.event_key(event_id))
            pipe.lrange(keys.attempts_key(event_id), -per_event, -1)
        replies = pipe.execute()
    return [
        RecentAttempt(event_id, record)
        for i, event_id in enumerate(ids)
        for record in attempt_log(replies[2 * i], replies[2 * i + 1])[-per_event:]
    ]


def collect_page(
    conn: redis.Redis, configured_targets: Sequence[str] = (), reconciled: Sequence[str] = ()
) -> StatusPage:
    """Read everything the page shows: ops status (with the reconciled sources' last passes),
    newest dead letters, recent attempts."""
    status = ops.collect_status(conn, configured_targets, reconciled=reconciled)
    dead = ops.list_dead(conn, ops.DeadFilter(limit=DEAD_LETTERS_SHOWN))
    return summarize(status, read_recent_attempts(conn), dead, now=status.at)


class PageReader:
    """Reads the page in a thread; reloads within `cache_seconds` share one read."""

    def __init__(
        self,
        connection: Callable[[], redis.Redis],
        targets: Callable[[], Sequence[str]],
        cache_seconds: float = CACHE_SECONDS,
        reconciled: Callable[[], Sequence[str]] = tuple,
    ) -> None:
        self._connection = connection
        self._targets = targets
        self._reconciled = reconciled
        self._cache_seconds = cache_seconds
        self._lock = asyncio.Lock()
        self._last: tuple[float, StatusPage] | None = None

    def forget(self) -> None:
        """Drop the shared read: the next one reads Redis (after a write that changes it)."""
        self._last = None

    async def read(self) -> StatusPage:
        """The page, read now or within the last `cache_seconds`; raises one of UNAVAILABLE."""
        async with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < self._cache_seconds:
                return self._last[1]
            page = await asyncio.wait_for(
                asyncio.to_thread(
                    collect_page,
                    self._connection(),
                    tuple(self._targets()),
                    tuple(self._reconciled()),
                ),
                COLLECT_TIMEOUT,
            )
            self._last = (now, page)
            return page
