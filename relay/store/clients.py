"""The one place relay builds Redis clients, with their timeouts chosen here and named by purpose.

Every process asks for a client by purpose: `OPERATOR` for the commands a person runs (and the
health checks a monitor runs), `PROBE` for `relay dev`'s readiness polls, `WORKER` for RQ's
workers, and `intake(timeout)` for the receiver's write path. Whatever a later Redis URL scheme
needs (TLS options, Sentinel) is added here once, not at each call site.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from redis import asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.retry import Retry

__all__ = [
    "OPERATOR",
    "PROBE",
    "WORKER",
    "Bounds",
    "async_client",
    "c_packing",
    "intake",
    "sync_client",
]


@dataclass(frozen=True)
class Bounds:
    """How long a client may wait, and whether redis-py may quietly re-send a command."""

    connect: float | None  # seconds to open a connection; None: the OS decides
    read: float | None  # seconds to wait for any reply; None: forever
    retries: bool = True  # False: a failed command is never re-sent (it may have landed)
    keepalive: bool = False
    health_check_interval: int = 0  # seconds idle before a pooled connection is PINGed first

    def options(self) -> dict[str, Any]:
        """The keyword arguments of `from_url` these bounds stand for (retry aside)."""
        options: dict[str, Any] = {
            "socket_connect_timeout": self.connect,
            "socket_timeout": self.read,
        }
        if self.keepalive:
            options["socket_keepalive"] = True
        if self.health_check_interval:
            options["health_check_interval"] = self.health_check_interval
        return options


#: Commands a person waits for (status, dead, replay, events, pause) and health checks: an
#: unreachable Redis is reported within seconds instead of hanging a terminal or a monitor.
OPERATOR = Bounds(connect=5.0, read=10.0)

#: `relay dev` polls Redis ten times a second while its children start: each poll must be short.
PROBE = Bounds(connect=1.0, read=1.0)

#: RQ's workers: no read timeout here, because RQ sets one itself just above its blocking
#: dequeue wait; a shorter one would break every idle wait on the queue.
WORKER = Bounds(connect=None, read=None)

#: Connecting to a local or same-network Redis takes well under a second; a dead host should
#: fail the receiver's batch quickly rather than hold every waiting request until the deadline.
INTAKE_CONNECT = 1.0
#: Idle intake connections are checked before use, so a Redis restart costs no failed batch.
INTAKE_HEALTH_CHECK = 30


def intake(timeout: float) -> Bounds:
    """The receiver's write path: bounded by its intake timeout, and never re-sent.

    A re-sent commit script whose first call did land would write the batch twice.
    """
    return Bounds(
        connect=min(INTAKE_CONNECT, timeout),
        read=timeout,
        retries=False,
        keepalive=True,
        health_check_interval=INTAKE_HEALTH_CHECK,
    )


def sync_client(url: str, bounds: Bounds) -> redis.Redis:
    """A redis-py client for `url` within `bounds`."""
    options = bounds.options()
    if not bounds.retries:
        options["retry"] = Retry(NoBackoff(), 0)
    return redis.Redis.from_url(url, **options)


def async_client(url: str, bounds: Bounds) -> aioredis.Redis:
    """A redis.asyncio client for `url` within `bounds`, packing its commands with hiredis."""
    options = bounds.options()
    if not bounds.retries:
        options["retry"] = AsyncRetry(NoBackoff(), 0)
    client = aioredis.Redis.from_url(url, **options)
    pool = client.connection_pool
    # The URL chose the class (TCP, TLS or Unix socket); no connection exists yet.
    pool.connection_class = c_packing(pool.connection_class)
    return client


_HIREDIS = HiredisRespSerializer()


def c_packing(base: type[AbstractConnection]) -> type[AbstractConnection]:
    """`base` packing its commands with hiredis, in C, as redis-py's sync client does.

    redis.asyncio packs commands in Python, a large part of what the receiver's commit costs
    per event. The bytes sent are the same (tests/test_clients.py).
    """

    def pack_command(self: AbstractConnection, *args: Any) -> list[bytes]:
        return _HIREDIS.pack(*args)  # type: ignore[no-any-return]

    return type(f"CPacked{base.__name__}", (base,), {"pack_command": pack_command})
