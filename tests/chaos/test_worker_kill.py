"""Workers SIGKILLed at random moments during a steady stream of 2,000 events lose nothing."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from tests.chaos.harness import (
    ORDER_AND_USER_EVENTS,
    ORDER_AND_USER_ROUTES,
    TWO_TARGETS,
    Chaos,
    ChaosLog,
    ChaosTargets,
    RelayStack,
    Scenario,
    assert_nothing_lost,
    run_scenario,
    sleep_unless,
)
from tests.support.redis_server import RedisServer

#: The scenario's own drain limit fails first, with what is missing; this catches a hang past it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SCENARIO = Scenario(
    name="workers SIGKILLed",
    targets=TWO_TARGETS,
    routes=ORDER_AND_USER_ROUTES,
    event_types=ORDER_AND_USER_EVENTS,
    count=2000,
    rate=125.0,
    drain_timeout=120.0,
)


def kill_workers(stack: RelayStack, targets: ChaosTargets, rng: random.Random) -> Chaos:
    """Every 1-3 s during the stream, SIGKILL one worker process (the supervisor restarts it)."""

    async def chaos(done: asyncio.Event, log: ChaosLog) -> None:
        if await sleep_unless(done, 1.5):
            return
        for _ in range(50):
            pid = await asyncio.to_thread(stack.kill_one_worker, rng)
            log.note(f"SIGKILL worker process {pid}" if pid else "no worker process to kill")
            if await sleep_unless(done, rng.uniform(1.0, 3.0)):
                return

    return chaos


def test_workers_killed_at_random_lose_nothing(
    tmp_path: Path, chaos_redis: RedisServer, chaos_seed: int
) -> None:
    outcome = run_scenario(SCENARIO, chaos_seed, tmp_path, chaos_redis, kill_workers)
    assert_nothing_lost(outcome)
    assert len(outcome.figures.chaos) >= 3  # the chaos did happen during the stream
