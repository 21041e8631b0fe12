"""Bulk replay jobs outlive their process: their deliveries are kept in Redis, and an admin app
takes over a job no process runs (at start, then every look) and finishes it from `done` on.

A process that "dies" is simulated by what it leaves in Redis: a running record that stopped
moving, its deliveries, no lease (expired). Against a real redis-server; the admin apps are real
(aiohttp's test client), and nothing waits on a timing threshold: the tests poll for the outcome.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from relay.admin.api.jobs import JOB_RESUME_EVERY, JOB_STOPPING, resume_jobs
from relay.ops import deliveries as ops
from relay.ops.deliveries import replay_jobs
from relay.store import keys
from relay.store.job_lease import JobLease
from relay.store.jobs import Job, JobState, create_job, read_job, save_job
from relay.store.records import TargetStat
from tests.support.admin import READ, WRITE, admin_app
from tests.support.seed_states import NOW, seed_dead
from tests.test_admin_api import Client, answer

pytestmark = pytest.mark.needs_redis_server

LONG_AGO = 3600.0  # far past STALE_AFTER: the record of a job whose process died


async def poll_job(client: Client, location: str) -> Any:
    """The job once it is over (test_admin_api's poll stops at `abandoned`, which a job left by a
    dead process shows until it is taken over)."""
    for _ in range(400):
        job = (await answer(await client.get(location, headers=READ), 200))["job"]
        if job["state"] in ("finished", "failed"):
            return job
        await asyncio.sleep(0.025)
    raise AssertionError(f"job not over: {job}")


def dead_pairs(conn: redis.Redis, n: int) -> list[ops.Pair]:
    return [(seed_dead(conn, "crm", at=NOW - i), "crm") for i in range(n)]


def orphan_job(
    conn: redis.Redis,
    pairs: Sequence[ops.Pair],
    *,
    done: int = 0,
    replayed: int = 0,
    state: JobState = JobState.RUNNING,
    keep_pairs: bool = True,
) -> Job:
    """The record a process left when it died mid-job: stale, unleased, with its deliveries."""
    at = time.time() - LONG_AGO
    job = Job(
        id="job_" + secrets.token_hex(10),
        by="alice",
        total=len(pairs),
        created_at=at,
        updated_at=at,
        state=state,
        done=done,
        replayed=replayed,
    )
    create_job(conn, job, pairs)
    if not keep_pairs:
        conn.delete(keys.job_pairs_key(job.id))
    return job


def replays_counted(conn: redis.Redis) -> int:
    """How many replays of crm deliveries were ever written (one per delivery put back)."""
    return int(conn.hget(keys.target_stats_key("crm"), TargetStat.REPLAYED) or 0)


def states(conn: redis.Redis, pairs: Sequence[ops.Pair]) -> set[bytes | None]:
    return {conn.hget(keys.event_key(e), f"s:{t}") for e, t in pairs}


def logged(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == event]


def assert_cleaned_up(conn: redis.Redis, job_id: str) -> None:
    """A job that is over keeps only its record: no deliveries, no lease, not open."""
    assert not conn.exists(keys.job_pairs_key(job_id))
    assert not conn.exists(keys.job_lock_key(job_id))
    assert conn.zscore(keys.OPEN_JOBS, job_id) is None


async def test_a_job_whose_process_died_is_finished_by_a_fresh_admin_app(
    aiohttp_client: Any, redis_client: redis.Redis, redis_url: str
) -> None:
    pairs = dead_pairs(redis_client, 250)
    # The process recorded 100 done, then replayed the next chunk and died before recording it
    # (150 replayed in Redis, 100 in the record).
    job = orphan_job(redis_client, pairs, done=100, replayed=100)
    ops.replay_pairs(redis_client, pairs[:150])
    assert replays_counted(redis_client) == 150

    with capture_logs() as logs:
        client = await aiohttp_client(admin_app(redis_url))
        polled = await poll_job(client, f"/api/v1/jobs/{job.id}")

    assert (polled["state"], polled["done"], polled["total"], polled["resumed"]) == (
        "finished",
        250,
        250,
        1,
    )
    # Each delivery was put back exactly once: the redone chunk's first 50 were no longer dead,
    # so they came back `not_dead` (counted as failed) rather than replayed a second time.
    assert replays_counted(redis_client) == 250
    assert states(redis_client, pairs) == {b"pending"}
    assert redis_client.zcard(keys.DEAD) == 0
    assert (polled["replayed"], polled["failed"]) == (200, 50)
    assert {f["outcome"] for f in polled["failures"]} == {"not_dead"}
    assert_cleaned_up(redis_client, job.id)
    [resumed] = logged(logs, "replay_job_resumed")
    assert (resumed["job"], resumed["by"], resumed["done"], resumed["total"]) == (
        job.id,
        "alice",
        100,
        250,
    )
    [finished] = logged(logs, "replay_job_finished")
    assert (finished["job"], finished["state"], finished["resumed"]) == (job.id, "finished", 1)


async def test_two_admin_apps_racing_resume_a_job_once(
    aiohttp_client: Any, redis_client: redis.Redis, redis_url: str
) -> None:
    pairs = dead_pairs(redis_client, 230)
    job = orphan_job(redis_client, pairs)
    with capture_logs() as logs:
        first, second = await asyncio.gather(
            aiohttp_client(admin_app(redis_url)), aiohttp_client(admin_app(redis_url))
        )
        # Both apps look at start; make each look again while the job may still run.
        await asyncio.gather(resume_jobs(first.app), resume_jobs(second.app))
        polled = await poll_job(first, f"/api/v1/jobs/{job.id}")
    assert (polled["state"], polled["done"], polled["replayed"], polled["failed"]) == (
        "finished",
        230,
        230,
        0,
    )
    assert polled["resumed"] == 1
    assert len(logged(logs, "replay_job_resumed")) == 1
    assert replays_counted(redis_client) == 230
    assert_cleaned_up(redis_client, job.id)


def test_only_one_claim_of_a_job_wins(redis_client: redis.Redis) -> None:
    pairs = dead_pairs(redis_client, 3)
    job = orphan_job(redis_client, pairs)
    other = redis.Redis(connection_pool=redis_client.connection_pool)
    claims = [replay_jobs.claim_job(c, job.id, time.time()) for c in (redis_client, other)]
    assert claims[0] is not None
    assert claims[1] is None
    claimed, lease = claims[0]
    assert claimed.resumed == 1
    assert redis_client.get(keys.job_lock_key(job.id)) == lease.token.encode()
    # While it is leased, the next look leaves it alone too.
    assert replay_jobs.claim_open_jobs(redis_client, 0, 10, time.time()) == ([], 0)


async def test_a_finished_job_is_never_resumed(
    aiohttp_client: Any, redis_client: redis.Redis, redis_url: str
) -> None:
    pairs = dead_pairs(redis_client, 5)
    job = orphan_job(redis_client, pairs, state=JobState.FINISHED, done=5, replayed=5)
    # Left among the open jobs with its deliveries (as if its last write had been cut short).
    assert redis_client.zscore(keys.OPEN_JOBS, job.id) is not None
    with capture_logs() as logs:
        client = await aiohttp_client(admin_app(redis_url))
        await resume_jobs(client.app)
    assert logged(logs, "replay_job_resumed") == []
    assert read_job(redis_client, job.id) == job
    assert replays_counted(redis_client) == 0
    assert states(redis_client, pairs) == {b"dead"}
    assert redis_client.zscore(keys.OPEN_JOBS, job.id) is None  # dropped by the look


async def test_a_job_whose_deliveries_expired_fails_with_a_clear_error(
    aiohttp_client: Any, redis_client: redis.Redis, redis_url: str
) -> None:
    pairs = dead_pairs(redis_client, 120)
    job = orphan_job(redis_client, pairs, done=100, replayed=100, keep_pairs=False)
    client = await aiohttp_client(admin_app(redis_url))
    polled = await poll_job(client, f"/api/v1/jobs/{job.id}")
    assert (polled["state"], polled["done"], polled["resumed"]) == ("failed", 100, 1)
    assert "no longer kept" in polled["error"]
    assert "20 of 120 not replayed" in polled["error"]
    assert replays_counted(redis_client) == 0
    assert_cleaned_up(redis_client, job.id)


def test_a_job_without_its_deliveries_is_left_alone_while_its_record_moves(
    redis_client: redis.Redis,
) -> None:
    # A version that kept no list (and took no lease) may still be running it.
    pairs = dead_pairs(redis_client, 3)
    job = orphan_job(redis_client, pairs, keep_pairs=False)
    save_job(redis_client, replace(job, updated_at=time.time()))
    assert replay_jobs.claim_job(redis_client, job.id, time.time()) is None
    assert not redis_client.exists(keys.job_lock_key(job.id))


def test_a_runner_that_lost_its_lease_records_nothing(redis_client: redis.Redis) -> None:
    pairs = dead_pairs(redis_client, 3)
    job, lease = replay_jobs.begin_replay_job(redis_client, pairs, by="alice", selection={})
    redis_client.set(keys.job_lock_key(job.id), "someone-else")  # its lease expired, taken over
    assert replay_jobs.replay_job_chunk(redis_client, job, lease) is None
    assert read_job(redis_client, job.id) == job
    assert replays_counted(redis_client) == 0
    # Nor does it free the new holder's lease.
    lease.release()
    assert redis_client.get(keys.job_lock_key(job.id)) == b"someone-else"


async def test_a_graceful_stop_leaves_the_job_for_the_next_app(
    aiohttp_client: Any,
    redis_client: redis.Redis,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pairs = dead_pairs(redis_client, 150)
    entered, go = threading.Event(), threading.Event()
    real = replay_jobs.replay_pairs

    def first_chunk_waits(*args: Any, **kwargs: Any) -> list[ops.ReplayResult]:
        if not entered.is_set():
            entered.set()
            assert go.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(replay_jobs, "replay_pairs", first_chunk_waits)
    client = await aiohttp_client(admin_app(redis_url))
    body = {"filter": {"target": "crm"}}
    response = await client.post("/api/v1/dead-letters/replay", headers=WRITE, json=body)
    job_id = (await answer(response, 202))["job"]["id"]
    assert await asyncio.to_thread(entered.wait, 10)

    with capture_logs() as logs:
        closing = asyncio.create_task(client.close())
        stopping = client.app[JOB_STOPPING]
        for _ in range(1000):
            if stopping.is_set():
                break
            await asyncio.sleep(0.01)
        assert stopping.is_set()
        go.set()  # the chunk in hand finishes and is recorded; then the lease is let go
        await closing

    released = read_job(redis_client, job_id)
    assert released is not None
    assert (released.state, released.done, released.resumed) == (JobState.RUNNING, 100, 0)
    assert not redis_client.exists(keys.job_lock_key(job_id))
    assert redis_client.llen(keys.job_pairs_key(job_id)) == 150
    [line] = logged(logs, "replay_job_released")
    assert (line["job"], line["done"], line["total"]) == (job_id, 100, 150)

    # Released, it need not go stale first: the next app takes it over at its start.
    client = await aiohttp_client(admin_app(redis_url))
    polled = await poll_job(client, f"/api/v1/jobs/{job_id}")
    assert (polled["state"], polled["done"], polled["replayed"], polled["resumed"]) == (
        "finished",
        150,
        150,
        1,
    )
    assert replays_counted(redis_client) == 150
    assert states(redis_client, pairs) == {b"pending"}
    assert_cleaned_up(redis_client, job_id)


async def test_a_running_app_looks_again_periodically(
    aiohttp_client: Any, redis_client: redis.Redis, redis_url: str
) -> None:
    app = admin_app(redis_url)
    app[JOB_RESUME_EVERY] = 0.01
    client = await aiohttp_client(app)
    # The job's process dies after this app's first look.
    pairs = dead_pairs(redis_client, 10)
    job = orphan_job(redis_client, pairs)
    polled = await poll_job(client, f"/api/v1/jobs/{job.id}")
    assert (polled["state"], polled["replayed"], polled["resumed"]) == ("finished", 10, 1)


def test_a_claimed_job_reads_back_with_its_resumed_count_and_lease(
    redis_client: redis.Redis,
) -> None:
    pairs = dead_pairs(redis_client, 2)
    job = orphan_job(redis_client, pairs)
    claimed = replay_jobs.claim_job(redis_client, job.id, time.time())
    assert claimed is not None
    again = read_job(redis_client, job.id)
    assert again == claimed[0]
    assert again is not None
    assert (again.resumed, again.state, again.to_json()["resumed"]) == (1, JobState.RUNNING, 1)
    assert JobLease(redis_client, job.id, token=claimed[1].token).extend()
    assert not JobLease(redis_client, job.id).extend()  # someone else's token
