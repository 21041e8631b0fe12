"""Bulk replays as jobs: started by a request, run on an admin process's loop, polled by id.

A job replays its deliveries in chunks (each delivery atomically, through relay.ops) in a worker
thread and records its progress after every chunk, so any admin process answers
GET /api/v1/jobs/{id}. Its deliveries are kept in Redis and the one process running it holds its
lease (relay.ops.deliveries.replay_jobs), so jobs outlive their process:

- every admin app looks for open jobs no process runs at start and then every RESUME_EVERY
  seconds (at most RESUME_SCAN jobs a look), takes them over and finishes them from `done` on,
  logging `replay_job_resumed`; a job whose process died is taken once its lease expires
  (relay.store.job_lease.LEASE_TTL);
- an app that stops gracefully lets the chunk in hand finish, then releases its jobs' leases:
  they stay `running` in Redis and the next look of any admin app (this one restarted, or another)
  resumes them. A task still running after STOP_GRACE is cancelled without writing anything, and
  its lease expires as a crashed process's would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis
import structlog
from aiohttp import web

from relay.admin.state import REDIS, SETTINGS
from relay.ops import deliveries as ops
from relay.store.job_lease import JobLease
from relay.store.jobs import Job

#: How often an admin app looks for jobs to resume (seconds); tests set JOB_RESUME_EVERY.
RESUME_EVERY = 30.0
#: Open jobs looked at per look (the next look goes on from there), so a look stays short.
RESUME_SCAN = 50
#: How long a stopping app waits for its jobs to finish their chunk in hand (seconds).
STOP_GRACE = 10.0

#: The admin app's running job tasks.
JOB_TASKS: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("admin_job_tasks")
#: Set when the app stops: jobs release their lease after their chunk, the resumer stops.
JOB_STOPPING = web.AppKey("admin_job_stopping", asyncio.Event)
#: The resumer's interval when set before the app starts (RESUME_EVERY otherwise).
JOB_RESUME_EVERY = web.AppKey("admin_job_resume_every", float)

log = structlog.get_logger("relay.admin")


async def _run(app: web.Application, job: Job, lease: JobLease) -> None:
    conn = app[REDIS]
    stopping = app[JOB_STOPPING]
    retention = app[SETTINGS].retention
    try:
        while not job.over:
            if stopping.is_set():
                await asyncio.to_thread(lease.release)
                log.info("replay_job_released", job=job.id, done=job.done, total=job.total)
                return
            step = await asyncio.to_thread(
                ops.replay_job_chunk, conn, job, lease, retention=retention
            )
            if step is None:
                log.warning("replay_job_lease_lost", job=job.id, done=job.done, total=job.total)
                return
            job = step
    except redis.RedisError as exc:
        with contextlib.suppress(redis.RedisError):
            job = await asyncio.to_thread(
                ops.fail_replay_job, conn, job, f"Redis: {type(exc).__name__}"
            )
    with contextlib.suppress(redis.RedisError):
        await asyncio.to_thread(lease.release)
    log.info(
        "replay_job_finished",
        job=job.id,
        by=job.by,
        state=str(job.state),
        total=job.total,
        replayed=job.replayed,
        failed=job.failed,
        resumed=job.resumed,
    )


def _spawn(app: web.Application, job: Job, lease: JobLease) -> None:
    task = asyncio.create_task(_run(app, job, lease), name=job.id)
    tasks = app[JOB_TASKS]
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def start_job(
    app: web.Application,
    conn: redis.Redis,
    pairs: Sequence[ops.Pair],
    *,
    by: str,
    selection: dict[str, Any],
) -> Job:
    """Record a new job and start running it; the job as recorded."""
    job, lease = await asyncio.to_thread(
        ops.begin_replay_job, conn, list(pairs), by=by, selection=selection
    )
    _spawn(app, job, lease)
    return job


async def resume_jobs(app: web.Application, cursor: int = 0) -> int:
    """One look for jobs to resume: take over those no process runs and start them; the rank to
    look from next time."""
    claimed, cursor = await asyncio.to_thread(
        ops.claim_open_jobs, app[REDIS], cursor, RESUME_SCAN, time.time()
    )
    for job, lease in claimed:
        log.info(
            "replay_job_resumed",
            job=job.id,
            by=job.by,
            done=job.done,
            total=job.total,
            resumed=job.resumed,
        )
        _spawn(app, job, lease)
    return cursor


async def _resumer(app: web.Application) -> None:
    stopping = app[JOB_STOPPING]
    every = app.get(JOB_RESUME_EVERY, RESUME_EVERY)
    cursor = 0
    while not stopping.is_set():
        try:
            cursor = await resume_jobs(app, cursor)
        except redis.RedisError as exc:
            log.warning("replay_job_resume_failed", error=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), every)


async def job_tasks(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the running jobs and the resumer; when the app stops, the jobs release
    their leases after their chunk in hand (see the module's docstring)."""
    app[JOB_TASKS] = set()
    app[JOB_STOPPING] = stopping = asyncio.Event()
    resumer = asyncio.create_task(_resumer(app), name="relay-job-resumer")
    yield
    stopping.set()
    await asyncio.gather(resumer, return_exceptions=True)
    tasks: set[asyncio.Task[None]] = app[JOB_TASKS]
    running = list(tasks)
    if not running:
        return
    _, late = await asyncio.wait(running, timeout=STOP_GRACE)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
