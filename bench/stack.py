"""A private relay for the delivery-side benchmarks: Redis, `relay serve`, `relay worker`, sinks.

Shared by bench/delivery.py, bench/backlog.py and bench/redis_cost.py, so that each measures the
same stack: its own redis-server on a free loopback port (tests/support/redis_server.py), the
relay's own commands started as an operator starts them, and targets that are small aiohttp
sinks in processes of their own. Everything binds 127.0.0.1 and is stopped on exit.

Also here: the DigitalChalk body the cost figures are quoted for and the client that posts
events. The Redis figures (INFO snapshots, memory by key kind) are bench/redis_stats.py's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp
import redis

from tests.support.redis_server import RedisServer, free_port

PYTHON = sys.executable
#: Where the DigitalChalk body is posted (the shipped source, without its path token).
SOURCE_PATH = "/hooks/digitalchalk"

# A target in its own process. It answers by its mode, which POST /mode changes at run time:
# "ok" (200), "hang" (never answers), "fail-first" (500 the first time a webhook-id comes, then
# 200), or a status code. A webhook-id counts once, when first answered 2xx (deliveries are
# at-least-once). GET /stats: {"count", "first", "last", "requests", "arrivals": {id: time}};
# GET /count: the same without "arrivals" (cheap to poll while tens of thousands arrive).
SINK_SERVER = r"""
import asyncio, sys, time
from aiohttp import web
port, mode = int(sys.argv[1]), [sys.argv[2]]
arrivals, seen, requests = {}, set(), [0]
async def hook(request):
    await request.read()
    requests[0] += 1
    wid = request.headers.get("webhook-id", "")
    if mode[0] == "hang":
        await asyncio.sleep(3600)
    status = 200 if mode[0] == "ok" else 0
    if mode[0] == "fail-first":
        status = 200 if wid in seen else 500
        seen.add(wid)
    elif status == 0:
        status = int(mode[0])
    if status < 300:
        arrivals.setdefault(wid, time.time())
    return web.Response(status=status)
def counts():
    times = arrivals.values()
    return {"count": len(arrivals), "requests": requests[0],
            "first": min(times) if arrivals else None, "last": max(times) if arrivals else None}
async def stats(request):
    return web.json_response({**counts(), "arrivals": arrivals})
async def count(request):
    return web.json_response(counts())
async def reset(request):
    arrivals.clear(); seen.clear(); requests[0] = 0
    return web.json_response({})
async def set_mode(request):
    mode[0] = (await request.text()).strip()
    return web.json_response({"mode": mode[0]})
app = web.Application()
app.router.add_post("/hook", hook)
app.router.add_get("/stats", stats)
app.router.add_get("/count", count)
app.router.add_post("/reset", reset)
app.router.add_post("/mode", set_mode)
web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)
"""


def digitalchalk_body(n: int) -> bytes:
    """A 223-byte DigitalChalk `offering_registered` event (JSON as DigitalChalk spaces it).

    The documented fields (`event`, ISO-8601 UTC `date`) and the offering and user of the
    learner events in tests/providers/test_digitalchalk.py; the user id is `n` in 16 hex digits,
    so every event differs and all are the same size.
    """
    return (
        b'{"event": "offering_registered", "date": "2024-03-01T10:15:00Z", "offering": '
        b'{"id": "4c1f0e6a9b2d4f7e8a3b5c6d7e8f9a0b", "title": "Sample Course"}, '
        b'"user": {"id": "%016x", "email": "%016x@example.com"}}' % (n, n)
    )


class Stack:
    """The processes of one benchmark run, all stopped by `stop_all`."""

    def __init__(self, workdir: Path, processes: int = 2, log_level: str = "warning") -> None:
        self.workdir = workdir
        self.processes = processes
        self.redis = RedisServer(workdir / "redis")
        self.children: list[subprocess.Popen[bytes]] = []
        self.env = dict(os.environ, RELAY_LOG_LEVEL=log_level, RELAY_LOG_FORMAT="json")

    def spawn(self, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a child process, its output to a log file of the work directory."""
        log = open(self.workdir / f"proc-{len(self.children)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(args, env=env or self.env, stdout=log, stderr=subprocess.STDOUT)
        self.children.append(proc)
        return proc

    def start_redis(self, config: Sequence[tuple[str, str]] = ()) -> redis.Redis:
        """Start the private Redis (with `CONFIG SET`s) and point the relay's commands at it."""
        self.redis.start()
        conn = redis.Redis.from_url(self.redis.url)
        for name, value in config:
            conn.config_set(name, value)
        self.env["REDIS_URL"] = self.redis.url
        return conn

    def write_routes(self, text: str) -> Path:
        """Write routes.toml and point the relay's commands at it."""
        path = self.workdir / "routes.toml"
        path.write_text(text)
        self.env["RELAY_ROUTES"] = str(path)
        return path

    async def start_sinks(self, modes: Sequence[str]) -> list[int]:
        """One sink per mode, each on a free port; their ports once they answer."""
        ports = [free_port() for _ in modes]
        for port, mode in zip(ports, modes, strict=True):
            self.spawn([PYTHON, "-c", SINK_SERVER, str(port), mode])
        for port in ports:
            await wait_http(f"http://127.0.0.1:{port}/count")
        return ports

    async def start_serve(self) -> tuple[subprocess.Popen[bytes], int]:
        """`relay serve` on a free port, once it is ready."""
        port = free_port()
        proc = self.spawn([PYTHON, "-m", "relay", "serve", "--port", str(port)])
        await wait_http(f"http://127.0.0.1:{port}/readyz")
        return proc, port

    def start_workers(self, count: int) -> list[subprocess.Popen[bytes]]:
        """`count` separate `relay worker` commands (one process each), as an operator runs them."""
        return [self.spawn([PYTHON, "-m", "relay", "worker"]) for _ in range(count)]

    def relay(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run one operator command (`relay resume t1`, ...) to its end; raise if it fails."""
        return subprocess.run(
            [PYTHON, "-m", "relay", *args],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def stop_all(self) -> None:
        """SIGTERM every child, SIGKILL the ones that linger, then kill Redis."""
        for proc in self.children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.children:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.children.clear()
        self.redis.kill()


def wait_workers(conn: redis.Redis, count: int, seconds: float = 30) -> None:
    """Wait until `count` RQ workers have registered (they then poll and take kicks)."""
    deadline = time.monotonic() + seconds
    while conn.scard("rq:workers") < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} workers did not register within {seconds:g} s")
        time.sleep(0.1)


async def wait_http(url: str, seconds: float = 20) -> None:
    """Wait until a GET answers below 500."""
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as resp:
                    if resp.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def post_events(
    port: int,
    count: int,
    body: Callable[[int], bytes],
    concurrency: int = 32,
    path: str = "/hooks/bench",
    seconds: float = 300,
) -> list[tuple[str, float]]:
    """Post up to `count` events (stopping after `seconds`); (id, time posted) of each 202."""
    sent: list[tuple[str, float]] = []
    url = f"http://127.0.0.1:{port}{path}"
    numbers = iter(range(count))
    deadline = time.monotonic() + seconds

    async def one(session: aiohttp.ClientSession) -> None:
        for i in numbers:
            if time.monotonic() > deadline:
                return
            t0 = time.time()
            async with session.post(
                url, data=body(i), headers={"content-type": "application/json"}
            ) as resp:
                if resp.status == 202:
                    sent.append(((await resp.json())["id"], t0))

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session) for _ in range(concurrency)))
    return sent


async def target_stats(port: int, arrivals: bool = True) -> dict[str, Any]:
    """A sink's figures; `arrivals` adds the time each webhook-id first arrived."""
    path = "stats" if arrivals else "count"
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/{path}") as resp,
    ):
        data: dict[str, Any] = await resp.json()
        return data


async def reset_targets(ports: Sequence[int]) -> None:
    """Forget what the sinks received."""
    async with aiohttp.ClientSession() as session:
        for port in ports:
            async with session.post(f"http://127.0.0.1:{port}/reset"):
                pass


async def set_mode(port: int, mode: str) -> None:
    """Change how a sink answers from now on (see SINK_SERVER)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}/mode", data=mode),
    ):
        pass


async def wait_count(port: int, count: int, seconds: float) -> dict[str, Any]:
    """Poll a sink until it has `count` deliveries or `seconds` pass; its last figures."""
    deadline = time.monotonic() + seconds
    while True:
        stats = await target_stats(port, arrivals=False)
        if stats["count"] >= count or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.1)
