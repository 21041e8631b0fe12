"""Retention: the worker's periodic maintenance trims relay's indexes to RELAY_RETENTION.

Event hashes and the events index's minute lists expire on their own (every write sets their
TTL to the retention period), but sorted-set members carry no TTL: the index's minutes,
`relay:events` (the index before 2026-12), `relay:unrouted` and `relay:dead` would grow for
ever. Every worker runs this at each maintenance pass; a SET NX EX lock makes
one process in the whole deployment do it once per TRIM_INTERVAL.
"""

from __future__ import annotations

import redis
import structlog

from relay.store import keys
from relay.store.retention import Trimmed, trim_indexes

log = structlog.get_logger("relay.worker")

#: At most one trim per this many seconds across all workers: ZREMRANGEBYSCORE is cheap, but
#: entries older than 7 days gain nothing from being removed to the second.
TRIM_INTERVAL = 60


def trim_retention(
    conn: redis.Redis, retention: float, now: float, interval: int = TRIM_INTERVAL
) -> Trimmed | None:
    """Trim the indexes unless another process did within `interval` s; None when skipped."""
    if retention <= 0:
        return None  # no retention period configured to enforce: never trim everything
    if not conn.set(keys.TRIM_LOCK, "1", nx=True, ex=max(1, int(interval))):
        return None
    trimmed = trim_indexes(conn, retention, now)
    if trimmed.events or trimmed.unrouted or trimmed.dead or trimmed.minutes:
        log.info(
            "retention: old index entries trimmed",
            events=trimmed.events,
            event_minutes=trimmed.minutes,
            unrouted=trimmed.unrouted,
            dead_letters=trimmed.dead,
            retention_s=retention,
        )
    return trimmed
