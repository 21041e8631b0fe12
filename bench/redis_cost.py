"""Redis cost benchmark: bytes of Redis memory per retained event, Redis CPU and commands per event.

    .venv/bin/python bench/redis_cost.py [--events 5000] [--runs 3] [--workers 2]
                                         [--scenarios base,target,attempt,dedupe,split]
                                         [--redis-config NAME=VALUE ...] [--log-level info]

Runs on loopback only (bench/stack.py): a fresh redis-server per run, `relay serve`, `--workers`
separate `relay worker` commands and sink targets. N events of the 223-byte DigitalChalk body are
posted with the workers running; once every target has every event and nothing is left due or
queued, the deltas of Redis's INFO are divided by N:

- bytes per retained event: `used_memory` delta / N (what the retention period keeps: the
  event, its attempt log, its index entry, ...);
- Redis CPU per acknowledged event: `used_cpu_user + used_cpu_sys` delta / N;
- commands per event: `total_commands_processed` delta / N (commands run inside Lua scripts
  count too, as they do in INFO commandstats).

Scenarios (each `--runs` times, fresh Redis each; printed as median and range):
- `base`: 2 targets, each delivered at its first attempt (the goals' figure);
- `target`: 3 targets; its bytes minus base's are the bytes per extra target;
- `attempt`: 2 targets, one failing each delivery's first attempt (500, retried after <= 1 s);
  its bytes minus base's are the bytes per extra attempt;
- `dedupe`: base with a dedupe key on the source (`dedupe = {...}`, as Learn365 has by default);
- `split`: base with intake and delivery measured apart (the workers start after the last POST),
  once: Redis CPU and commands of the receiver's commit against those of the workers.

The first base run also prints where the bytes are (MEMORY USAGE of each key kind, MEMORY STATS)
and the commands by Redis CPU (INFO commandstats; EVAL and EVALSHA include the commands their
scripts run). `--redis-config hash-max-listpack-value=1024` (say) measures a Redis setting.

Goals (issue 15): <= 900 B per retained event; <= 64 µs of Redis CPU per event.
Not a test: nothing here asserts a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from bench.redis_stats import (
    RedisSnapshot,
    flat_memory_stats,
    load_average,
    median_spread,
    memory_breakdown,
    memory_stats_lines,
    settle,
)
from bench.stack import SOURCE_PATH, Stack, digitalchalk_body, post_events, wait_count, wait_workers

DEDUPE = 'dedupe = { key = ["body:event", "body:user.id", "body:date"], window = "24h" }'


@dataclass(frozen=True)
class Scenario:
    """One configuration measured."""

    name: str
    targets: int
    fail_first: bool = False  # the first target fails each delivery's first attempt
    dedupe: bool = False
    split: bool = False  # intake and delivery measured apart


SCENARIOS = {
    "base": Scenario("base", 2),
    "target": Scenario("target", 3),
    "attempt": Scenario("attempt", 2, fail_first=True),
    "dedupe": Scenario("dedupe", 2, dedupe=True),
    "split": Scenario("split", 2, split=True),
}


def routes_toml(ports: list[int], dedupe: bool) -> str:
    """The shipped DigitalChalk source (no token) routed to every sink."""
    names = [f"t{i}" for i in range(len(ports))]
    targets = "".join(
        f'[targets.{name}]\nurl = "http://127.0.0.1:{port}/hook"\ntimeout = "10s"\n'
        'retry = { attempts = 10, first = "1s", max = "10h" }\n\n'
        for name, port in zip(names, ports, strict=True)
    )
    return (
        '[sources.digitalchalk]\nkind = "json"\nevent = "event"\nmethods = ["POST", "PUT"]\n'
        + (DEDUPE + "\n" if dedupe else "")
        + "\n"
        + targets
        + f'[[routes]]\nsource = "digitalchalk"\nevents = ["*"]\ntargets = {json.dumps(names)}\n'
    )


@dataclass(frozen=True)
class Run:
    """The deltas of one run, and N."""

    events: int
    delta: RedisSnapshot
    intake: RedisSnapshot | None = None  # split runs: the intake phase alone

    @property
    def bytes_per_event(self) -> float:
        return self.delta.used_memory / self.events

    @property
    def cpu_us_per_event(self) -> float:
        return self.delta.cpu / self.events * 1e6

    @property
    def commands_per_event(self) -> float:
        return self.delta.commands / self.events


async def measure(
    scenario: Scenario, args: argparse.Namespace, workdir: Path, breakdown: bool
) -> Run:
    """One run of a scenario on a fresh stack."""
    stack = Stack(workdir, log_level=args.log_level)
    try:
        conn = stack.start_redis(args.redis_config)
        modes = ["fail-first" if scenario.fail_first else "ok"] + ["ok"] * (scenario.targets - 1)
        ports = await stack.start_sinks(modes)
        stack.write_routes(routes_toml(ports, scenario.dedupe))
        _, relay_port = await stack.start_serve()
        if not scenario.split:
            stack.start_workers(args.workers)
            wait_workers(conn, args.workers)
        await asyncio.sleep(1.0)  # let start-up writes (registrations, first polls) pass
        before = RedisSnapshot.take(conn)
        stats_before = flat_memory_stats(conn)
        sent = await post_events(relay_port, args.events, digitalchalk_body, path=SOURCE_PATH)
        intake = None
        if scenario.split:
            intake = RedisSnapshot.take(conn).since(before)
            stack.start_workers(args.workers)
        for port in ports:
            got = await wait_count(port, len(sent), args.timeout)
            if got["count"] < len(sent):
                raise SystemExit(f"a target got {got['count']} of {len(sent)} in {args.timeout} s")
        settle(conn, args.timeout)
        await asyncio.sleep(0.5)
        delta = RedisSnapshot.take(conn).since(before)
        if breakdown:
            print(memory_breakdown(conn, len(sent)))
            print(memory_stats_lines(stats_before, flat_memory_stats(conn), len(sent)))
        return Run(len(sent), delta, intake)
    finally:
        stack.stop_all()


def commands_table(run: Run, top: int = 14) -> str:
    """INFO commandstats of a run: calls and Redis CPU per event, by CPU."""
    total_usec = sum(usec for _, usec in run.delta.stats.values())
    rows = sorted(run.delta.stats.items(), key=lambda kv: kv[1][1], reverse=True)[:top]
    lines = [
        f"  commands by Redis CPU (commandstats usec; its sum {total_usec / run.events:.0f} µs "
        f"per event, against {run.cpu_us_per_event:.0f} µs of CPU in all; eval and evalsha "
        "include the commands their scripts run, which are listed too, so it adds up to more):",
        f"    {'command':<22} {'calls/event':>11} {'µs/event':>9} {'µs/call':>8}",
    ]
    for name, (calls, usec) in rows:
        lines.append(
            f"    {name:<22} {calls / run.events:11.2f} {usec / run.events:9.1f} "
            f"{usec / calls:8.2f}"
        )
    return "\n".join(lines)


def summary(name: str, runs: list[Run]) -> str:
    """One scenario's figures as median (range) of its runs."""
    return (
        f"  {name:<8} bytes/event {median_spread([r.bytes_per_event for r in runs])}   "
        f"Redis CPU µs/event {median_spread([r.cpu_us_per_event for r in runs])}   "
        f"commands/event {median_spread([r.commands_per_event for r in runs], '{:.1f}')}"
    )


def split_lines(run: Run) -> str:
    """The intake phase against the delivery phase of a split run."""
    assert run.intake is not None
    n = run.events
    intake, total = run.intake, run.delta
    lines = ["  intake and delivery apart (workers started after the last POST):"]
    for label, cpu, commands, memory in (
        ("intake (relay serve)", intake.cpu, intake.commands, intake.used_memory),
        ("delivery (workers)", total.cpu - intake.cpu, total.commands - intake.commands,
         total.used_memory - intake.used_memory),
    ):  # fmt: skip
        lines.append(
            f"    {label:<22} {cpu / n * 1e6:6.0f} µs Redis CPU, {commands / n:5.1f} commands, "
            f"{memory / n:+6.0f} B per event"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> None:
    results: dict[str, list[Run]] = {}
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for name in names:
        scenario = SCENARIOS[name]
        runs = 1 if scenario.split else args.runs
        for i in range(runs):
            with tempfile.TemporaryDirectory(prefix="relay-cost-") as tmp:
                first_base = name == "base" and i == 0
                run = await measure(scenario, args, Path(tmp), breakdown=first_base)
            results.setdefault(name, []).append(run)
            if first_base:
                print(commands_table(run))
        print(summary(name, results[name]))
        if scenario.split:
            print(split_lines(results[name][0]))
    base = results.get("base")
    if base:
        b = statistics.median(r.bytes_per_event for r in base)
        for name, label in (("target", "per extra target"), ("attempt", "per extra attempt"),
                            ("dedupe", "for the dedupe key")):  # fmt: skip
            if name in results:
                extra = statistics.median(r.bytes_per_event for r in results[name]) - b
                print(f"  bytes {label}: {extra:+,.0f} (median against median)")
        cpu = statistics.median(r.cpu_us_per_event for r in base)
        rate = 1e6 / cpu if cpu else 0.0
        print(f"  goals: {b:,.0f} B per retained event (<= 900), {cpu:.0f} µs Redis CPU per "
              f"event (<= 64): one Redis core serves {rate:,.0f} events/s at that")  # fmt: skip


def config_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError("expected NAME=VALUE")
    return name, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="`relay worker` commands")
    parser.add_argument("--scenarios", default="base,target,attempt,dedupe,split")
    parser.add_argument(
        "--redis-config", type=config_pair, action="append", default=[], metavar="NAME=VALUE"
    )
    parser.add_argument("--log-level", default="info", help="RELAY_LOG_LEVEL of relay's processes")
    parser.add_argument("--timeout", type=float, default=120, help="bound of each wait (s)")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("bench/redis_cost.py needs redis-server on PATH")
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        sys.exit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    config = " ".join(f"{n}={v}" for n, v in args.redis_config) or "defaults"
    print(f"Redis cost benchmark: {args.events:,} events of {len(digitalchalk_body(0))} B per run, "
          f"{args.workers} `relay worker`, Redis config {config}; "
          f"load average {load_average()}")  # fmt: skip
    started = time.monotonic()
    asyncio.run(main_async(args))
    print(f"  whole run: {time.monotonic() - started:.0f} s; load average {load_average()}")


if __name__ == "__main__":
    main()
