"""The events index: every stored event's id, for listings, the API and the status page.

Since 2026-12 it is one LIST per minute of receipt, `relay:events:{minute}` (minute: Unix
seconds // 60), of the ids in intake order, which expires a minute after the retention period,
and a small sorted set of those minutes, `relay:events:minutes`, trimmed to the retention
period. An entry is the id's compact form (its ULID's 16 bytes: relay.core.ids.id_to_bytes),
made by the commit in Python and turned back into text by every reader here and in
relay.ops.events.walk. A list entry costs about 18 bytes per event (32 as the id's text)
where a sorted-set entry cost about 129 (bench/layout_costs.py). The intake commit writes
both (lua/commit.lua).

Before, the index was one sorted set, `relay:events` (id -> received time). Events indexed
there are all older than those in the minute lists (a relay writes one or the other), so a
reader walks the minute lists newest first and then that sorted set, until it is trimmed away
(relay.store.retention). Ids are only ever pushed at a list's end, so an index from a list's
start keeps naming the same id: the management API's cursors are such places
(relay.ops.events.walk).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import cast

import redis

from relay.core.ids import id_from_bytes
from relay.store import keys

__all__ = ["SECONDS", "bucket_key", "bucket_ttl", "minute_of", "newest_ids", "walk_minutes"]

#: Seconds of receipt one list holds.
SECONDS = 60
#: Minutes read from the sorted set of minutes per round trip.
_MINUTES_PAGE = 500


def minute_of(received: float) -> int:
    """The minute whose list indexes an event received at `received` (Unix seconds)."""
    return math.floor(received / SECONDS)


def bucket_key(minute: int) -> str:
    """The list of the ids of events received in one minute (the commit script builds the
    same name from keys.EVENTS_BUCKET_PREFIX)."""
    return f"{keys.EVENTS_BUCKET_PREFIX}{minute}"


def bucket_ttl(retention: float) -> int:
    """A minute's list outlives the newest event it indexes by at most a minute."""
    return max(1, int(retention)) + SECONDS


def _minutes(conn: redis.Redis, low: float | str) -> Iterator[int]:
    """The indexed minutes from the newest down to `low` (a minute, or "-inf")."""
    start = 0
    while True:
        page = cast(
            "list[bytes]",
            conn.zrevrangebyscore(keys.EVENTS_MINUTES, "+inf", low, start=start, num=_MINUTES_PAGE),
        )
        yield from (int(m) for m in page)
        if len(page) < _MINUTES_PAGE:
            return
        start += len(page)


def walk_minutes(
    conn: redis.Redis, since: float | None, want: Callable[[], int]
) -> Iterator[list[str]]:
    """Pages of ids from the minute lists, newest first, from the newest minute down to the
    minute of `since`; each page holds at most `want()` ids (asked before each read).

    An id pushed during the walk shifts the list: a page may then repeat ids of the previous
    one (callers skip ids seen), but never skips one.
    """
    low: float | str = "-inf" if since is None else minute_of(since)
    for minute in _minutes(conn, low):
        key, end = bucket_key(minute), -1
        while (size := want()) > 0:
            chunk = cast("list[bytes]", conn.lrange(key, end - size + 1, end))
            if chunk:
                yield [id_from_bytes(i) for i in reversed(chunk)]
            if len(chunk) < size:
                break
            end -= size
        else:
            return


def newest_ids(conn: redis.Redis, count: int) -> list[str]:
    """The ids of the newest `count` events: from the minute lists, then the sorted set of
    events stored before 2026-12."""
    found: list[str] = []
    for page in walk_minutes(conn, None, lambda: count - len(found)):
        found.extend(page)
    if len(found) < count:
        older = cast("list[bytes]", conn.zrevrange(keys.EVENTS_INDEX, 0, count - len(found) - 1))
        found.extend(i.decode() for i in older)
    return list(dict.fromkeys(found))[:count]
