"""The redis-server `relay dev` starts when REDIS_URL is unset, and the polls that wait for it."""

from __future__ import annotations

import os
from pathlib import Path

from rq import Worker

from relay.store.clients import PROBE, sync_client


def redis_server_args(binary: str, port: int, data_dir: Path) -> list[str]:
    """The command line of the dev redis-server."""
    return [
        binary,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(data_dir),
        "--appendonly", "yes",  # a dev restart keeps queued events and retries
        "--appendfsync", "everysec",
        "--save", "",
        "--maxmemory-policy", "noeviction",  # never evict queued work
        "--pidfile", str(data_dir / "redis.pid"),
        "--logfile", str(data_dir / "redis.log"),
        "--daemonize", "no",
    ]  # fmt: skip


def stale_redis(data_dir: Path) -> int | None:
    """The pid of a redis-server an earlier dev run left on this data dir, if still alive."""
    try:
        pid = int((data_dir / "redis.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid  # no /proc: trust the pidfile
    # The program's own name, not any word of its command line: a process merely started with
    # "redis" among its arguments (a test runner, an editor) is not the dev Redis.
    program = cmdline.split(b"\0", 1)[0].split(b" ", 1)[0].rsplit(b"/", 1)[-1]
    return pid if program.startswith(b"redis-server") else None


def redis_answers(url: str) -> bool:
    """Whether the Redis at `url` answers PING."""
    with sync_client(url, PROBE) as client:
        return bool(client.ping())


def worker_registered(url: str) -> bool:
    """Whether at least one RQ worker is registered on the Redis at `url`."""
    with sync_client(url, PROBE) as client:
        return int(Worker.count(connection=client)) > 0
