"""Retention of relay's indexes: sorted sets carry no TTL, so old entries are trimmed by score.

The events index's minute lists expire on their own (relay.store.events_index); the sorted set
of their minutes, and the index of events stored before 2026-12 (`relay:events`), are trimmed.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from relay.store import events_index, keys


@dataclass(frozen=True)
class Trimmed:
    """How many index entries trim_indexes removed, per index."""

    events: int
    unrouted: int
    dead: int
    minutes: int = 0  # minutes of the events index (each a list of that minute's events)


def trim_indexes(conn: redis.Redis, retention: float, now: float) -> Trimmed:
    """Drop index entries older than the retention period (ZSET members carry no TTL)."""
    cutoff = now - retention
    pipe = conn.pipeline(transaction=False)
    pipe.zremrangebyscore(keys.EVENTS_INDEX, "-inf", f"({cutoff!r}")
    pipe.zremrangebyscore(keys.EVENTS_MINUTES, "-inf", f"({events_index.minute_of(cutoff)}")
    pipe.zremrangebyscore(keys.UNROUTED, "-inf", f"({cutoff!r}")
    pipe.zremrangebyscore(keys.DEAD, "-inf", f"({cutoff!r}")
    events, minutes, unrouted, dead = pipe.execute()
    return Trimmed(events=int(events), unrouted=int(unrouted), dead=int(dead), minutes=int(minutes))
