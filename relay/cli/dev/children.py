"""The child processes of `relay dev`: started into one process group, stopped in order.

Every child goes into ONE process group of its own, not the terminal's: Ctrl-C reaches only
`relay dev`, which stops the receiver and the worker first (one SIGTERM each, so RQ does a warm
shutdown rather than the cold one a second signal would force) and Redis last, so the worker's
final writes land. On Linux each child also gets SIGTERM if `relay dev` dies without cleaning up.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType

import redis
import structlog

from relay.core.processes import die_with_parent

log = structlog.get_logger("relay.dev")

POLL_INTERVAL = 0.1
#: Children stopped stage by stage: what writes to Redis first, Redis last.
STOP_ORDER: tuple[tuple[str, ...], ...] = (("receiver", "worker"), ("redis-server",))


@dataclass
class ChildGroup:
    """Children of `relay dev` in one process group, stopped in order."""

    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    group: int | None = None

    def spawn(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> int:
        """Start a child in the dev process group; return its pid."""
        # SIGTERM rather than SIGKILL when dev dies: redis-server then still writes its AOF.
        orphan_guard = functools.partial(die_with_parent, signal.SIGTERM, os.getpid())
        process = subprocess.Popen(
            list(args),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            # The first child leads a new group; the others join it. Not the terminal's group:
            # Ctrl-C must reach only the supervisor, which orders the shutdown.
            process_group=0 if self.group is None else self.group,
            preexec_fn=orphan_guard if sys.platform == "linux" else None,
        )
        if self.group is None:
            self.group = process.pid
        self.children.append((name, process))
        log.debug("dev_child_started", child=name, pid=process.pid)
        return process.pid

    def exited(self) -> tuple[str, int] | None:
        """(name, exit code) of the first child that has exited, or None."""
        for name, process in self.children:
            code = process.poll()
            if code is not None:
                return name, code
        return None

    def stop(self, names: Sequence[str], timeout: float) -> None:
        """SIGTERM the named children, wait up to `timeout`, then SIGKILL what is left."""
        chosen = [(n, p) for n, p in self.children if n in names and p.poll() is None]
        for _, process in chosen:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, process in chosen:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("dev_child_killed", child=name, pid=process.pid, waited=timeout)
                process.kill()
                process.wait()

    def stop_all(self, order: Sequence[Sequence[str]], timeout: float) -> None:
        """Stop children stage by stage, then kill anything left in the group (grandchildren)."""
        for names in order:
            self.stop(names, timeout)
        self.stop([n for n, _ in self.children], timeout)
        if self.group is not None:
            # Grandchildren (RQ forks its scheduler) are not ours to wait for: kill the group
            # and poll until it is empty, bounded.
            deadline = time.monotonic() + timeout
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.group, signal.SIGKILL)
                while time.monotonic() < deadline:
                    os.killpg(self.group, 0)  # raises ProcessLookupError once the group is empty
                    time.sleep(POLL_INTERVAL)
                log.warning("dev_group_not_empty", group=self.group)


class StopRequested:
    """Records SIGINT/SIGTERM so that `relay dev`'s loop can stop everything in order."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum


def wait_until(
    ready: Callable[[], bool],
    timeout: float,
    children: ChildGroup,
    what: str,
    stop: StopRequested,
) -> str | None:
    """Poll `ready` until true or a stop is requested; else say why (a child died, time ran out)."""
    deadline = time.monotonic() + timeout
    while stop.signal is None:
        dead = children.exited()
        if dead is not None:
            return f"the {dead[0]} exited with code {dead[1]} while waiting for {what}"
        try:
            if ready():
                return None
        except (OSError, redis.RedisError):
            pass
        if time.monotonic() > deadline:
            return f"waited {timeout:g} s for {what} in vain"
        time.sleep(POLL_INTERVAL)
    return None


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on host:port right now, binding the way servers do.

    aiohttp (asyncio's create_server), redis-server and the echo targets all set SO_REUSEADDR,
    so a port held only by TIME-WAIT sockets of an earlier run is free for them; a plain bind
    would call it taken for a minute after every restart. A listening socket still makes it
    taken.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(preferred: int, host: str = "127.0.0.1") -> int:
    """`preferred` when free on host, else a port the kernel picks."""
    if preferred and port_is_free(preferred, host):
        return preferred
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def http_ok(url: str) -> bool:
    """Whether a GET of a loopback URL answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - our own URL
            return int(response.status) == 200
    except urllib.error.URLError:
        return False
