"""The deliveries of a bulk replay job, kept so that another admin process can finish it.

`relay:job:{id}:pairs` (relay.store.keys) lists them in replay order, one "{event id}:{target}"
each (the dead-letter store's member form: names never contain ':'). The job's record says how
many are `done`, so what is left is the list from that index on, read a chunk at a time. The list
expires with the record (relay.store.jobs renews both) and is deleted when the job is over.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis
from redis.client import Pipeline

from relay.store import keys

#: (event id, target): one delivery (relay.ops.deliveries.Pair, which this layer cannot import).
Pair = tuple[str, str]

#: Members per RPUSH when a job's list is written (a 100,000-delivery job is 100 commands).
_PUSH = 1000


def push_pairs(pipe: Pipeline, job_id: str, pairs: Sequence[Pair], ttl: int) -> None:
    """Queue the writes of a job's list on `pipe` (replacing any list of that id)."""
    key = keys.job_pairs_key(job_id)
    pipe.delete(key)
    for start in range(0, len(pairs), _PUSH):
        pipe.rpush(key, *(keys.dead_member(*pair) for pair in pairs[start : start + _PUSH]))
    pipe.expire(key, ttl)


def read_pairs(conn: Redis, job_id: str, start: int, count: int) -> list[Pair] | None:
    """Up to `count` deliveries from index `start`; None when the list is gone (expired)."""
    key = keys.job_pairs_key(job_id)
    with conn.pipeline(transaction=False) as pipe:
        pipe.exists(key)
        pipe.lrange(key, start, start + count - 1)
        exists, raw = pipe.execute()
    if not exists:
        return None
    return [keys.split_dead_member(member.decode()) for member in raw]


def pairs_kept(conn: Redis, job_id: str) -> bool:
    """Whether the job's list is still there."""
    return bool(conn.exists(keys.job_pairs_key(job_id)))
