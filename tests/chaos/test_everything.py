"""All the faults at once: workers killed, receiver and Redis restarted, targets misbehaving."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from tests.chaos.harness import (
    FAULTY_ROUTES,
    FAULTY_TARGETS,
    Chaos,
    ChaosLog,
    ChaosTargets,
    RelayStack,
    Scenario,
    assert_nothing_lost,
    run_scenario,
    sleep_unless,
    target_outages,
)
from tests.support.redis_server import RedisServer

#: The scenario's own drain limit fails first, with what is missing; this catches a hang past it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SCENARIO = Scenario(
    name="everything at once",
    targets=FAULTY_TARGETS,
    routes=FAULTY_ROUTES,
    event_types=("order.paid", "user.created"),
    count=800,
    rate=50.0,
    drain_timeout=180.0,
)


def everything(stack: RelayStack, targets: ChaosTargets, rng: random.Random) -> Chaos:
    """Target faults throughout; workers killed every 2-4 s; receiver at ~4 s; Redis at ~9 s."""

    async def kill_workers(done: asyncio.Event, log: ChaosLog) -> None:
        for _ in range(30):
            if await sleep_unless(done, rng.uniform(2.0, 4.0)):
                return
            pid = await asyncio.to_thread(stack.kill_one_worker, rng)
            log.note(f"SIGKILL worker process {pid}" if pid else "no worker process to kill")

    async def restart_receiver(done: asyncio.Event, log: ChaosLog) -> None:
        await asyncio.sleep(rng.uniform(3.0, 5.0))
        await asyncio.to_thread(stack.kill_receiver)
        log.note("SIGKILL relay serve")
        await asyncio.sleep(rng.uniform(0.3, 1.5))
        await asyncio.to_thread(stack.start_receiver)
        log.note("relay serve started again on the same port")

    async def restart_redis(done: asyncio.Event, log: ChaosLog) -> None:
        await asyncio.sleep(rng.uniform(8.0, 10.0))
        await asyncio.to_thread(stack.kill_redis)
        log.note("SIGKILL redis-server")
        await asyncio.sleep(rng.uniform(1.0, 3.0))
        await asyncio.to_thread(stack.start_redis)
        log.note("redis-server started again (AOF replayed)")

    async def chaos(done: asyncio.Event, log: ChaosLog) -> None:
        await asyncio.gather(
            target_outages(targets, done, log, rng, flicker="refuses", outage="outage"),
            kill_workers(done, log),
            restart_receiver(done, log),
            restart_redis(done, log),
        )

    return chaos


def test_everything_at_once_loses_nothing_acknowledged(
    tmp_path: Path, chaos_redis: RedisServer, chaos_seed: int
) -> None:
    outcome = run_scenario(SCENARIO, chaos_seed, tmp_path, chaos_redis, everything)
    assert_nothing_lost(outcome)
    notes = outcome.figures.chaos
    assert any("SIGKILL worker" in c for c in notes)
    assert any("SIGKILL relay serve" in c for c in notes)
    assert any("SIGKILL redis-server" in c for c in notes)
