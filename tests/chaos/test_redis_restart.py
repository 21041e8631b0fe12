"""Redis SIGKILLed and started again (AOF, appendfsync always) during the stream loses nothing.

The source has no spool: while Redis is down the receiver answers 503 and the provider retries, as
DigitalChalk and Learn365 do (the spool, for call-once sources, has its own tests in
tests/test_spool.py).
"""

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
    log_dir,
    run_scenario,
)
from tests.support.redis_server import RedisServer

#: The scenario's own drain limit fails first, with what is missing; this catches a hang past it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SCENARIO = Scenario(
    name="Redis SIGKILLed and restarted (no spool: 503 and provider retries)",
    targets=TWO_TARGETS,
    routes=ORDER_AND_USER_ROUTES,
    event_types=ORDER_AND_USER_EVENTS,
    count=600,
    rate=50.0,
    drain_timeout=150.0,
)

#: Twice during the stream: SIGKILL redis-server, leave it down 1-3 s, start it again.
restart_redis = kill_and_restart(
    "redis-server",
    times=2,
    between=(2.0, 3.5),
    down=(1.0, 3.0),
    kill=RelayStack.kill_redis,
    start=RelayStack.start_redis,
    started_note="redis-server started again (AOF replayed)",
)


def test_redis_killed_and_restarted_loses_nothing_acknowledged(
    tmp_path: Path, chaos_redis: RedisServer, chaos_seed: int
) -> None:
    outcome = run_scenario(SCENARIO, chaos_seed, tmp_path, chaos_redis, restart_redis)
    assert_nothing_lost(outcome)
    assert sum(1 for c in outcome.figures.chaos if "SIGKILL" in c) == 2
    # The outage was seen: by the provider (503s, refused connections), or only by the receiver,
    # whose intake sends a batch that did not land again until its deadline (3 s), which can
    # outlast an outage of 1-3 s.
    logs = log_dir(SCENARIO.name).glob("serve-*.log")
    seen_by_receiver = any("redis_unavailable" in log.read_text(errors="replace") for log in logs)
    assert outcome.figures.provider_retries or seen_by_receiver
