"""Issue 14's breaker goal, scaled down: a target down 60 s at 20 events/s behind
`breaker = { failures = 20, probe = "5s" }` gets at most one probe per interval while the breaker
is open, loses no event, uses no attempt of a held delivery, and receives its whole backlog on
its own once it is back. bench/breaker.py runs the same scenario at full scale (10 minutes).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.breaker_outage import Outage, publish, run_outage
from tests.support.redis_server import RedisServer

#: The scenario's own drain limit fails first, with what is missing; this catches a hang past it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

OUTAGE = Outage(rate=20.0, before=5.0, down=60.0, after=10.0, failures=20, probe=5.0)


def test_a_target_down_for_a_minute_gets_one_probe_per_interval_and_its_whole_backlog(
    tmp_path: Path, chaos_redis: RedisServer
) -> None:
    figures = run_outage(OUTAGE, tmp_path, chaos_redis)
    publish(figures)
    report = figures.table()
    # Loses no event: every event sent was acknowledged, and every acknowledged one delivered.
    assert figures.acknowledged == figures.sent == OUTAGE.count, report
    assert figures.lost == 0, report
    # Opened once, soon after the outage began (20 failures at 20/s), closed once, soon after
    # the target came back (the first probe after it), with one log line each.
    assert len(figures.opened) == len(figures.closed) == 1, report
    assert figures.opened[0] - figures.down_at < 10.0, report
    assert 0 < figures.closed[0] - figures.up_at <= OUTAGE.probe + 2.0, report
    assert (figures.opened_lines, figures.closed_lines) == (1, 1), report
    # At most one probe per interval while open, across both worker processes: the interval
    # is a Redis key's PX expiry, so consecutive probes are at least about `probe` apart.
    assert 0 < figures.requests_while_open <= figures.probes_allowed, report
    assert all(gap >= OUTAGE.probe - 0.25 for gap in figures.probe_gaps), report
    # No attempt used while open: the events held by the open breaker (about 60 s x 20/s) all
    # went out by their first attempt.
    assert figures.held >= OUTAGE.rate * OUTAGE.down * 0.8, report
    assert figures.held_first_attempt == figures.held, report
    # Every request the target saw is an attempt the relay recorded, and no more.
    assert figures.attempts_recorded == figures.requests == figures.attempts_counter, report
    # Failed attempts: the ones that opened it (and any under way then), and the failed probes.
    assert figures.failed_requests <= OUTAGE.failures + 5 + figures.requests_while_open, report
