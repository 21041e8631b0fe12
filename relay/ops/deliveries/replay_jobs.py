"""Bulk replay jobs: begun with their deliveries kept, run a chunk at a time, taken over when
their process stopped.

The management API (relay.admin.api.jobs) drives these steps on its event loop, each in a worker
thread; everything a job needs to go on is in Redis (relay.store.jobs, job_pairs, job_lease), so
any admin process on any host can finish a job another one started. The lease makes one process
at a time run a job: the runner extends it before a chunk and again before recording the chunk,
and stops without writing when it is gone.

Replaying a delivery twice is harmless, which is what makes resuming from the last recorded
`done` safe: a replay puts back only a delivery that is dead or gone when read
(relay.ops.deliveries.replay.refusal, the same rule for the batched replay); one already replayed
is pending, retrying or delivered, and comes back `not_dead` without a second delivery. So a
resumed job may redo the one chunk that was in flight when its process stopped (replayed, not yet
recorded), and those deliveries count as failed ("not dead") in its figures. A delivery that was
replayed, went dead again and only then was redone would be replayed a second time, as a new bulk
replay would replay it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson
from redis import Redis

from relay.core import constants
from relay.ops.deliveries.bulk import Pair, replay_pairs
from relay.store.job_lease import LEASE_TTL, JobLease
from relay.store.job_pairs import pairs_kept, read_pairs
from relay.store.jobs import (
    Job,
    JobState,
    create_job,
    forget_open,
    open_jobs,
    read_job,
    save_job,
)

__all__ = [
    "CHUNK",
    "FAILURES_KEPT",
    "begin_replay_job",
    "claim_job",
    "claim_open_jobs",
    "fail_replay_job",
    "replay_job_chunk",
]

#: Deliveries replayed between two progress writes (and redone at most after a crash).
CHUNK = 100
#: Failed results kept in a job's record (the rest are only counted).
FAILURES_KEPT = 20


def _new_job_id() -> str:
    """A fresh, unguessable job id (relay.admin.api's routes match its shape)."""
    return "job_" + secrets.token_hex(10)


def begin_replay_job(
    conn: Redis, pairs: Sequence[Pair], *, by: str, selection: dict[str, Any]
) -> tuple[Job, JobLease]:
    """Record a new job with its deliveries, leased to the caller; the job and its lease."""
    now = time.time()
    job = Job(
        id=_new_job_id(),
        by=by,
        total=len(pairs),
        created_at=now,
        updated_at=now,
        selection=orjson.dumps(selection).decode(),
    )
    lease = JobLease(conn, job.id)
    # Leased before it is recorded, so no admin process looking for open jobs takes it over.
    lease.acquire()
    create_job(conn, job, pairs)
    return job, lease


def replay_job_chunk(
    conn: Redis,
    job: Job,
    lease: JobLease,
    *,
    retention: float = float(constants.DEFAULT_RETENTION),
) -> Job | None:
    """Replay the job's next chunk and record it: the job as recorded (over after its last
    chunk), or None when the lease is no longer the caller's (nothing recorded: the new holder
    goes on)."""
    if not lease.extend():
        return None
    if job.done >= job.total:
        return _record(conn, replace(job, state=JobState.FINISHED))
    pairs = read_pairs(conn, job.id, job.done, CHUNK)
    if not pairs:  # the list expired (or is shorter than the record says)
        left = job.total - job.done
        error = (
            f"its deliveries were no longer kept in Redis (they expire a day after the job's last "
            f"progress): {left} of {job.total} not replayed; replay them again"
        )
        return _record(conn, replace(job, state=JobState.FAILED, error=error))
    results = replay_pairs(conn, pairs, retention=retention)
    ok = sum(r.ok for r in results)
    failures: list[Any] = orjson.loads(job.failures)
    room = max(0, FAILURES_KEPT - len(failures))
    failures += [r.to_json() for r in results if not r.ok][:room]
    done = job.done + len(pairs)
    job = replace(
        job,
        state=JobState.FINISHED if done >= job.total else JobState.RUNNING,
        done=done,
        replayed=job.replayed + ok,
        failed=job.failed + len(pairs) - ok,
        failures=orjson.dumps(failures).decode(),
    )
    if not lease.extend():
        return None
    return _record(conn, job)


def fail_replay_job(conn: Redis, job: Job, error: str) -> Job:
    """Record the job as failed with `error` (it will not be resumed)."""
    return _record(conn, replace(job, state=JobState.FAILED, error=error))


def claim_open_jobs(
    conn: Redis, cursor: int, count: int, now: float, ttl: float = LEASE_TTL
) -> tuple[list[tuple[Job, JobLease]], int]:
    """Look at up to `count` open jobs from rank `cursor` and take over those no process runs:
    the jobs taken with their leases, and the rank to look from next time (0: start over)."""
    ids = open_jobs(conn, cursor, count)
    claimed = [c for job_id in ids if (c := claim_job(conn, job_id, now, ttl)) is not None]
    return claimed, (cursor + len(ids) if len(ids) == count else 0)


def claim_job(
    conn: Redis, job_id: str, now: float, ttl: float = LEASE_TTL
) -> tuple[Job, JobLease] | None:
    """Take over an open job no process runs, counting it as resumed: the job and its lease,
    or None to leave it (running elsewhere, taken by another process first, or over)."""
    job = read_job(conn, job_id)
    if job is None or job.over:
        forget_open(conn, job_id)
        return None
    if not pairs_kept(conn, job_id) and job.seen_at(now).state is not JobState.ABANDONED:
        # No list: it expired, or a version that kept none runs the job (and holds no lease).
        # Taken over (to be failed) only once its record stopped moving.
        return None
    lease = JobLease(conn, job_id, ttl)
    if not lease.acquire():
        return None  # its process runs it, or another admin process took it first
    job = read_job(conn, job_id)  # again, under the lease: it may have moved or ended meanwhile
    if job is None or job.over:
        lease.release()
        forget_open(conn, job_id)
        return None
    return _record(conn, replace(job, resumed=job.resumed + 1)), lease


def _record(conn: Redis, job: Job) -> Job:
    job = replace(job, updated_at=time.time())
    save_job(conn, job)
    return job
