"""Receiver benchmark: `relay serve` against a bare aiohttp handler, measured in the same run.

    .venv/bin/python bench/receiver.py [--seconds 8] [--connections 32] [--rate 1000]
                                       [--processes N] [--rounds 3]
                                       [--generator auto|wrk|python]

Starts its own redis-server on a free loopback port, `relay serve` (routes.toml in a temp dir,
logs at INFO to a file, as in production) and a bare aiohttp app that answers 202 and does
nothing, each first as one process, then as N processes sharing the port (SO_REUSEPORT; N
defaults to the number of cores). Both run on the same event loop: uvloop when it is installed
(as `relay serve` does), else asyncio's own. All are driven by the same load generator in a separate
process (`--generator`: wrk, or the raw-asyncio client below; by default wrk when it is
installed), closed loop for throughput; then an open-loop run of the Python client at a fixed
offered rate against one relay process for latency (measured from each request's scheduled send
time, so a stall is not hidden by the generator waiting for it). Prints requests/s, p50 and p99
for each, and the ratios relay/bare: one process each, relay's N against one bare process (the
issue's wording: relay as deployed against a bare handler), and N against N. The closed-loop
runs are made `--rounds` times, bare and relay alternately, and each ratio printed is the
median of the rounds' ratios: on a shared VM a single pair of runs moved by a third from one
run to the next. The whole run takes about three minutes with the defaults.

Not a timed test: the figures depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

ROUTES = """
[sources.bench]
kind = "json"

[targets.sink]
url = "http://127.0.0.1:9/sink"

[[routes]]
source = "bench"
events = ["element_*"]
targets = ["sink"]
"""

#: A DigitalChalk-like event of about 1 KiB.
BODY = json.dumps(
    {
        "event": "element_published",
        "element": {"id": "el-12345", "title": "Course element " + "x" * 700, "version": 3},
        "offering": {"id": "off-987", "name": "Onboarding"},
        "timestamp": "2026-11-22T12:00:00Z",
    }
).encode()

BARE_APP = """
import asyncio
import importlib.util
import os
import sys
from aiohttp import web

if importlib.util.find_spec("uvloop") is not None:  # the loop `relay serve` runs on, too
    import uvloop
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

async def hook(request):
    return web.json_response({"id": "bare"}, status=202)

port, processes = int(sys.argv[1]), int(sys.argv[2])
for _ in range(processes - 1):  # N processes on one port, as `relay serve --processes N`
    if os.fork() == 0:
        break
app = web.Application()
app.router.add_post("/hooks/{source}", hook)
web.run_app(
    app, host="127.0.0.1", port=port, access_log=None, print=None, reuse_port=processes > 1
)
"""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(port: int, path: str, deadline: float = 20.0) -> None:
    """Wait until a GET on 127.0.0.1:port answers at all."""
    end = time.monotonic() + deadline
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(request)
                if sock.recv(64).startswith(b"HTTP/1.1"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered on port {port}")


@contextmanager
def running(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, log: Any = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A server subprocess (in its own process group), stopped with its children at the end."""
    process = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=log, stderr=log, start_new_session=True
    )
    try:
        yield process
    finally:
        stop(process)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # forked bare children, if any


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- load generator (runs in its own process) -------------------------------------------------


class _Conn(asyncio.Protocol):
    """One keep-alive connection sending one request at a time."""

    def __init__(self, gen: _Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.sent_at = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.gen.idle.append(self)
        self.gen.kick()

    def send(self, scheduled: float) -> None:
        assert self.transport is not None
        self.busy = True
        self.sent_at = scheduled
        self.transport.write(self.gen.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            match = re.search(rb"(?i)content-length:\s*(\d+)", head)
            length = int(match.group(1)) if match else 0
            if len(self.buffer) < end + 4 + length:
                return
            status = int(head[9:12])
            self.buffer = self.buffer[end + 4 + length :]
            self.busy = False
            self.gen.done(self, status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.lost += 1


class _Generator:
    def __init__(self, port: int, rate: float | None) -> None:
        self.request = (
            f"POST /hooks/bench HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
        ).encode() + BODY
        self.rate = rate
        self.idle: deque[_Conn] = deque()
        self.due: deque[float] = deque()  # open loop: scheduled send times not yet sent
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.lost = 0
        self.measuring = False
        self.running = True

    def kick(self) -> None:
        while self.idle and self.running:
            if self.rate is None:
                self.idle.popleft().send(time.perf_counter())
            elif self.due:
                self.idle.popleft().send(self.due.popleft())
            else:
                return

    def done(self, conn: _Conn, status: int) -> None:
        now = time.perf_counter()
        if self.measuring:
            self.latencies.append(now - conn.sent_at)
            self.statuses[status] = self.statuses.get(status, 0) + 1
        self.idle.append(conn)
        self.kick()


async def _drive(port: int, connections: int, seconds: float, rate: float | None) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    gen = _Generator(port, rate)
    for _ in range(connections):
        await loop.create_connection(lambda: _Conn(gen), "127.0.0.1", port)
    warmup = 1.0
    start = time.perf_counter()
    measure_from = start + warmup
    end = measure_from + seconds
    if rate is None:
        await asyncio.sleep(warmup)
        gen.measuring = True
        measured_at = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - measured_at
    else:
        interval = 1.0 / rate
        next_send = start
        measured_at = measure_from
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            if not gen.measuring and now >= measure_from:
                gen.measuring = True
            while next_send <= now:
                gen.due.append(next_send)
                next_send += interval
            gen.kick()
            await asyncio.sleep(0.0005)
        elapsed = end - measured_at
    gen.running = False
    gen.measuring = False
    latencies = sorted(gen.latencies)
    count = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(count - 1, int(p * count))] * 1000 if count else float("nan")

    return {
        "requests": count,
        "rps": count / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "statuses": gen.statuses,
        "backlog": len(gen.due),
    }


def pick_generator(choice: str) -> str:
    """`wrk` or `python`: the one asked for, or with `auto`, wrk where it is installed."""
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if choice == "wrk" and not shutil.which("wrk"):
        raise SystemExit("bench: --generator wrk, but wrk is not installed (apt install wrk)")
    return choice


def run_client(
    port: int, connections: int, seconds: float, rate: float | None, generator: str = "python"
) -> dict[str, Any]:
    """Run the load generator in a child process (its own core) and return its figures.

    The fixed-rate run always uses the Python client: wrk has no open-loop mode.
    """
    if generator == "wrk" and rate is None:
        return _run_wrk(port, connections, seconds)
    args = [PYTHON, __file__, "--client", str(port), str(connections), str(seconds), str(rate)]
    out = subprocess.run(args, check=True, capture_output=True, timeout=seconds + 60)
    return dict(json.loads(out.stdout))


def _run_wrk(port: int, connections: int, seconds: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(BODY.decode())}\n"
            "done = function(summary, latency, requests)\n"
            '  io.write(string.format("JSON {\\"p50\\": %f, \\"p99\\": %f, \\"n\\": %d, '
            '\\"err\\": %d}\\n", latency:percentile(50), latency:percentile(99), '
            "summary.requests, summary.errors.status))\nend\n"
        )
    url = f"http://127.0.0.1:{port}/hooks/bench"
    args = ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "-s"]
    out = subprocess.run([*args, script.name, url], check=True, capture_output=True, text=True)
    os.unlink(script.name)
    figures = json.loads(out.stdout.split("JSON ", 1)[1])
    return {
        "requests": figures["n"],
        "rps": figures["n"] / seconds,
        "p50_ms": figures["p50"] / 1000,
        "p99_ms": figures["p99"] / 1000,
        "statuses": {"2xx": figures["n"] - figures["err"], "non-2xx": figures["err"]},
        "backlog": 0,
    }


# --- orchestration ----------------------------------------------------------------------------


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A private redis-server on a free loopback port (no persistence: we measure the relay)."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("bench/receiver.py needs redis-server on PATH")
    port = free_port()
    args = [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--dir",
        str(directory),
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return process, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def redis_command(port: int, *words: str) -> bytes:
    """One raw RESP command (keeps the orchestrator free of client libraries)."""
    payload = f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload.encode())
        return sock.recv(4096)


#: The events index's entries: one per stored event in the list of the minute it was received
#: (relay.store.events_index), the minutes in a sorted set.
COUNT_INDEXED = (
    "local n = 0 "
    "for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do "
    "n = n + redis.call('LLEN', ARGV[1] .. m) end "
    "return n"
)


def stored_events(port: int) -> int:
    """Events in the relay's events index (every event relay stored and still retains)."""
    reply = redis_command(port, "EVAL", COUNT_INDEXED, "1", "relay:events:minutes", "relay:events:")
    if not reply.startswith(b":"):
        raise RuntimeError(f"bench: counting the stored events failed: {reply!r}")
    return int(reply[1:].split(b"\r\n")[0])


def acknowledged(figures: dict[str, Any]) -> int:
    """Requests answered 202 (the Python client counts each status; wrk only 2xx or not)."""
    statuses = figures["statuses"]
    return int(statuses.get("202", 0) + statuses.get("2xx", 0))


def show(name: str, figures: dict[str, Any]) -> None:
    """One line of results."""
    print(
        f"  {name:<28} {figures['rps']:>9.0f} req/s   p50 {figures['p50_ms']:>7.2f} ms   "
        f"p99 {figures['p99_ms']:>7.2f} ms   statuses {figures['statuses']}"
    )


def main() -> int:
    """Run the whole benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=1000.0, help="offered req/s, fixed run")
    parser.add_argument("--log-level", default="info", help="relay's RELAY_LOG_LEVEL")
    parser.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 2,
        help="the second run's process count, relay and bare alike (default: cores)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="bare and relay measured this many times, alternately; ratios are the median",
    )
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator of the closed-loop runs (auto: wrk where it is installed)",
    )
    args = parser.parse_args()
    tool = pick_generator(args.generator)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        tmpdir = Path(tmp)
        (tmpdir / "routes.toml").write_text(ROUTES)
        redis_proc, redis_port = start_redis(tmpdir)
        relay_port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "RELAY_ROUTES": str(tmpdir / "routes.toml"),
            "RELAY_LOG_LEVEL": args.log_level,
            "RELAY_LOG_FORMAT": "json",
            "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))),
        }
        log_file = (tmpdir / "relay.log").open("wb")
        many = args.processes
        generator = "wrk -t1" if tool == "wrk" else "python asyncio client (own process)"
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio's own"
        print(f"receiver benchmark: {os.cpu_count()} cores, generator: {generator}")
        print(f"  event loop: {loop}, for bare and relay alike")
        print(
            f"  body {len(BODY)} B, {args.connections} connections, {args.seconds:g} s "
            f"measured after 1 s warm-up, relay logs at {args.log_level}"
        )
        acked = 0
        rounds: list[dict[str, dict[str, Any]]] = []
        fixed: dict[str, Any] = {}
        try:
            for round_no in range(1, args.rounds + 1):
                if args.rounds > 1:
                    print(f"  round {round_no} of {args.rounds}")
                figures: dict[str, dict[str, Any]] = {}
                for processes in (1, many):
                    port = free_port()
                    with running([PYTHON, "-c", BARE_APP, str(port), str(processes)], tmpdir):
                        wait_http(port, "/")
                        figures[f"bare{processes}"] = run_client(
                            port, args.connections, args.seconds, None, tool
                        )
                    show(f"bare aiohttp, {processes} process(es)", figures[f"bare{processes}"])
                    command = [PYTHON, "-m", "relay", "serve", "--port", str(relay_port)]
                    with running([*command, "--processes", str(processes)], ROOT, env, log_file):
                        wait_http(relay_port, "/healthz")
                        fig = run_client(relay_port, args.connections, args.seconds, None, tool)
                        figures[f"relay{processes}"] = fig
                        show(f"relay serve, {processes} process(es)", fig)
                        if processes == 1 and round_no == 1:
                            fixed = run_client(
                                relay_port, args.connections, args.seconds, args.rate
                            )
                            show(f"relay (1 process) at {args.rate:g} req/s", fixed)
                            acked += acknowledged(fixed)
                        acked += acknowledged(fig)
                rounds.append(figures)
            print("  ratios (goal: relay/bare >= 0.50):")
            for name, top, bottom in (
                ("relay 1 process / bare 1 process", "relay1", "bare1"),
                (f"relay {many} processes / bare 1 process", f"relay{many}", "bare1"),
                (f"relay {many} processes / bare {many} processes", f"relay{many}", f"bare{many}"),
            ):
                # Each round's ratio compares runs made minutes apart at most; the median of
                # the rounds is what a noisy neighbour moves least.
                ratios = [r[top]["rps"] / r[bottom]["rps"] for r in rounds]
                each = (
                    ""
                    if len(ratios) == 1
                    else f"   (rounds: {', '.join(f'{x:.2f}' for x in ratios)})"
                )
                print(f"    {name:<40} {statistics.median(ratios):.2f}{each}")
            verdict = "met" if fixed["p99_ms"] < 20 else "NOT met"
            print(
                f"  p99 at {args.rate:g} req/s: {fixed['p99_ms']:.2f} ms (goal < 20 ms: {verdict})"
            )
            stored = stored_events(redis_port)
            print(f"  in Redis: {stored} events (>= {acked} acknowledged while measured)")
            if stored < acked:
                print(f"  LOST: {acked - stored} acknowledged events are not in Redis")
                return 1
        finally:
            stop(redis_proc)
            log_file.close()
    print(f"  whole run: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        port, conns, secs, rate = sys.argv[2:6]
        result = asyncio.run(
            _drive(int(port), int(conns), float(secs), None if rate == "None" else float(rate))
        )
        print(json.dumps(result))
        raise SystemExit(0)
    raise SystemExit(main())
