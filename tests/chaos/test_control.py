"""Delivery control holds through worker SIGKILLs, failing attempts and a Redis restart.

- FIFO per key: 0 order violations per key with 20% of attempts failing at random, a worker
  process SIGKILLed every few seconds and redis-server SIGKILLed and started again once (CI size:
  1,200 events on 30 keys; `python bench/control.py --fifo` runs the issue's 10,000 on 100).
- concurrency = 1: the sink never sees two requests open at once, through worker SIGKILLs.

The figures are printed and appended to tests/artifacts/chaos-figures.txt.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.chaos.control import Chaos, ControlSink, KeyedProvider, RunFigures, run_control
from tests.chaos.harness import ARTIFACTS, FIGURES_FILE
from tests.support.redis_server import RedisServer

#: Each run's own drain limit fails first, with its figures; this catches a hang past it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def publish(title: str, figures: RunFigures) -> str:
    text = figures.table(title)
    print("\n" + text)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with FIGURES_FILE.open("a") as out:
        out.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}]\n{text}\n\n")
    return text


def test_fifo_per_key_keeps_order_through_kills_failures_and_a_redis_restart(
    tmp_path: Path, chaos_redis: RedisServer, chaos_seed: int
) -> None:
    provider = KeyedProvider(url="", keys=30, per_key=40, rate=100.0)
    chaos = Chaos(kill_every=(2.0, 4.0), kills=10, redis_restart_at=5.0)
    with ControlSink(fail_rate=0.2, seed=chaos_seed) as sink:
        figures = run_control(
            tmp_path, chaos_redis, sink, 'order = "body:memberId"', provider, chaos,
            seed=chaos_seed, drain_limit=240.0,
        )  # fmt: skip
    text = publish(f"FIFO per key under chaos (seed {chaos_seed})", figures)
    order = figures.order
    assert order.acknowledged == 30 * 40, text
    assert order.delivered == order.acknowledged, text
    assert order.violations == 0, text
    assert order.failed_requests > 0, text  # the failures did happen
    assert "SIGKILL redis-server" in " ".join(figures.notes), text
    assert sum("SIGKILL worker" in note for note in figures.notes) >= 3, text


def test_concurrency_one_never_has_two_requests_open_through_worker_kills(
    tmp_path: Path, chaos_redis: RedisServer, chaos_seed: int
) -> None:
    provider = KeyedProvider(url="", keys=10, per_key=20, rate=40.0)
    chaos = Chaos(kill_every=(1.5, 3.0), kills=6)
    # 50 ms per request: serial delivery of 200 events lasts at least 10 s, long enough for the
    # kills asserted below even on a loaded machine (at 20 ms a fast run ended after two).
    with ControlSink(delay=0.05, seed=chaos_seed) as sink:
        figures = run_control(
            tmp_path, chaos_redis, sink, "concurrency = 1", provider, chaos,
            seed=chaos_seed, drain_limit=240.0, timeout="1s",
        )  # fmt: skip
    text = publish(f"concurrency = 1 under worker SIGKILLs (seed {chaos_seed})", figures)
    assert figures.order.delivered == figures.order.acknowledged == 200, text
    assert figures.max_open == 1, text
    assert sum("SIGKILL worker" in note for note in figures.notes) >= 3, text
