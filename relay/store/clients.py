"""The one place relay builds Redis clients, with their timeouts chosen here and named by purpose.

Every process asks for a client by purpose: `OPERATOR` for the commands a person runs (and the
health checks a monitor runs), `PROBE` for `relay dev`'s readiness polls, `WORKER` for RQ's
workers, and `intake(timeout)` for the receiver's write path.

A `redis+sentinel://` URL (relay.core.redis_url) gives the same clients through redis-py's
Sentinel support: a connection asks the Sentinels for the primary whenever it connects, so after
a failover every client finds the new primary by itself (relay.store.failover: refusals as no
primary, keep-alive against partitions; relay.store.sentinels: why no primary was found).
Clients that may re-send (workers, operators) do so with backoff for long enough to span a
failover.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import hiredis
import redis
from redis import asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.connection import HiredisRespSerializer
from redis.retry import Retry

from relay.core.redis_url import SENTINEL_SCHEMES, SentinelURL, parse_sentinel_url, scheme_of
from relay.store import failover
from relay.store.sentinels import AsyncSentinels, Sentinels

__all__ = [
    "OPERATOR",
    "PROBE",
    "WORKER",
    "Bounds",
    "async_client",
    "c_packing",
    "intake",
    "is_sentinel",
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
    #: Sentinel mode, when `retries`: how often a failed command is re-sent (with backoff from
    #: FAILOVER_BACKOFF_BASE up to FAILOVER_BACKOFF_CAP) while the primary is found again.
    failover_retries: int = 10

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
#: dequeue wait; a shorter one would break every idle wait on the queue. Under Sentinel they keep
#: re-sending for about half a minute, longer than a failover takes, rather than fail a job.
WORKER = Bounds(connect=None, read=None, failover_retries=60)

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


#: Sentinel mode: backoff between re-sends while the primary is found again (seconds). The cap
#: bounds how late a client notices a newly elected primary.
FAILOVER_BACKOFF_BASE = 0.05
FAILOVER_BACKOFF_CAP = 0.5
#: Sentinel mode: connect timeout where the bounds leave it to the OS (minutes for a host that
#: is cut off), and the bounds of each question to a Sentinel (one dead Sentinel must not hold
#: up finding the primary through the others).
SENTINEL_CONNECT = 1.0
SENTINEL_QUERY = 1.0


def is_sentinel(url: str) -> bool:
    """Whether `url` names Sentinels (redis+sentinel:// or rediss+sentinel://)."""
    return scheme_of(url) in SENTINEL_SCHEMES


def sync_client(url: str, bounds: Bounds) -> redis.Redis:
    """A redis-py client for `url` within `bounds` (through the Sentinels for a Sentinel URL)."""
    options = bounds.options()
    if is_sentinel(url):
        parsed = parse_sentinel_url(url)
        if bounds.retries:
            options["retry"] = Retry(_failover_backoff(), bounds.failover_retries)
        else:
            options["retry"] = Retry(NoBackoff(), 0)
        asked = _sentinel_options(parsed, Retry(NoBackoff(), 0))
        sentinel = Sentinels(parsed.sentinels, sentinel_kwargs=asked)  # type: ignore[no-untyped-call]
        cls = failover.PrimarySSLConnection if parsed.tls else failover.PrimaryConnection
        return sentinel.master_for(  # type: ignore[no-any-return,no-untyped-call]
            parsed.service,
            redis_class=_SentinelClient,
            connection_class=cls,
            **_primary_options(parsed, bounds, options),
        )
    if not bounds.retries:
        options["retry"] = Retry(NoBackoff(), 0)
    return redis.Redis.from_url(url, **options)


def async_client(url: str, bounds: Bounds) -> aioredis.Redis:
    """A redis.asyncio client for `url` within `bounds`, packing its commands with hiredis."""
    options = bounds.options()
    if is_sentinel(url):
        parsed = parse_sentinel_url(url)
        if bounds.retries:
            options["retry"] = AsyncRetry(_failover_backoff(), bounds.failover_retries)
        else:
            options["retry"] = AsyncRetry(NoBackoff(), 0)
        asked = _sentinel_options(parsed, AsyncRetry(NoBackoff(), 0))
        sentinel = AsyncSentinels(parsed.sentinels, sentinel_kwargs=asked)  # type: ignore[no-untyped-call]
        cls = failover.AsyncPrimarySSLConnection if parsed.tls else failover.AsyncPrimaryConnection
        client: aioredis.Redis = sentinel.master_for(
            parsed.service,
            redis_class=_AsyncSentinelClient,
            connection_class=cls,
            **_primary_options(parsed, bounds, options),
        )
    else:
        if not bounds.retries:
            options["retry"] = AsyncRetry(NoBackoff(), 0)
        client = aioredis.Redis.from_url(url, **options)
    pool = client.connection_pool
    # The URL chose the class (TCP, TLS or Unix socket); no connection exists yet.
    pool.connection_class = c_packing(pool.connection_class)
    return client


class _SentinelClient(redis.Redis):
    """A client of the primary that also closes its connections to the Sentinels."""

    def close(self) -> None:
        """Close the primary's pool, then the Sentinel clients behind it."""
        super().close()
        self.connection_pool.sentinel_manager.close()  # type: ignore[attr-defined]


class _AsyncSentinelClient(aioredis.Redis):
    """The redis.asyncio _SentinelClient."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the primary's pool, then the Sentinel clients behind it."""
        await super().aclose(close_connection_pool)
        await self.connection_pool.sentinel_manager.aclose()  # type: ignore[attr-defined]


def _failover_backoff() -> ExponentialWithJitterBackoff:
    return ExponentialWithJitterBackoff(base=FAILOVER_BACKOFF_BASE, cap=FAILOVER_BACKOFF_CAP)


def _sentinel_options(parsed: SentinelURL, retry: Any) -> dict[str, Any]:
    """How relay talks to the Sentinels themselves: short bounds and no re-send (the next
    Sentinel is asked instead), their own credentials."""
    options: dict[str, Any] = {
        "socket_connect_timeout": SENTINEL_QUERY,
        "socket_timeout": SENTINEL_QUERY,
        "retry": retry,
    }
    if parsed.sentinel_password is not None:
        options["password"] = parsed.sentinel_password.reveal()
    if parsed.sentinel_username:
        options["username"] = parsed.sentinel_username
    if parsed.tls:
        options.update(ssl=True, **_tls_options(parsed))
    return options


def _primary_options(
    parsed: SentinelURL, bounds: Bounds, options: dict[str, Any]
) -> dict[str, Any]:
    """The keyword arguments of `master_for`: the bounds' options, the URL's db, credentials
    and TLS options, and the keep-alive that notices a partitioned primary."""
    primary = dict(options, db=parsed.db)
    if primary.get("socket_connect_timeout") is None:
        primary["socket_connect_timeout"] = SENTINEL_CONNECT
    primary["socket_keepalive"] = True
    primary["socket_keepalive_options"] = failover.keepalive_options()
    if parsed.password is not None:
        primary["password"] = parsed.password.reveal()
    if parsed.username:
        primary["username"] = parsed.username
    primary.update(_tls_options(parsed))
    return primary


def _tls_options(parsed: SentinelURL) -> dict[str, Any]:
    return {name: value for name, value in parsed.tls_options}


_HIREDIS = HiredisRespSerializer()


def c_packing(base: type[AbstractConnection]) -> type[AbstractConnection]:
    """`base` packing its commands with hiredis, in C, as redis-py's sync client does.

    redis.asyncio packs commands in Python, a large part of what the receiver's commit costs
    per event. The bytes sent are the same (tests/test_clients.py).
    """

    def pack_command(self: AbstractConnection, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str) and " " not in first:
            # A one-word command (the commit's EVAL): hiredis packs the arguments as they are,
            # without redis-py's pass over each of them in Python (which only turns a
            # bytearray into bytes, and which hiredis refuses: TypeError).
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass
        return _HIREDIS.pack(*args)  # type: ignore[no-any-return]

    return type(f"CPacked{base.__name__}", (base,), {"pack_command": pack_command})
