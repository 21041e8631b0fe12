"""Backlog benchmark: a target's backlog drained, against the live rate of a healthy target.

    .venv/bin/python bench/backlog.py [--events 20000] [--workers 2] [--runs 1]
                                      [--scenario resume|replay|down] [--log-level info]
                                      [--timeout 300] [--profile DIR] [--breaker]

Runs on loopback only: its own redis-server on a free port, `relay serve`, `--workers` separate
`relay worker` commands, and two sink targets (bench/stack.py). Every event is the 223-byte
DigitalChalk body of bench/stack.py, routed to both targets, `live` and `backlog`:

- `--scenario resume` (the default): `relay pause backlog`, then N events arrive; `live` gets
  them as they come. Then `relay resume backlog`, and its N held deliveries drain.
- `--scenario replay`: `backlog` answers 500 and has `retry.attempts = 1`, so each of its N
  deliveries is dead-lettered at its first attempt while `live` gets them. Then it answers 200
  again and `relay replay --all --yes` puts the N dead letters back.
- `--scenario down`: `backlog` answers 503 (no Retry-After) while the events arrive, so its
  deliveries wait on their retry backoff (the shipped defaults: 10 attempts from 5 s, factor 4,
  full jitter); then it answers 200 again, with no command: a recovered target. With
  `--breaker`, `backlog` has a circuit breaker (20 failures in a row, probe every second): it
  opens while the target is down, and its closing makes every held delivery due at once.

Printed: the live rate (deliveries/s to `live`, from the first POST to the last arrival, with
the same worker processes), the drain rate (deliveries/s to `backlog`, from the `relay resume`
or `relay replay` command, or the recovery, to the last arrival), and their ratio (goal:
>= 0.8); the intake rate, to show whether the live rate was bounded by the receiver (it is when
the two are close: the ratio then flatters the drain); and, per event or delivery of each
phase, Redis CPU and commands. With `--runs R`, the median and range of the R runs' figures.
`--profile DIR` samples the workers with py-spy during the drain (bench/pyspy.py) and prints
where their CPU went.

Not a test: nothing here asserts a timing. Each wait is bounded by `--timeout`.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis

from bench.pyspy import Recorder, summarize
from bench.redis_stats import RedisSnapshot, load_average, median_spread
from bench.stack import (
    SOURCE_PATH,
    Stack,
    digitalchalk_body,
    post_events,
    set_mode,
    wait_count,
    wait_workers,
)

#: `--breaker`: the backlog target's circuit breaker, and its timeout, which is also the least
#: probe interval (relay.config.breaker): a recovered target is probed within a second.
BREAKER = 'timeout = "1s"\nbreaker = { failures = 20, probe = "1s" }'


def routes_toml(live: int, backlog: int, backlog_attempts: int, breaker: bool = False) -> str:
    """The shipped DigitalChalk source (without its token) routed to two sinks."""
    backlog_timeout = BREAKER if breaker else 'timeout = "10s"'
    return f"""
[sources.digitalchalk]
kind = "json"
event = "event"
methods = ["POST", "PUT"]

[targets.live]
url = "http://127.0.0.1:{live}/hook"
timeout = "10s"

[targets.backlog]
url = "http://127.0.0.1:{backlog}/hook"
{backlog_timeout}
retry = {{ attempts = {backlog_attempts}, first = "5s", max = "10h" }}

[[routes]]
source = "digitalchalk"
events = ["*"]
targets = ["live", "backlog"]
"""


@dataclass(frozen=True)
class Scenario:
    """How the backlog forms and what ends it."""

    backlog_mode: str  # how `backlog` answers while the events arrive (bench/stack.py SINK_SERVER)
    attempts: int  # retry.attempts of `backlog`
    command: tuple[str, ...]  # the relay command that starts the drain (none: recovery alone)
    pause: bool = False  # `relay pause backlog` before the events arrive
    dead: bool = False  # wait for every delivery to `backlog` to be dead-lettered first


SCENARIOS = {
    "resume": Scenario("ok", 10, ("resume", "backlog"), pause=True),
    "replay": Scenario("500", 1, ("replay", "--all", "--yes", "--json"), dead=True),
    "down": Scenario("503", 10, ()),
}


def wait_dead(conn: redis.Redis, count: int, seconds: float) -> int:
    """Wait until the dead-letter store holds `count` deliveries; how many it holds."""
    deadline = time.monotonic() + seconds
    while (dead := int(conn.zcard("relay:dead"))) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    return dead


@dataclass(frozen=True)
class Phase:
    """One phase's deliveries to a sink: how many, over how long, at what cost to Redis."""

    deliveries: int
    seconds: float  # from the phase's start (first POST, or the command) to the last arrival
    first: float  # from the phase's start to the first arrival
    redis: RedisSnapshot  # the delta over the phase

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds

    def cost(self, deliveries: int) -> str:
        """Redis CPU and commands per delivery or event (`deliveries` of them in the phase)."""
        n = max(1, deliveries)
        cpu, commands = self.redis.cpu / n * 1e6, self.redis.commands / n
        return f"{cpu:,.0f} µs Redis CPU, {commands:.1f} commands"


def phase(stats: dict[str, Any], start: float, before: RedisSnapshot, conn: redis.Redis) -> Phase:
    """A Phase from a sink's figures and the Redis snapshot taken at its start."""
    return Phase(
        deliveries=int(stats["count"]),
        seconds=float(stats["last"] or start) - start,
        first=float(stats["first"] or start) - start,
        redis=RedisSnapshot.take(conn).since(before),
    )


async def arrive(
    stack: Stack, conn: redis.Redis, relay_port: int, ports: Ports, args: argparse.Namespace
) -> tuple[Phase, float]:
    """Post the events; `live` takes them as they come. (its Phase, intake events/s)."""
    before = RedisSnapshot.take(conn)
    t0 = time.time()
    sent = await post_events(
        relay_port, args.events, digitalchalk_body, path=SOURCE_PATH, seconds=args.timeout
    )
    intake = len(sent) / (time.time() - t0)
    live = await wait_count(ports.live, len(sent), args.timeout)
    if live["count"] < len(sent):
        raise SystemExit(f"`live` got {live['count']} of {len(sent)} in {args.timeout:g} s")
    if SCENARIOS[args.scenario].dead:
        dead = wait_dead(conn, len(sent), args.timeout)
        print(f"  dead letters: {dead:,} of {len(sent):,} deliveries to `backlog`")
    return phase(live, t0, before, conn), intake


async def drain(
    stack: Stack, conn: redis.Redis, ports: Ports, count: int, args: argparse.Namespace
) -> tuple[Phase, float]:
    """Recover, resume or replay; wait for the backlog. (its Phase, seconds the command took)."""
    scenario = SCENARIOS[args.scenario]
    before = RedisSnapshot.take(conn)
    t1 = time.time()
    if scenario.backlog_mode != "ok":
        await set_mode(ports.backlog, "ok")
    if scenario.command:
        stack.relay(*scenario.command, timeout=args.timeout)
    command_s = time.time() - t1
    drained = await wait_count(ports.backlog, count, args.timeout)
    if drained["count"] < count:
        raise SystemExit(f"`backlog` got {drained['count']} of {count} in {args.timeout:g} s")
    print(f"  requests to `backlog`: {drained['requests']:,} for {count:,} deliveries")
    return phase(drained, t1, before, conn), command_s


@dataclass(frozen=True)
class Ports:
    """The two sinks."""

    live: int
    backlog: int


@dataclass(frozen=True)
class Result:
    """The figures of one run."""

    live: float
    drain: float
    intake: float

    @property
    def ratio(self) -> float:
        return self.drain / self.live


async def run(args: argparse.Namespace, workdir: Path, profile: Path | None) -> Result:
    """Set up, let the events arrive, drain the backlog, print the figures."""
    scenario = SCENARIOS[args.scenario]
    stack = Stack(workdir, log_level=args.log_level)
    try:
        conn = stack.start_redis()
        ports = Ports(*await stack.start_sinks(["ok", scenario.backlog_mode]))
        stack.write_routes(routes_toml(ports.live, ports.backlog, scenario.attempts, args.breaker))
        _, relay_port = await stack.start_serve()
        workers = stack.start_workers(args.workers)
        wait_workers(conn, args.workers)
        if scenario.pause:
            stack.relay("pause", "backlog")
        live, intake = await arrive(stack, conn, relay_port, ports, args)
        held = int(conn.zcard("relay:due:backlog"))
        held_bytes = conn.memory_usage("relay:due:backlog", samples=0) or 0
        recorder = None if profile is None else Recorder.start([w.pid for w in workers], profile)
        try:
            drained, command_s = await drain(stack, conn, ports, live.deliveries, args)
        finally:
            if recorder is not None:
                recorder.stop()
        start = f"`relay {' '.join(scenario.command[:2])}`" if scenario.command else "recovery"
        print(f"  intake: {live.deliveries:,} events acknowledged at {intake:,.0f} events/s")
        if held:
            print(f"  due set of `backlog` at the end of intake: {held:,} entries, "
                  f"{held_bytes / held:.0f} B each (MEMORY USAGE)")  # fmt: skip
        cost = live.cost(live.deliveries)
        print(f"  live:  {live.rate:,.0f} deliveries/s to `live`; per event: {cost} "
              "(intake and every attempt of the phase included)")  # fmt: skip
        cost = drained.cost(drained.deliveries)
        took = f"it took {command_s:.1f} s; " if scenario.command else ""
        print(f"  drain: {drained.rate:,.0f} deliveries/s to `backlog` after {start} "
              f"({took}first delivery after {drained.first:.1f} s); "
              f"per delivery: {cost}")  # fmt: skip
        print(f"  drain / live: {drained.rate / live.rate:.2f}   (goal >= 0.8)")
        if recorder is not None:
            print(summarize(recorder.files))
        return Result(live=live.rate, drain=drained.rate, intake=intake)
    finally:
        stack.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2, help="`relay worker` commands")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="resume")
    parser.add_argument("--runs", type=int, default=1, help="repeat, and print medians")
    parser.add_argument("--log-level", default="info", help="RELAY_LOG_LEVEL of relay's processes")
    parser.add_argument("--timeout", type=float, default=300, help="bound of each wait (s)")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the workers during the drain")
    parser.add_argument(
        "--breaker",
        action="store_true",
        help="give `backlog` a circuit breaker (20 failures, probe 1s, timeout 1s)",
    )
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("bench/backlog.py needs redis-server on PATH")
    breaker = " with a breaker on `backlog`" if args.breaker else ""
    print(f"backlog benchmark ({args.scenario}{breaker}): {args.events:,} events of "
          f"{len(digitalchalk_body(0))} B, 2 targets, {args.workers} `relay worker`, "
          f"logs at {args.log_level}; load average {load_average()}")  # fmt: skip
    started = time.monotonic()
    results = []
    for i in range(args.runs):
        if args.runs > 1:
            print(f" run {i + 1} of {args.runs}")
        profile = Path(args.profile) / f"run-{i + 1}" if args.profile else None
        with tempfile.TemporaryDirectory(prefix="relay-backlog-") as tmp:
            results.append(asyncio.run(run(args, Path(tmp), profile)))
    if args.runs > 1:
        print(f" median of {args.runs} runs (range):")
        for label, values, fmt in (
            ("intake events/s", [r.intake for r in results], "{:,.0f}"),
            ("live deliveries/s", [r.live for r in results], "{:,.0f}"),
            ("drain deliveries/s", [r.drain for r in results], "{:,.0f}"),
            ("drain / live", [r.ratio for r in results], "{:.2f}"),
        ):
            print(f"  {label:<20} {median_spread(values, fmt)}")
    print(f"  whole run: {time.monotonic() - started:.0f} s; load average {load_average()}")


if __name__ == "__main__":
    main()
