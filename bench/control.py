"""Delivery control benchmark: the goals of issue 14 for rate and FIFO per key, measured.

    python bench/control.py [--rate] [--blocked] [--fifo] [--runs N] [--seconds S]

With no mode given it runs --rate and --blocked. Everything runs on loopback with a
redis-server of its own, a real `relay serve` and `relay worker --processes 2`
(tests/chaos/harness.RelayStack) and one sink target (tests/chaos/control.ControlSink).

1. --rate: `rate = "50/s"` with 2 worker processes and a backlog that outlasts the window: the
   delivery rate over S seconds (60) from the first delivery, as a ratio to 50/s (goal: within
   5%), and the most deliveries in any 1-second window (goal: at most 60), twice: as the sink saw
   the requests arrive, and as the workers started them (the attempt log's start times). The
   two differ by the time a request takes to reach the sink and be timestamped there; on a busy
   machine the sink's own scheduling delays bunch its arrival times.
2. --blocked: `order = "body:memberId"`, 50 keys of 100 events each plus one key whose head is
   refused (500) on every attempt, so it retries and holds back its own key; the other keys'
   delivery rate against the same run with that key healthy (goal: at least 0.9).
3. --fifo: the chaos goal at its full size: 10,000 events on 100 keys, 20% of attempts failing
   at random, a worker process SIGKILLed every 2-4 s and one Redis restart: order violations
   (goal: 0), and whether everything was delivered.

Figures are ratios against the goal or against a baseline measured in the same run; a run is
repeated --runs times and the median is printed with the spread. It is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis

from relay.store import keys
from relay.store.records import attempt_log
from tests.chaos.control import (
    Chaos,
    ControlSink,
    KeyedProvider,
    Seen,
    control_routes,
    run_control,
)
from tests.chaos.harness import RelayStack
from tests.support.redis_server import RedisServer

RATE = 50
PER_KEY = 100  # events per key in --blocked
BLOCKED_KEY = "member-050"  # the 51st key: the others are member-000 .. member-049


def worst_window(times: Sequence[float], window: float = 1.0) -> int:
    """The most events in any window of that length (windows starting at an event)."""
    best, j = 0, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + window:
            j += 1
        best = max(best, j - i)
    return best


def spread(values: Sequence[float], fmt: str = "{:.3f}") -> str:
    """`median (min-max)` of a run's figures."""
    middle = statistics.median(values)
    return f"{fmt.format(middle)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def wait_for(condition: Callable[[], bool], limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return False


def attempt_starts(url: str, event_ids: Sequence[str]) -> list[float]:
    """When the workers started each attempt of those events (their attempt logs), sorted."""
    conn = redis.Redis.from_url(url)
    with conn.pipeline(transaction=False) as pipe:
        for event_id in event_ids:
            pipe.hgetall(keys.event_key(event_id))  # attempts are fields of the event hash
            pipe.lrange(keys.attempts_key(event_id), 0, -1)  # ... or a list, before 2026-12
        replies = pipe.execute()
    conn.close()
    logs = [attempt_log(replies[i], replies[i + 1]) for i in range(0, len(replies), 2)]
    return sorted(record.at or 0.0 for log in logs for record in log)


def rate_figures(times: Sequence[float], seconds: float) -> tuple[float, int]:
    """(starts per second over `seconds` from the first, most in any 1-s window of them)."""
    start = times[0]
    inside = [t for t in times if t < start + seconds]
    return len(inside) / seconds, worst_window(inside)


def rate_run(workdir: Path, seconds: float) -> tuple[tuple[float, int], tuple[float, int]]:
    """For rate = "50/s": (starts per second over `seconds`, most in any 1-s window) as the
    sink saw them arrive, and as the workers started them."""
    workdir.mkdir(parents=True, exist_ok=True)
    redis_server = RedisServer(workdir / "redis")
    redis_server.start()
    backlog = int(RATE * (seconds + 10))
    with ControlSink() as sink:
        stack = RelayStack(workdir, redis_server, control_routes(sink.url, f'rate = "{RATE}/s"'))
        try:
            stack.start_receiver()
            # The backlog first, then the workers: the provider shares this process with the
            # sink, whose arrival times would bunch while it competes with the posting.
            provider = KeyedProvider(stack.hook_url, keys=50, per_key=backlog // 50)
            asyncio.run(provider.run())
            stack.start_workers()
            wait_for(
                lambda: bool(sink.seen) and time.time() > sink.seen[0].at + seconds + 0.5,
                seconds + 60,
            )
            seen = sink.snapshot()
            stack.close()
            started = attempt_starts(redis_server.url, list({s.webhook_id for s in seen}))
        finally:
            stack.close()
            redis_server.kill()
    return rate_figures([s.at for s in seen], seconds), rate_figures(started, seconds)


def blocked_run(workdir: Path, blocked: bool) -> float:
    """Deliveries per second of the 50 healthy keys, with the 51st key's head failing or not."""
    workdir.mkdir(parents=True, exist_ok=True)
    redis_server = RedisServer(workdir / "redis")
    redis_server.start()
    fail_keys = frozenset({BLOCKED_KEY}) if blocked else frozenset()
    with ControlSink(fail_keys=fail_keys) as sink:
        routes = control_routes(sink.url, 'order = "body:memberId"')
        stack = RelayStack(workdir, redis_server, routes)
        try:
            stack.start_receiver()
            provider = KeyedProvider(stack.hook_url, keys=51, per_key=PER_KEY)
            asyncio.run(provider.run())  # the whole backlog first, then the workers
            stack.start_workers()
            wanted = 50 * PER_KEY

            def healthy(seen: list[Seen]) -> list[Seen]:
                return [s for s in seen if s.key != BLOCKED_KEY and s.status == 200]

            wait_for(lambda: len(healthy(sink.snapshot())) >= wanted, 300)
            done = healthy(sink.snapshot())
        finally:
            stack.close()
            redis_server.kill()
    times = sorted(s.at for s in done)
    return (len(times) - 1) / (times[-1] - times[0])


def fifo_run(workdir: Path, seed: int) -> str:
    """The full chaos run: its figures as text."""
    redis_server = RedisServer(workdir / "redis", appendonly=True, fsync="always")
    redis_server.start()
    provider = KeyedProvider(url="", keys=100, per_key=100, rate=400.0, give_up_after=600.0)
    chaos = Chaos(kill_every=(2.0, 4.0), kills=1000, redis_restart_at=10.0)
    try:
        with ControlSink(fail_rate=0.2, seed=seed) as sink:
            figures = run_control(
                workdir, redis_server, sink, 'order = "body:memberId"', provider, chaos,
                seed=seed, drain_limit=900.0,
            )  # fmt: skip
    finally:
        redis_server.kill()
    verdict = (
        "goal met"
        if figures.order.violations == 0 and figures.order.delivered == 10_000
        else "GOAL MISSED"
    )
    return figures.table(f"FIFO at full size (seed {seed}): {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", action="store_true", help="the rate goal")
    parser.add_argument("--blocked", action="store_true", help="FIFO: a retrying head's cost")
    parser.add_argument("--fifo", action="store_true", help="FIFO: the full chaos run")
    parser.add_argument("--runs", type=int, default=3, help="repeat each measurement N times")
    parser.add_argument("--seconds", type=float, default=60.0, help="the rate's window")
    parser.add_argument("--seed", type=int, default=14, help="the chaos run's seed")
    args = parser.parse_args(argv)
    if not (args.rate or args.blocked or args.fifo):
        args.rate = args.blocked = True
    if args.rate:
        results = []
        for run in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="bench-rate-") as tmp:
                results.append(rate_run(Path(tmp), args.seconds))
            (rate, worst), (started, worst_started) = results[-1]
            print(
                f"  rate run {run + 1}: at the sink {rate:.2f}/s, worst 1-s window {worst}; "
                f"started by the workers {started:.2f}/s, worst {worst_started}"
            )
        for where, index in (("arriving at the sink", 0), ("started by the workers", 1)):
            rates = [r[index][0] / RATE for r in results]
            worst_windows = [float(r[index][1]) for r in results]
            print(
                f'rate = "{RATE}/s", 2 worker processes, {args.seconds:g} s, {where}: '
                f"measured/target {spread(rates)} (goal 0.95-1.05); worst 1-s window "
                f"{spread(worst_windows, '{:.0f}')} (goal at most 60)"
            )
    if args.blocked:
        ratios = []
        for run in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="bench-fifo-") as tmp:
                # Alternate which goes first: a machine's load drifts between the two.
                if run % 2:
                    held = blocked_run(Path(tmp) / "b", blocked=True)
                    healthy = blocked_run(Path(tmp) / "a", blocked=False)
                else:
                    healthy = blocked_run(Path(tmp) / "a", blocked=False)
                    held = blocked_run(Path(tmp) / "b", blocked=True)
            ratios.append(held / healthy)
            print(
                f"  blocked run {run + 1}: other keys {held:.1f}/s with a retrying head, "
                f"{healthy:.1f}/s without: {ratios[-1]:.3f}"
            )
        print(
            f"FIFO per key, 50 keys x {PER_KEY} events: other keys' rate while one head retries / "
            f"unblocked {spread(ratios)} (goal at least 0.9)"
        )
    if args.fifo:
        with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
            print(fifo_run(Path(tmp), args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
