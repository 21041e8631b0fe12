"""Circuit breaker benchmark: a target down for a while at a steady event rate, at any scale.

    python bench/breaker.py                      # the chaos test's scale: 60 s down, probe 5s
    python bench/breaker.py --full               # issue 14's: 10 minutes down at 20/s, probe 30s
    python bench/breaker.py --down 120 --rate 50 --probe 10s

Runs the scenario of tests/chaos/breaker_outage.py (real `relay serve`, `relay worker
--processes 2`, a redis-server of its own on a free loopback port, a retrying provider, and one
target answering 503 for the whole outage) and prints its figures: the requests that reached the
target while the breaker was open against the events it held (without a breaker every held event
would have made at least one attempt, and `attempts` of them over a long outage), whether any
held delivery used an attempt, and how long the backlog took once the target was back.

It is a benchmark, not a test: nothing here asserts; the ratios are what to read.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.core.units import parse_duration
from tests.chaos.breaker_outage import Outage, publish, run_outage
from tests.support.redis_server import RedisServer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="10 minutes down at 20/s, probe 30s")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    parser.add_argument("--down", type=float, default=60.0, help="seconds the target is down")
    parser.add_argument("--probe", default="5s", help="the breaker's probe interval")
    parser.add_argument("--failures", type=int, default=20, help="failures in a row that open it")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    down, probe = (600.0, 30.0) if args.full else (args.down, parse_duration(args.probe))
    outage = Outage(
        rate=args.rate,
        before=5.0,
        down=down,
        after=10.0,
        failures=args.failures,
        probe=probe,
        drain_timeout=max(120.0, down),
    )
    with tempfile.TemporaryDirectory(prefix="relay-bench-breaker-") as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            workdir = Path(tmp) / "run"
            workdir.mkdir()
            figures = run_outage(outage, workdir, server)
        finally:
            server.stop()
    publish(figures)
    held = max(1, figures.held)
    print(
        f"\n  requests while open per held event: {figures.requests_while_open / held:.4f} "
        f"({figures.requests_while_open} for {figures.held}); a relay without a breaker makes "
        f">= 1 (and up to {outage.attempts} over a long outage)"
    )
    print(
        f"  held deliveries that used an attempt while open: "
        f"{figures.held - figures.held_first_attempt}; lost: {figures.lost}"
    )


if __name__ == "__main__":
    main()
