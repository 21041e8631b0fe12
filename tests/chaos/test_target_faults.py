"""Targets that flap, hang past the timeout, refuse connections, or go down and come back."""

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
    target_outages,
)
from tests.support.redis_server import RedisServer

#: The scenario's own drain limit fails first, with what is missing; this catches a hang past it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SCENARIO = Scenario(
    name="targets flap (30% 500), hang past the timeout, refuse, go down and come back",
    targets=FAULTY_TARGETS,
    routes=FAULTY_ROUTES,
    event_types=("order.paid", "user.created"),
    count=600,
    rate=50.0,
    drain_timeout=120.0,
)


def target_weather(stack: RelayStack, targets: ChaosTargets, rng: random.Random) -> Chaos:
    """`refuses` flickers, `outage` is down from 2 s to 12 s; flaps and hangs are per request."""

    async def chaos(done: asyncio.Event, log: ChaosLog) -> None:
        await target_outages(targets, done, log, rng, flicker="refuses", outage="outage")

    return chaos


def test_faulty_targets_get_every_acknowledged_event(
    tmp_path: Path, chaos_redis: RedisServer, chaos_seed: int
) -> None:
    outcome = run_scenario(SCENARIO, chaos_seed, tmp_path, chaos_redis, target_weather)
    assert_nothing_lost(outcome)
    treatments = {t.name: t.treatments for t in outcome.figures.targets}
    # Each fault really happened.
    assert treatments["flappy"].get("500", 0) > 0
    assert treatments["hangs"].get("hang", 0) > 0
    assert any("outage down" in c for c in outcome.figures.chaos)
    assert any("refuses down" in c for c in outcome.figures.chaos)
