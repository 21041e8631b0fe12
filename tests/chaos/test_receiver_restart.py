"""The receiver SIGKILLed and restarted during the stream: what it acknowledged is delivered."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.harness import (
    ORDER_AND_USER_EVENTS,
    ORDER_AND_USER_ROUTES,
    TWO_TARGETS,
    RelayStack,
    Scenario,
    assert_nothing_lost,
    kill_and_restart,
    run_scenario,
)
from tests.support.redis_server import RedisServer

#: The scenario's own drain limit fails first, with what is missing; this catches a hang past it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SCENARIO = Scenario(
    name="receiver SIGKILLed and restarted",
    targets=TWO_TARGETS,
    routes=ORDER_AND_USER_ROUTES,
    event_types=ORDER_AND_USER_EVENTS,
    count=600,
    rate=50.0,
    drain_timeout=60.0,
)

#: Three times during the 12 s stream: SIGKILL `relay serve`, start it again 0.3-1.0 s later.
#: The third kill comes at most 3 x 2.0 + 2 x 1.0 s plus two start-ups after the stream began, so
#: it always falls inside the stream (with 1.5-3.0 s between kills, some seeds left it out).
restart_receiver = kill_and_restart(
    "relay serve",
    times=3,
    between=(1.0, 2.0),
    down=(0.3, 1.0),
    kill=RelayStack.kill_receiver,
    start=RelayStack.start_receiver,
    started_note="relay serve started again on the same port",
)


def test_receiver_killed_and_restarted_loses_nothing_acknowledged(
    tmp_path: Path, chaos_redis: RedisServer, chaos_seed: int
) -> None:
    outcome = run_scenario(SCENARIO, chaos_seed, tmp_path, chaos_redis, restart_receiver)
    assert_nothing_lost(outcome)
    assert sum(1 for c in outcome.figures.chaos if "SIGKILL" in c) == 3
    assert outcome.figures.provider_retries  # the provider did meet a dead receiver
