"""What relay wrote to Redis, read back for assertions: events, delivery states, due sets, kicks."""

from __future__ import annotations

import redis
from rq.job import Job

from relay.store import events_index, keys
from relay.store.queue import DELIVER_DUE, make_queue
from relay.store.records import Event


def indexed(conn: redis.Redis) -> list[str]:
    """Every id in the events index, newest first (its minute lists, then the sorted set of
    events stored before 2026-12)."""
    return events_index.newest_ids(conn, 1_000_000)


def received_times(conn: redis.Redis) -> dict[str, float]:
    """Every indexed event's received time (its hash's field), by id."""
    ids = indexed(conn)
    with conn.pipeline(transaction=False) as pipe:
        for event_id in ids:
            pipe.hget(keys.event_key(event_id), "received")
        values = pipe.execute()
    return {i: float(v or 0.0) for i, v in zip(ids, values, strict=True)}


def stored_event(conn: redis.Redis, event_id: str) -> Event:
    """The event as stored; fails the test when it is not in Redis."""
    data = conn.hgetall(keys.event_key(event_id))
    assert data, f"event {event_id} is not in Redis"
    return Event.from_redis(event_id, data)


def field(conn: redis.Redis, event_id: str, name: str) -> str | None:
    """One field of an event's hash, or None."""
    raw = conn.hget(keys.event_key(event_id), name)
    return raw.decode() if raw is not None else None


def states(conn: redis.Redis, event_id: str) -> dict[str, str]:
    """Each target's delivery state of an event: target -> state."""
    raw = conn.hgetall(keys.event_key(event_id))
    return {k.decode()[2:]: v.decode() for k, v in raw.items() if k.startswith(b"s:")}


def due(conn: redis.Redis, target: str = "crm") -> dict[str, float]:
    """A target's due set: event id -> when its delivery is due (or its lease ends)."""
    entries = conn.zrange(keys.due_key(target), 0, -1, withscores=True)
    return {member.decode(): float(score) for member, score in entries}


def kicks(conn: redis.Redis) -> int:
    """Kicks waiting in the queue; every queued job must be a kick (no event ids ride on jobs)."""
    jobs = make_queue(conn).jobs
    for job in jobs:
        assert job.func_name == DELIVER_DUE
        assert (job.args, job.kwargs) == ([], {})
    return len(jobs)


def queued_jobs(conn: redis.Redis) -> list[Job]:
    """The jobs waiting in the relay queue."""
    queue = make_queue(conn)
    return [j for j in Job.fetch_many(queue.get_job_ids(), conn, queue.serializer) if j]
