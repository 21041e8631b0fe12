"""Bulk replays as jobs: started by a request, run on the admin process's loop, polled by id.

A job replays its deliveries in chunks (each delivery atomically, through relay.ops) in a worker
thread, and writes its progress to its record (relay.store.jobs) after every chunk, so any admin
process can answer GET /api/v1/jobs/{id}. Jobs still running when the admin app stops are
cancelled between chunks and recorded as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

import orjson
import redis
import structlog
from aiohttp import web

from relay.ops import deliveries as ops
from relay.store.jobs import Job, JobState, save_job

#: Deliveries replayed between two progress writes.
CHUNK = 100
#: Failed results kept in a job's record (the rest are only counted).
FAILURES_KEPT = 20

#: The admin app's running job tasks.
JOB_TASKS: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("admin_job_tasks")

log = structlog.get_logger("relay.admin")


def new_job_id() -> str:
    """A fresh, unguessable job id."""
    return "job_" + secrets.token_hex(10)


async def _run(conn: redis.Redis, job: Job, pairs: Sequence[ops.Pair], retention: float) -> None:
    failures: list[dict[str, Any]] = []
    try:
        for start in range(0, len(pairs), CHUNK):
            chunk = pairs[start : start + CHUNK]
            results = await asyncio.to_thread(ops.replay_pairs, conn, chunk, retention=retention)
            ok = sum(r.ok for r in results)
            room = FAILURES_KEPT - len(failures)
            failures += [r.to_json() for r in results if not r.ok][: max(0, room)]
            job = replace(
                job,
                done=job.done + len(chunk),
                replayed=job.replayed + ok,
                failed=job.failed + len(chunk) - ok,
                updated_at=time.time(),
                failures=orjson.dumps(failures).decode(),
            )
            await asyncio.to_thread(save_job, conn, job)
        job = replace(job, state=JobState.FINISHED, updated_at=time.time())
    except asyncio.CancelledError:
        job = replace(job, state=JobState.FAILED, error="the admin listener stopped")
        with contextlib.suppress(redis.RedisError):
            save_job(conn, replace(job, updated_at=time.time()))
        raise
    except redis.RedisError as exc:
        job = replace(job, state=JobState.FAILED, error=f"Redis: {type(exc).__name__}")
    with contextlib.suppress(redis.RedisError):
        await asyncio.to_thread(save_job, conn, replace(job, updated_at=time.time()))
    log.info(
        "replay_job_finished",
        job=job.id,
        by=job.by,
        state=str(job.state),
        total=job.total,
        replayed=job.replayed,
        failed=job.failed,
    )


async def start_job(
    app: web.Application,
    conn: redis.Redis,
    pairs: Sequence[ops.Pair],
    *,
    by: str,
    selection: dict[str, Any],
    retention: float,
) -> Job:
    """Record a new job and start running it; the job as recorded."""
    now = time.time()
    job = Job(
        id=new_job_id(),
        by=by,
        total=len(pairs),
        created_at=now,
        updated_at=now,
        selection=orjson.dumps(selection).decode(),
    )
    await asyncio.to_thread(save_job, conn, job)
    task = asyncio.create_task(_run(conn, job, list(pairs), retention), name=job.id)
    tasks = app[JOB_TASKS]
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return job


async def job_tasks(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the set of running jobs, cancelled when the app stops."""
    app[JOB_TASKS] = set()
    yield
    tasks: set[asyncio.Task[None]] = app[JOB_TASKS]
    running = list(tasks)
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
