"""The record an enriched delivery carries (relay:enr:{id}): fetched once per event, kept with it.

A target with `enrich = "fellow"` receives each Fellow completion with the coursemember (or
programmember) record read from Fellow's API (worker.fellow.enrich). The record is fetched once
per event, not once per target or per attempt:

- the process that needs it first holds relay:lock:enr:{id} (SET NX PX, expiring on its own if
  the process dies mid-fetch) while it fetches; another process waits for the record instead
  (and fails its attempt if the lock goes with no record kept: the fetch failed);
- the record is kept with SET NX: the first one kept wins, and every target and every retry of
  the event reads that one, so all of them carry the same bytes;
- a completion that reconciliation synthesizes comes with the record its pass read already
  (`queue_record`, in the transaction committing the event): it is never fetched at all.

The value is the API's JSON object as compact JSON bytes (orjson), checked to be an object on
the way in and on the way out (a malformed value reads as absent: it is fetched again). It lives
as long as its event: its TTL is the retention period, renewed by each attempt that reads it
(GETEX), as every state change renews the event's; a replay lengthens both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import redis

from relay.store import keys

__all__ = [
    "MAX_RECORD_BYTES",
    "claim_fetch",
    "encode_record",
    "fetch_under_way",
    "keep_record",
    "load_record",
    "queue_record",
    "read_record",
    "release_fetch",
]

#: The largest record kept (encoded): a coursemember is a few hundred bytes; this bounds Redis.
MAX_RECORD_BYTES = 256 * 1024

#: Frees the fetch lock only if this process still holds it (its expiry may have handed it on).
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end"


def encode_record(record: Mapping[str, Any]) -> bytes:
    """A record as stored and sent: compact JSON (ValueError when it is too large)."""
    raw = orjson.dumps(record)
    if len(raw) > MAX_RECORD_BYTES:
        raise ValueError(f"the record is {len(raw)} bytes of JSON (at most {MAX_RECORD_BYTES})")
    return raw


def read_record(raw: object) -> bytes | None:
    """A stored value as record bytes; None when absent or not a JSON object."""
    if not isinstance(raw, bytes) or not raw.startswith(b"{"):
        return None
    try:
        return raw if isinstance(orjson.loads(raw), dict) else None
    except orjson.JSONDecodeError:
        return None


def _ttl(retention: float) -> int:
    return max(1, int(retention))


def load_record(conn: redis.Redis, event_id: str, retention: float) -> bytes | None:
    """The event's kept record, its TTL renewed to the retention period; None when none."""
    return read_record(conn.getex(keys.enrichment_key(event_id), ex=_ttl(retention)))


def claim_fetch(conn: redis.Redis, event_id: str, token: str, ttl: float) -> bool:
    """Take the event's fetch lock for `ttl` seconds; False when another process holds it."""
    lock = keys.enrichment_lock_key(event_id)
    return bool(conn.set(lock, token, nx=True, px=max(1, int(ttl * 1000))))


def fetch_under_way(conn: redis.Redis, event_id: str) -> bool:
    """Whether some process holds the event's fetch lock."""
    return bool(conn.exists(keys.enrichment_lock_key(event_id)))


def release_fetch(conn: redis.Redis, event_id: str, token: str) -> None:
    """Free the fetch lock if `token` still holds it."""
    conn.eval(_RELEASE, 1, keys.enrichment_lock_key(event_id), token)


def queue_record(
    pipe: redis.client.Pipeline, event_id: str, record: bytes, retention: float
) -> None:
    """Queue keeping a record on a pipeline (SET NX, the retention TTL): a record read before
    its event is committed goes in with the event, so no delivery ever lacks it."""
    pipe.set(keys.enrichment_key(event_id), record, nx=True, ex=_ttl(retention))


def keep_record(conn: redis.Redis, event_id: str, record: bytes, retention: float) -> bytes:
    """Keep a fetched record unless one is kept already: the record kept (the first wins)."""
    key = keys.enrichment_key(event_id)
    if conn.set(key, record, nx=True, ex=_ttl(retention)):
        return record
    kept = read_record(conn.get(key))
    if kept is None:  # expired meanwhile, or unreadable: this one is kept instead
        conn.set(key, record, ex=_ttl(retention))
        return record
    return kept
