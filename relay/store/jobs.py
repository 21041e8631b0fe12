"""The record of a bulk replay job: its one codec, and how it is written and read.

A bulk replay started through the management API can take minutes (each delivery is replayed
atomically on its own), so the API answers at once with a job, and the job's progress is kept
under `relay:job:{id}` (relay.store.keys) for any admin process to answer a poll. The record
expires a day after its last update.

A job's deliveries are kept beside it (relay.store.job_pairs) and it is listed in
`relay:jobs:open` until it is over, so that when its process stops (a deploy, SIGKILL, a lost
host) another admin process takes its lease (relay.store.job_lease) and finishes it from `done`
on; `resumed` counts how often that happened.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import orjson
from redis import Redis

from relay.core.times import format_time
from relay.store import keys
from relay.store.job_pairs import Pair, push_pairs

#: A job record is kept this long after its last write.
JOB_TTL = 86_400

#: A running job whose record has not moved for this long lost its process (a restart).
STALE_AFTER = 60.0


class JobState(StrEnum):
    """Where a job stands."""

    RUNNING = "running"  # also while it waits to be resumed (its process stopped)
    FINISHED = "finished"
    FAILED = "failed"  # stopped by an error (Redis went away, its deliveries expired): `error`
    # Its record has not moved for STALE_AFTER: its process stopped and no admin process has
    # resumed it yet (read-side only, never stored: the record still says running).
    ABANDONED = "abandoned"


@dataclass(frozen=True)
class Job:
    """A bulk replay's progress."""

    id: str
    by: str  # the principal that started it
    total: int
    created_at: float
    updated_at: float
    state: JobState = JobState.RUNNING
    done: int = 0
    replayed: int = 0
    failed: int = 0
    error: str = ""
    selection: str = "{}"  # the filter it was started with, as JSON text
    failures: str = "[]"  # the first few failed results, as JSON text
    resumed: int = 0  # how often another admin process took it over after its own stopped

    @property
    def over(self) -> bool:
        """Whether the job ended (finished or failed): nothing will run it again."""
        return self.state in (JobState.FINISHED, JobState.FAILED)

    def to_redis(self) -> dict[str, str | int | float]:
        """The fields of the record's hash."""
        return {
            "by": self.by,
            "total": self.total,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "state": str(self.state),
            "done": self.done,
            "replayed": self.replayed,
            "failed": self.failed,
            "error": self.error,
            "selection": self.selection,
            "failures": self.failures,
            "resumed": self.resumed,
        }

    @classmethod
    def from_redis(cls, job_id: str, data: dict[bytes, bytes]) -> Job:
        """The record read back (tolerant of missing fields)."""

        def text(name: str, default: str = "") -> str:
            raw = data.get(name.encode())
            return raw.decode("utf-8", "replace") if raw is not None else default

        def number(name: str) -> float:
            try:
                return float(text(name, "0"))
            except ValueError:
                return 0.0

        try:
            state = JobState(text("state", "running"))
        except ValueError:
            state = JobState.FAILED
        return cls(
            id=job_id,
            by=text("by"),
            total=int(number("total")),
            created_at=number("created_at"),
            updated_at=number("updated_at"),
            state=state,
            done=int(number("done")),
            replayed=int(number("replayed")),
            failed=int(number("failed")),
            error=text("error"),
            selection=text("selection", "{}"),
            failures=text("failures", "[]"),
            resumed=int(number("resumed")),
        )

    def seen_at(self, now: float) -> Job:
        """The job as a reader reports it: a running job whose record stopped moving is
        abandoned."""
        if self.state is JobState.RUNNING and now - self.updated_at > STALE_AFTER:
            return replace(self, state=JobState.ABANDONED)
        return self

    def to_json(self) -> dict[str, Any]:
        """The job as the API answers it."""
        return {
            "id": self.id,
            "kind": "replay",
            "state": str(self.state),
            "by": self.by,
            "total": self.total,
            "done": self.done,
            "replayed": self.replayed,
            "failed": self.failed,
            "error": self.error or None,
            "created": format_time(self.created_at),
            "updated": format_time(self.updated_at),
            "selection": orjson.loads(self.selection),
            "failures": orjson.loads(self.failures),
            "resumed": self.resumed,
        }


def create_job(conn: Redis, job: Job, pairs: Sequence[Pair]) -> None:
    """Write a new job's record, its deliveries and its entry among the open jobs, at once."""
    with conn.pipeline(transaction=True) as pipe:
        push_pairs(pipe, job.id, pairs, JOB_TTL)
        pipe.hset(keys.job_key(job.id), mapping=job.to_redis())  # type: ignore[arg-type]
        pipe.expire(keys.job_key(job.id), JOB_TTL)
        pipe.zadd(keys.OPEN_JOBS, {job.id: job.created_at})
        pipe.execute()


def save_job(conn: Redis, job: Job) -> None:
    """Write the job's record (whole) and renew its expiry and its deliveries'; a job that is
    over loses its deliveries and its place among the open jobs."""
    key = keys.job_key(job.id)
    with conn.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping=job.to_redis())  # type: ignore[arg-type]
        pipe.expire(key, JOB_TTL)
        if job.over:
            pipe.delete(keys.job_pairs_key(job.id))
            pipe.zrem(keys.OPEN_JOBS, job.id)
        else:
            pipe.expire(keys.job_pairs_key(job.id), JOB_TTL)
        pipe.execute()


def read_job(conn: Redis, job_id: str) -> Job | None:
    """The job's record as stored (never abandoned), None when unknown or expired."""
    data: dict[bytes, bytes] = conn.hgetall(keys.job_key(job_id))  # type: ignore[assignment]
    return Job.from_redis(job_id, data) if data else None


def load_job(conn: Redis, job_id: str, now: float | None = None) -> Job | None:
    """The job's record as a reader reports it, None when unknown or expired."""
    job = read_job(conn, job_id)
    return job.seen_at(time.time() if now is None else now) if job is not None else None


def open_jobs(conn: Redis, start: int, count: int) -> list[str]:
    """Up to `count` ids of open jobs from rank `start`, oldest first."""
    raw: list[bytes] = conn.zrange(keys.OPEN_JOBS, start, start + count - 1)  # type: ignore[assignment]
    return [member.decode() for member in raw]


def forget_open(conn: Redis, job_id: str) -> None:
    """Drop a job from the open jobs (its record is over or gone)."""
    conn.zrem(keys.OPEN_JOBS, job_id)
