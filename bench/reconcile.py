"""Reconciliation benchmark: one pass over a large academy against the fake Fellow API.

    python bench/reconcile.py [--courses 200] [--members 500] [--runs 3] [--concurrency 8]
                              [--api-latency 1] [--compare 50]

Runs on loopback only, with its own redis-server on a free port and the tests' fake Fellow API
(tests/support/fellow_api.py) in a process of its own. The academy has `courses` courses and a
tenth as many programs, each with `members` members, a fifth of them completed; it answers each
request after `--api-latency` milliseconds (1 by default; 0 leaves relay's own costs and the
loopback). Each run:

1. baseline: the first pass (records every membership; a coursemember request for each);
2. changes: 1% of the memberships change (a third enrolled, a third completed, a third removed),
   and a pass sees them (they wait inside `grace`);
3. missed: a pass after `grace` synthesizes them all.

Each pass runs in a fresh child process, so its peak RSS (ru_maxrss) is its own; the RSS after
imports and set-up, before the pass, is printed beside it, and so are the CPU seconds the pass
process and the fake API's process spent in the pass (where the time went) and the load average
after it (the machine may be shared). Printed: the median over the runs, with min-max, of each
pass's seconds and peak RSS, and the ratio of the sizes' RSS growth when run with `--compare 50`
(the same academy with 50 courses). Goal (issue 18): a pass over 200
courses x 500 members in under 60 s, with bounded memory. It is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis

from tests.support.fellow_api import KEY, FellowApiServer
from tests.support.redis_server import RedisServer, free_port

PYTHON = sys.executable
GRACE = 300.0
T0 = 1_800_000_000.0
COMPLETED = 0.2  # share of memberships completed at the start
CHANGED = 0.01  # share of memberships changed between the baseline and the next passes

ROUTES = """
[sources.fellow]
kind = "form"
token_env = "FELLOW_TOKEN"

[sources.fellow.reconcile]
api = "{api}"
api_key_env = "FELLOW_API_KEY"
grace = "5m"
page_size = 500
concurrency = {concurrency}
timeout = "30s"

[targets.crm]
url = "http://127.0.0.1:9/crm"

[[routes]]
source = "fellow"
events = ["*"]
targets = ["crm"]
"""


# -- the fake API, in its own process --------------------------------------------------------


class BenchApi(FellowApiServer):
    """The tests' fake API with a switch to change 1% of the academy, and no request log."""

    def build_app(self) -> Any:
        from aiohttp import web

        app = super().build_app()

        async def mutate(request: web.Request) -> web.Response:
            return web.json_response(self.mutate(random.Random(int(request.query["seed"]))))

        app.router.add_post("/_bench/mutate", mutate)
        return app

    def mutate(self, rng: random.Random) -> dict[str, int]:
        """Enrol, complete and remove CHANGED of the memberships, a third each."""
        everyone = [(k, m) for k, members in self.state.items() for m in members]
        count = max(3, int(len(everyone) * CHANGED)) // 3
        picked = rng.sample(everyone, 3 * count)
        for (kind, cid), member in picked[:count]:
            self.enrol(kind, cid, f"new-{member}")
        completed = 0
        for (kind, cid), member in picked[count : 2 * count]:
            if not self.state[(kind, cid)][member]:
                self.enrol(kind, cid, member, completed=True)
                completed += 1
        for (kind, cid), member in picked[2 * count :]:
            self.remove(kind, cid, member)
        return {"created": count, "completed": completed, "deleted": count}


def serve_api(port: int, courses: int, members: int, latency: float) -> None:
    """Role `api`: serve an academy of `courses` courses (and a tenth as many programs), each
    answer after `latency` seconds."""
    rng = random.Random(42)
    server = BenchApi()
    server.port = port
    server.latency = latency
    for kind, count in (("course", courses), ("program", max(1, courses // 10))):
        for c in range(count):
            for m in range(members):
                server.enrol(kind, str(c), f"m{m}", completed=rng.random() < COMPLETED)
    server.paths = _Discard()  # type: ignore[assignment]
    with server:
        print("ready", flush=True)
        sys.stdin.read()  # until the parent closes our stdin


class _Discard(list):  # type: ignore[type-arg]
    """A request log that keeps nothing: 100,000 paths a pass are not the benchmark's point."""

    def append(self, item: object) -> None:
        pass


# -- one pass, in its own process -------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def one_pass(redis_url: str, api: str, concurrency: int, now: float) -> None:
    """Role `pass`: one pass, then one JSON line of what it took."""
    from relay.config.loading import parse_routes
    from worker.fellow.reconcile import run_pass

    env = {"FELLOW_TOKEN": "fellow-token-0123456789abcdef", "FELLOW_API_KEY": KEY}
    table = parse_routes(ROUTES.format(api=api, concurrency=concurrency), "routes.toml", env)
    conn = redis.Redis.from_url(redis_url)
    before = _rss_kb()
    cpu_before = _cpu_seconds(os.getpid())
    started = time.monotonic()
    result = run_pass(conn, table, table.sources["fellow"], retention=86400.0, now=now)
    seconds = time.monotonic() - started
    cpu = _cpu_seconds(os.getpid()) - cpu_before
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if result.error is not None:
        raise SystemExit(f"pass failed: {result.error}")
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu,
                "requests": result.requests,
                "memberships": result.memberships,
                "synthesized": len(result.synthesized),
                "waiting": len(result.plan.waiting),
                "rss_before_mb": before / 1024,
                "peak_rss_mb": peak / 1024,
            }
        )
    )


# -- the orchestration ------------------------------------------------------------------------


def run_child(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [PYTHON, __file__, *args], check=True, capture_output=True, text=True, timeout=900
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def pass_child(api_pid: int, *args: str) -> dict[str, Any]:
    """One pass in a child process, with the fake API's CPU seconds meanwhile and the load."""
    api_before = _cpu_seconds(api_pid)
    found = run_child("pass", *args)
    found["api_cpu_seconds"] = _cpu_seconds(api_pid) - api_before
    found["load"] = os.getloadavg()[0]
    return found


def one_run(
    server: RedisServer, api: str, api_pid: int, concurrency: int, run: int
) -> dict[str, Any]:
    """The three passes of one run, on an empty Redis and the academy as it starts."""
    redis.Redis.from_url(server.url).flushall()
    common = (server.url, api, str(concurrency))
    base = pass_child(api_pid, *common, str(T0))
    request = urllib.request.Request(  # noqa: S310 (our own loopback http URL)
        f"{api}/_bench/mutate?seed={run}",
        method="POST",
        headers={"Authorization": f"Bearer {KEY}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        changed = json.loads(response.read())
    seen = pass_child(api_pid, *common, str(T0 + 60))
    missed = pass_child(api_pid, *common, str(T0 + 60 + GRACE))
    return {"baseline": base, "changes": seen, "missed": missed, "changed": changed}


def spread(values: list[float], fmt: str = ".1f") -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def measure(
    courses: int, members: int, runs: int, concurrency: int, latency: float
) -> dict[str, Any]:
    """Median and spread of each pass over `runs` runs for one academy size."""
    port = free_port()
    api_proc = subprocess.Popen(
        [PYTHON, __file__, "api", str(port), str(courses), str(members), str(latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert api_proc.stdout is not None
    assert api_proc.stdout.readline().strip() == "ready"
    api = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            results = [one_run(server, api, api_proc.pid, concurrency, run) for run in range(runs)]
        finally:
            server.stop()
            assert api_proc.stdin is not None
            api_proc.stdin.close()
            api_proc.wait(10)
    return {"courses": courses, "members": members, "results": results}


def report(found: dict[str, Any]) -> None:
    results = found["results"]
    first = results[0]
    print(
        f"\n{found['courses']} courses + {max(1, found['courses'] // 10)} programs x "
        f"{found['members']} members: {first['baseline']['memberships']:,} memberships; "
        f"changed per run: {first['changed']}"
    )
    print(f"{'pass':<10} {'seconds':>18} {'requests':>9} {'req/s':>6} {'pass CPU s':>11} "
          f"{'API CPU s':>10} {'load':>11} {'peak RSS MB':>18} {'RSS before':>10} "
          f"{'synth':>6}")  # fmt: skip
    for name in ("baseline", "changes", "missed"):
        rows = [r[name] for r in results]
        seconds = [r["seconds"] for r in rows]
        rate = statistics.median(r["requests"] / r["seconds"] for r in rows)
        loads = [r["load"] for r in rows]
        print(
            f"{name:<10} {spread(seconds):>18} {rows[0]['requests']:>9} {rate:>6.0f} "
            f"{statistics.median(r['cpu_seconds'] for r in rows):>11.1f} "
            f"{statistics.median(r['api_cpu_seconds'] for r in rows):>10.1f} "
            f"{min(loads):>5.1f}-{max(loads):<5.1f} "
            f"{spread([r['peak_rss_mb'] for r in rows]):>18} "
            f"{statistics.median(r['rss_before_mb'] for r in rows):>10.1f} "
            f"{rows[0]['synthesized']:>6}"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "api":
        latency = float(sys.argv[5]) if len(sys.argv) > 5 else 0.001
        serve_api(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), latency)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "pass":
        one_pass(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--courses", type=int, default=200)
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    # The default of `concurrency` in [sources.NAME.reconcile]: the goal is met (or not) there.
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--api-latency",
        type=float,
        default=1.0,
        metavar="MS",
        help="milliseconds the fake API waits before each answer (default 1)",
    )
    parser.add_argument("--compare", type=int, help="also measure this many courses (memory)")
    args = parser.parse_args()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, concurrency "
        f"{args.concurrency}, API latency {args.api_latency:g} ms, load average "
        f"{os.getloadavg()[0]:.1f} at the start"
    )
    sizes = [args.courses] + ([args.compare] if args.compare else [])
    latency = args.api_latency / 1000
    found = [measure(c, args.members, args.runs, args.concurrency, latency) for c in sizes]
    for one in found:
        report(one)
    if len(found) == 2:
        big, small = found
        growth = [
            statistics.median(
                r[name]["peak_rss_mb"] - r[name]["rss_before_mb"] for r in f["results"]
            )
            for f in (big, small)
            for name in ("changes",)
        ]
        members = [f["results"][0]["baseline"]["memberships"] for f in (big, small)]
        print(
            f"\nRSS grown by a 'changes' pass: {growth[0]:.1f} MB for {members[0]:,} memberships, "
            f"{growth[1]:.1f} MB for {members[1]:,}: x{growth[0] / max(growth[1], 0.1):.2f} "
            f"for x{members[0] / members[1]:.2f} memberships"
        )


if __name__ == "__main__":
    main()
