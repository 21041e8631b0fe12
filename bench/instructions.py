"""Receiver cost in CPU instructions per request: `relay serve` against a bare aiohttp handler.

    .venv/bin/python bench/instructions.py [--requests 3000] [--connections 32]

bench/receiver.py measures requests per second, which on a shared 2-core machine moves by 10 to
20% from one run to the next (other tenants, the generator and Redis on the same cores). This
script counts instead: each server runs under valgrind's callgrind, which counts the
instructions the process executes (its own, not Redis's or the generator's), the same count for
the same work whatever else the machine is doing. A warm-up of 500 requests is dumped and
thrown away (imports, first-use caches), then `--requests` more are counted, and the figure is
the count divided by the requests. Same body, routes and log settings as bench/receiver.py.

Prints instructions per request for the bare handler and for relay, and their ratio: how much
of relay's work per request the bare handler does. That ratio is not the throughput ratio (the
receiver's share of the cores, its waits for Redis and the generator's cost all weigh in
there), but it moves only when the code does, so it is the yardstick for a change to the hot
path. Needs valgrind (Debian's package); the run takes about a minute.

Not a timed test: counts depend on the Python build and library versions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from receiver import (  # bench/ is not a package: imported by path
    BARE_APP,
    BODY,
    PYTHON,
    ROOT,
    ROUTES,
    free_port,
    start_redis,
    stop,
    wait_http,
)

WARM_UP = 500


async def _post_many(port: int, count: int, connections: int) -> dict[int, int]:
    """POST `count` requests over `connections` keep-alive connections; statuses counted."""
    statuses: dict[int, int] = {}
    left = count
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one_connection() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.post(
                    f"http://127.0.0.1:{port}/hooks/bench",
                    data=BODY,
                    headers={"Content-Type": "application/json"},
                ) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1

        await asyncio.wait_for(asyncio.gather(*(one_connection() for _ in range(connections))), 600)
    return statuses


def _dump(pid: int) -> None:
    """Ask callgrind to write its counts so far to a new file and start counting afresh."""
    subprocess.run(
        ["callgrind_control", "--dump", str(pid)], check=True, capture_output=True, timeout=60
    )


def _totals(path: Path) -> int:
    match = re.search(r"^(?:summary|totals): (\d+)", path.read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"bench: no instruction total in {path}")
    return int(match.group(1))


def count(
    name: str, command: list[str], env: dict[str, str], health: str, args: argparse.Namespace
) -> int:
    """Instructions per request of one server, counted by callgrind over `args.requests`.

    `command` is the server's argv, with `{port}` where its port goes.
    """
    with tempfile.TemporaryDirectory(prefix=f"relay-instr-{name}-") as tmp:
        out = Path(tmp) / "callgrind.out"
        port = free_port()
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        log = (Path(tmp) / "server.log").open("wb")
        argv = [*valgrind, *(word.replace("{port}", str(port)) for word in command)]
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            wait_http(port, health, deadline=300.0)  # startup under valgrind takes a while
            asyncio.run(_post_many(port, WARM_UP, args.connections))
            _dump(process.pid)
            started = time.monotonic()
            statuses = asyncio.run(_post_many(port, args.requests, args.connections))
            _dump(process.pid)
        finally:
            stop(process)
            log.close()
        if statuses != {202: args.requests}:
            raise SystemExit(f"bench: {name} answered {statuses}, not {args.requests} x 202")
        dumps = sorted(Path(tmp).glob("callgrind.out.*"), key=lambda p: int(p.suffix[1:]))
        if len(dumps) < 2:
            raise SystemExit(f"bench: callgrind wrote {len(dumps)} dump(s) for {name}, not 2")
        per_request = _totals(dumps[1]) // args.requests
        seconds = time.monotonic() - started
        print(f"  {name:<28} {per_request:>10,} instructions/request  ({seconds:.0f} s)")
        return per_request


def main() -> int:
    """Count both servers and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests counted per server")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        raise SystemExit("bench/instructions.py needs valgrind (apt install valgrind)")
    with tempfile.TemporaryDirectory(prefix="relay-instr-") as tmp:
        tmpdir = Path(tmp)
        (tmpdir / "routes.toml").write_text(ROUTES)
        redis_proc, redis_port = start_redis(tmpdir)
        env = {
            **os.environ,
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "RELAY_ROUTES": str(tmpdir / "routes.toml"),
            "RELAY_LOG_LEVEL": "info",
            "RELAY_LOG_FORMAT": "json",
            "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))),
        }
        print(
            f"receiver instructions per request (callgrind): body {len(BODY)} B, "
            f"{args.connections} connections, {args.requests} requests counted after "
            f"{WARM_UP} of warm-up"
        )
        try:
            bare_app = [PYTHON, "-c", BARE_APP, "{port}", "1"]  # port, processes; no /healthz
            bare = count("bare aiohttp", bare_app, env, "/", args)
            relay_serve = [PYTHON, "-m", "relay", "serve", "--port", "{port}"]
            relay = count("relay serve (1 process)", relay_serve, env, "/healthz", args)
        finally:
            stop(redis_proc)
    print(f"  bare / relay work ratio       {bare / relay:.2f}  (throughput goal: 0.50)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
