"""Retention of relay's indexes: sorted sets carry no TTL, so old entries are trimmed by score."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from relay.store import keys


@dataclass(frozen=True)
class Trimmed:
    """How many index entries trim_indexes removed, per index."""

    events: int
    unrouted: int
    dead: int


def trim_indexes(conn: redis.Redis, retention: float, now: float) -> Trimmed:
    """Drop index entries older than the retention period (ZSET members carry no TTL)."""
    cutoff = now - retention
    pipe = conn.pipeline(transaction=False)
    pipe.zremrangebyscore(keys.EVENTS_INDEX, "-inf", f"({cutoff!r}")
    pipe.zremrangebyscore(keys.UNROUTED, "-inf", f"({cutoff!r}")
    pipe.zremrangebyscore(keys.DEAD, "-inf", f"({cutoff!r}")
    events, unrouted, dead = pipe.execute()
    return Trimmed(events=int(events), unrouted=int(unrouted), dead=int(dead))
