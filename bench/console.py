"""Management API benchmark: GET /api/v1/events over 100,000 retained events, beside the CLI.

    python bench/console.py [--events N] [--requests R] [--cli-runs C]

Runs on loopback only, with its own redis-server on a free port. Loads N events (default
100,000) straight through the store's commit path (relay.store.commit, the receiver's own Lua
script, 1,000 events per call), spread over the last six days across three sources and two
targets, most delivered, some dead, retrying or unrouted. Then, for no filter and for each
single filter of the API (and two that match nothing, the worst case), it times R sequential
requests (keep-alive) of `GET /api/v1/events?<filter>` to the admin listener of a `relay serve`
process (as deployed), R of the console's events page with the same query (`GET /events?<filter>`,
the HTML a browser gets, from the same listener), and C runs of the same query done by the CLI
(`relay events list --json <flags>`, in this process: the command's own work, without the
interpreter's start-up). Goal: API and page p99 under 150 ms for every single filter.

A benchmark, not a test: it prints figures (p50, p99, and the API's p99 against the CLI's in
the same run) and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp
import redis

from relay.cli.main import main as relay_main
from relay.config.loading import parse_routes
from relay.core.ids import new_event_id
from relay.core.times import format_time
from relay.store import keys
from relay.store.commit import commit_arguments
from relay.store.records import Event, attempts_field, state_field
from tests.support.redis_server import RedisServer, free_port

TOKEN = "b" * 40
RETENTION = 7 * 86400
SPAN = 6 * 86400  # events received over the last six days
BATCH = 1000  # events per commit script call

ROUTES = """
[sources.fellow]
kind = "form"
event = "event"

[sources.elucidat]
kind = "json"

[sources.strigo]
kind = "header"

[targets.crm]
url = "http://127.0.0.1:9/crm"

[targets.analytics]
url = "http://127.0.0.1:9/analytics"

[[routes]]
source = "fellow"
events = ["COURSEMEMBER_*"]
targets = ["crm", "analytics"]

[[routes]]
source = "elucidat"
events = ["*"]
targets = ["crm"]

[[routes]]
source = "strigo"
events = ["*"]
targets = ["analytics"]
"""

TYPES = {
    "fellow": ["COURSEMEMBER_ADDED", "COURSEMEMBER_COMPLETED", "PROGRAM_UPDATED"],
    "elucidat": ["release_learner_completed", "release_published"],
    "strigo": ["enrollment.created", "lab.finished"],
}


@dataclass(frozen=True)
class _Request:
    """What the commit reads of one request (relay.store.commit.Request)."""

    events: Sequence[Event]
    dedupe_window: int = 0


def load_events(conn: redis.Redis, count: int, now: float) -> dict[str, str]:
    """Commit `count` events as the receiver does, then set delivery states; some sample ids."""
    table = parse_routes(ROUTES, "routes.toml", {})
    rng = random.Random(17)
    queue_key = "rq:queue:bench-unused"
    samples: dict[str, str] = {}
    started = time.perf_counter()
    for first in range(0, count, BATCH):
        events = []
        for n in range(first, min(count, first + BATCH)):
            received = now - SPAN + SPAN * n / count  # oldest first, like real intake
            source = rng.choice(list(TYPES))
            type_ = rng.choice(TYPES[source])
            unrouted = rng.random() < 0.01
            events.append(
                Event(
                    id=new_event_id(received),
                    source=source,
                    type=type_,
                    received_at=received,
                    content_type="application/json",
                    method="POST",
                    headers=(("content-type", "application/json"),),
                    body=b'{"event": "%s", "n": %d}' % (type_.encode(), n),
                    targets=() if unrouted else table.match(source, type_),
                )
            )
        call = commit_arguments([_Request(events)], RETENTION, now, queue_key)
        with conn.pipeline(transaction=False) as pipe:
            pipe.execute_command(*call.command())
            for event in events:
                for target in event.targets:
                    state, made = _outcome(rng)
                    pipe.hset(
                        keys.event_key(event.id),
                        mapping={state_field(target): state, attempts_field(target): made},
                    )
                    if state == "dead":
                        pipe.zadd(
                            keys.DEAD, {keys.dead_member(event.id, target): event.received_at}
                        )
                pipe.zrem(keys.due_key(target), *(e.id for e in events if target in e.targets))
            pipe.execute()
        samples.setdefault("id", events[len(events) // 2].id)
    print(f"loaded {count:,} events in {time.perf_counter() - started:.1f} s", flush=True)
    return samples


def _outcome(rng: random.Random) -> tuple[str, int]:
    roll = rng.random()
    if roll < 0.02:
        return "dead", 10
    if roll < 0.04:
        return "retrying", 3
    return "delivered", 1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def time_api(
    base: str, query: str, requests: int, path: str = "/api/v1/events"
) -> list[float]:
    """Latencies (ms) of `requests` sequential GETs of PATH?query (the console's events page
    takes the API's query and a bearer token too)."""
    timings = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        url = f"{base}{path}" + (f"?{query}" if query else "")
        async with session.get(url) as warm:  # first request: connection, caches
            assert warm.status == 200, await warm.text()
        for _ in range(requests):
            started = time.perf_counter()
            async with session.get(url) as response:
                await response.read()
                assert response.status == 200
            timings.append((time.perf_counter() - started) * 1000)
    return timings


def time_cli(flags: list[str], runs: int) -> list[float]:
    """Latencies (ms) of `relay events list --json FLAGS` run in this process."""
    timings = []
    for _ in range(runs):
        sink = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(io.StringIO()):
            code = relay_main(["events", "list", "--json", *flags])
        timings.append((time.perf_counter() - started) * 1000)
        assert code == 0
    return timings


@contextlib.contextmanager
def admin_listener(redis_url: str, workdir: Path) -> Iterator[str]:
    """`relay serve` with the admin listener, as deployed (its own process); its base URL."""
    routes = workdir / "routes.toml"
    routes.write_text(ROUTES)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RELAY_")},
        "REDIS_URL": redis_url,
        "RELAY_ROUTES": str(routes),
        "PORT": str(free_port()),
        "RELAY_ADMIN_PORT": str(port),
        "RELAY_ADMIN_TOKENS": f"bench:read:{TOKEN}",
        "RELAY_LOG_LEVEL": "warning",
    }
    serve = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve"],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/openapi.json", timeout=1):  # noqa: S310
                    break
            except OSError:
                if time.monotonic() > deadline or serve.poll() is not None:
                    raise RuntimeError("relay serve did not start its admin listener") from None
                time.sleep(0.1)
        yield base
    finally:
        serve.terminate()
        serve.wait(20)


def queries(now: float, samples: dict[str, str]) -> list[tuple[str, str, list[str]]]:
    """(label, API query, CLI flags) for no filter and each single filter."""
    hour_ago, five_days_ago = format_time(now - 3600), format_time(now - 5 * 86400)
    prefix = samples["id"][:12]
    return [
        ("no filter", "", []),
        ("source", "source=strigo", ["--source", "strigo"]),
        ("type glob", "type=COURSEMEMBER_*", ["--event-type", "COURSEMEMBER_*"]),
        ("target", "target=analytics", ["--target", "analytics"]),
        ("state dead", "state=dead", ["--state", "dead"]),
        ("state unrouted", "state=unrouted", ["--state", "unrouted"]),
        ("received from", f"received_from={hour_ago}", ["--since", hour_ago]),
        ("received to", f"received_to={five_days_ago}", ["--until", five_days_ago]),
        ("id prefix", f"id_prefix={prefix}", ["--id-prefix", prefix]),
        # The worst case: a filter nothing matches reads the whole scan bound (10,000 entries).
        ("matches none", "source=nosuch", ["--source", "nosuch"]),
        ("state none", "state=gone", ["--state", "gone"]),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=100, help="API requests per query")
    parser.add_argument("--cli-runs", type=int, default=20, help="CLI runs per query")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="relay-bench-console-") as workdir:
        server = RedisServer(Path(workdir) / "redis")
        server.start()
        try:
            return run(server.url, args, Path(workdir))
        finally:
            server.stop()


def run(redis_url: str, args: argparse.Namespace, workdir: Path) -> int:
    conn = redis.Redis.from_url(redis_url)
    now = time.time()
    samples = load_events(conn, args.events, now)
    os.environ["REDIS_URL"] = redis_url  # for the CLI runs
    rows = []
    with admin_listener(redis_url, workdir) as base:
        for label, query, flags in queries(now, samples):
            api = asyncio.run(time_api(base, query, args.requests))
            page = asyncio.run(time_api(base, query, args.requests, path="/events"))
            cli = time_cli(flags, args.cli_runs)
            rows.append((label, api, cli, page))
            print(f"  measured {label}", file=sys.stderr, flush=True)
    print()
    print(f"GET /api/v1/events over {args.events:,} events: {args.requests} requests per query")
    print(f"(CLI: relay events list --json, {args.cli_runs} runs in-process)")
    print()
    head = (
        "filter", "API p50", "API p99", "CLI p50", "CLI p99", "API/CLI p99", "goal",
        "page p50", "page p99", "goal",
    )  # fmt: skip
    print("{:<16}{:>10}{:>10}{:>10}{:>10}{:>13}{:>7}{:>10}{:>10}{:>7}".format(*head))
    worst = worst_page = 0.0
    for label, api, cli, page in rows:
        p99, page99 = percentile(api, 0.99), percentile(page, 0.99)
        worst, worst_page = max(worst, p99), max(worst_page, page99)
        cli99 = percentile(cli, 0.99)
        print(
            f"{label:<16}{statistics.median(api):>8.1f}ms{p99:>8.1f}ms"
            f"{statistics.median(cli):>8.1f}ms{cli99:>8.1f}ms{p99 / cli99:>12.2f}x"
            f"{'ok' if p99 < 150 else 'MISS':>7}"
            f"{statistics.median(page):>8.1f}ms{page99:>8.1f}ms"
            f"{'ok' if page99 < 150 else 'MISS':>7}"
        )
    print()
    print(f"worst API p99: {worst:.1f} ms (goal: under 150 ms for every single filter)")
    print(f"worst events page p99: {worst_page:.1f} ms (the console's GET /events, same goal)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
