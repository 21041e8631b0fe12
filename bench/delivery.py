"""Delivery benchmark: relay's fan-out against plain RQ, measured in the same run.

    python bench/delivery.py [--events N] [--processes P] [--seconds S]

Runs on loopback only, with its own redis-server on a free port. Prints:

1. throughput: N events fanned out to 3 targets, drained by `relay worker --processes P --burst`,
   as deliveries/s, against P plain RQ `SimpleWorker` processes running no-op jobs (jobs/s).
   Goal: at least 2.0x.
2. isolation: the same with one of the 3 targets hanging past its timeout; deliveries/s to the two
   healthy targets against their rate when all three are healthy. Goal: at least 0.9. N must make
   a run last several of the hanging target's timeouts (the default does, on a 2-core machine).
3. latency: events posted at half the peak event rate for S seconds, with workers running; p50 and
   p99 from the provider's POST to the target's receipt. Goal: p99 under 100 ms.

Figures are ratios against baselines measured in this run, so they hold on any machine; absolute
numbers are printed for context. It is a benchmark, not a test: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp
import redis

from bench.stack import (
    SINK_SERVER,
    Stack,
    post_events,
    reset_targets,
    target_stats,
    wait_http,
)
from tests.support.redis_server import free_port

PYTHON = sys.executable
HANG_TIMEOUT = 2.0  # the hanging target's timeout in routes.toml

NOOP_WORKER = r"""
import sys
from redis import Redis
from rq import Queue, SimpleWorker
conn = Redis.from_url(sys.argv[1])
SimpleWorker([Queue("noop", connection=conn)], connection=conn).work(burst=True)
"""


def routes_toml(ports: list[int], hang_port: int | None) -> str:
    """A routes file: one JSON source fanned out to three targets."""
    targets = []
    for i, port in enumerate(ports):
        timeout = HANG_TIMEOUT if port == hang_port else 10
        targets.append(
            f'[targets.t{i}]\nurl = "http://127.0.0.1:{port}/hook"\ntimeout = {timeout}\n'
            'retry = { attempts = 3, first = "1s", max = "2s" }\n'
        )
    return (
        '[sources.bench]\nkind = "json"\nevent = "event"\n\n'
        + "\n".join(targets)
        + '\n[[routes]]\nsource = "bench"\nevents = ["*"]\ntargets = ["t0", "t1", "t2"]\n'
    )


def padded_body(i: int) -> bytes:
    """The event every throughput run posts: about 450 bytes of JSON."""
    return json.dumps({"event": "bench.event", "n": i, "pad": "x" * 400}).encode()


def noop_baseline(bench: Stack, jobs: int) -> float:
    """Jobs/s of P plain RQ SimpleWorker processes draining no-op jobs."""
    from rq import Queue

    conn = redis.Redis.from_url(bench.redis.url)
    conn.flushall()
    queue = Queue("noop", connection=conn)
    for start in range(0, jobs, 100):
        datas = [
            Queue.prepare_data("builtins.len", args=("x",), result_ttl=0)
            for _ in range(min(100, jobs - start))
        ]
        queue.enqueue_many(datas)
    t0 = time.perf_counter()
    workers = [
        subprocess.Popen([PYTHON, "-c", NOOP_WORKER, bench.redis.url], env=bench.env)
        for _ in range(bench.processes)
    ]
    for w in workers:
        w.wait(timeout=600)
    elapsed = time.perf_counter() - t0
    return jobs / elapsed


async def drain_run(
    bench: Stack, relay_port: int, ports: list[int], events: int, healthy: list[int]
) -> dict[str, float]:
    """Fill the queue with `events` events, then time `relay worker --burst` draining it."""
    conn = redis.Redis.from_url(bench.redis.url)
    conn.flushall()
    await reset_targets(ports)
    sent = await post_events(relay_port, events, padded_body)
    t0 = time.time()
    worker = subprocess.Popen(
        [PYTHON, "-m", "relay", "worker", "--processes", str(bench.processes), "--burst"],
        env=bench.env,
    )
    # Wait until every healthy target has every event, bounded in time.
    deadline = time.monotonic() + 300
    done_at: dict[int, float] = {}
    while time.monotonic() < deadline and len(done_at) < len(healthy):
        for port in healthy:
            if port not in done_at and (await target_stats(port))["count"] >= len(sent):
                stats = await target_stats(port)
                done_at[port] = max(stats["arrivals"].values())
        await asyncio.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
    if len(done_at) < len(healthy):
        raise RuntimeError("the healthy targets did not receive every event in 300 s")
    last = max(done_at.values())
    first_two = max(done_at[p] for p in healthy[:2])
    return {
        "events": len(sent),
        "seconds": last - t0,
        "rate": len(sent) * len(healthy) / (last - t0),
        "rate_first_two": len(sent) * 2 / (first_two - t0),
    }


async def peak_run(bench: Stack, relay_port: int, ports: list[int], events: int) -> float:
    """Events/s of the whole live system: posting as fast as 32 connections go, workers running.

    This is the peak the latency run takes half of: receiver, workers, Redis and targets all
    share the machine, as they do in production.
    """
    conn = redis.Redis.from_url(bench.redis.url)
    conn.flushall()
    await reset_targets(ports)
    worker = bench.spawn([PYTHON, "-m", "relay", "worker", "--processes", str(bench.processes)])
    await asyncio.sleep(2.0)  # let the workers register
    t0 = time.time()
    sent = await post_events(relay_port, events, padded_body)
    deadline = time.monotonic() + 300
    last = t0
    for port in ports:
        while time.monotonic() < deadline:
            stats = await target_stats(port)
            if stats["count"] >= len(sent):
                last = max(last, max(stats["arrivals"].values()))
                break
            await asyncio.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)
    return len(sent) / (last - t0)


async def latency_run(
    bench: Stack, relay_port: int, ports: list[int], rate: float, seconds: float
) -> list[float]:
    """POST->receipt latencies (ms) at a fixed offered event rate, workers running."""
    conn = redis.Redis.from_url(bench.redis.url)
    conn.flushall()
    await reset_targets(ports)
    worker = bench.spawn([PYTHON, "-m", "relay", "worker", "--processes", str(bench.processes)])
    await asyncio.sleep(2.0)  # let the workers register
    sent: list[tuple[str, float]] = []
    url = f"http://127.0.0.1:{relay_port}/hooks/bench"
    interval = 1.0 / rate
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            body = json.dumps({"event": "bench.event", "n": i}).encode()
            t0 = time.time()
            async with session.post(
                url, data=body, headers={"content-type": "application/json"}
            ) as resp:
                if resp.status == 202:
                    sent.append(((await resp.json())["id"], t0))

        tasks = []
        start = time.monotonic()
        total = int(rate * seconds)
        for i in range(total):
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    await asyncio.sleep(3.0)
    arrivals: dict[str, float] = {}
    for port in ports:
        for wid, t in (await target_stats(port))["arrivals"].items():
            arrivals[f"{port}:{wid}"] = t
    worker.send_signal(signal.SIGTERM)
    latencies = []
    for event_id, t0 in sent:
        for port in ports:
            t = arrivals.get(f"{port}:{event_id}")
            if t is not None:
                latencies.append((t - t0) * 1000)
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 6,000: each drain then lasts several of the hanging target's 2 s timeouts. A run shorter
    # than one timeout (1,500 events take about 1.6 s here) measures only the first round, in
    # which each worker process waits its inline budget (1 s) before it knows the target hangs.
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("bench/delivery.py needs redis-server on PATH")

    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        workdir = Path(tmp)
        bench = Stack(workdir, args.processes)
        try:
            bench.redis.start()
            ports = [free_port() for _ in range(3)]
            relay_port = free_port()
            for port in ports:
                bench.spawn([PYTHON, "-c", SINK_SERVER, str(port), "ok"])
            routes = workdir / "routes.toml"
            routes.write_text(routes_toml(ports, hang_port=None))
            bench.env.update(REDIS_URL=bench.redis.url, RELAY_ROUTES=str(routes))
            relay = bench.spawn(
                [PYTHON, "-m", "relay", "serve", "--port", str(relay_port)], env=bench.env
            )
            await wait_http(f"http://127.0.0.1:{relay_port}/readyz")
            for port in ports:
                await wait_http(f"http://127.0.0.1:{port}/stats")

            noop_jobs = max(2000, args.events * 2)
            baseline = noop_baseline(bench, noop_jobs)
            healthy = await drain_run(bench, relay_port, ports, args.events, ports)
            print(f"baseline: {args.processes} RQ SimpleWorker process(es), no-op jobs: "
                  f"{baseline:,.0f} jobs/s ({noop_jobs} jobs)")  # fmt: skip
            events, seconds = healthy["events"], healthy["seconds"]
            print(f"relay:    {events:.0f} events x 3 targets in {seconds:.2f} s: "
                  f"{healthy['rate']:,.0f} deliveries/s")  # fmt: skip
            print(f"throughput ratio: {healthy['rate'] / baseline:.2f}x   (goal >= 2.0x)")

            # Isolation: restart the third target as a hanging one, with a short timeout, and
            # compare the first two targets' rate with theirs in the all-healthy run above.
            hang_port = ports[2]
            bench.children[2].kill()
            bench.children[2].wait()
            bench.spawn([PYTHON, "-c", SINK_SERVER, str(hang_port), "hang"])
            await wait_http(f"http://127.0.0.1:{hang_port}/stats")
            routes.write_text(routes_toml(ports, hang_port=hang_port))
            relay.send_signal(signal.SIGTERM)
            relay.wait(timeout=30)
            relay = bench.spawn(
                [PYTHON, "-m", "relay", "serve", "--port", str(relay_port)], env=bench.env
            )
            await wait_http(f"http://127.0.0.1:{relay_port}/readyz")
            hanging = await drain_run(bench, relay_port, ports, args.events, ports[:2])
            before, after = healthy["rate_first_two"], hanging["rate_first_two"]
            print(f"isolation: 2 healthy targets {before:,.0f} deliveries/s when the third "
                  f"answers, {after:,.0f} when it hangs ({HANG_TIMEOUT:.0f} s timeout): "
                  f"ratio {after / before:.2f}   (goal >= 0.9)")  # fmt: skip

            # Latency at half the peak event rate, all targets healthy again.
            bench.children[-2].kill()  # the hanging target
            bench.spawn([PYTHON, "-c", SINK_SERVER, str(hang_port), "ok"])
            await wait_http(f"http://127.0.0.1:{hang_port}/stats")
            peak_events = await peak_run(bench, relay_port, ports, args.events)
            print(f"live peak: {peak_events:,.0f} events/s end to end (receiver and workers "
                  f"running together, 3 deliveries each)")  # fmt: skip
            rate = max(1.0, peak_events / 2)
            lat = await latency_run(bench, relay_port, ports, rate, args.seconds)
            if lat:
                print(f"latency at {rate:,.0f} events/s offered (half the peak): "
                      f"p50 {statistics.median(lat):.1f} ms, p99 {percentile(lat, 0.99):.1f} ms "
                      f"over {len(lat)} deliveries   (goal p99 < 100 ms)")  # fmt: skip
            else:
                print("latency: no delivery arrived")
        finally:
            bench.stop_all()


if __name__ == "__main__":
    asyncio.run(main())
