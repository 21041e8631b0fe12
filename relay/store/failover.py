"""Riding out a Sentinel failover: "this server is no primary" answers become "find it again".

redis-py's Sentinel connections ask the Sentinels for the primary each time they connect, and
turn a READONLY answer (the server we still talk to was demoted) into a ConnectionError after
disconnecting. relay's connections do the same for every answer that means "not written here,
ask again": READONLY, NOREPLICAS (a primary cut off from its replicas refuses writes under
`min-replicas-to-write`) and MASTERDOWN (a replica that lost its primary). They raise
`NotPrimary`, a ConnectionError, so redis-py's retry (workers, operator commands) reconnects
through the Sentinels with backoff, and the receiver, which never re-sends a write blindly,
knows that this one provably did not land and may be sent again (`not_written`).

Every (re)connection asks the Sentinels for the address first. redis-py 8 reconnects a dropped
connection inside its command retry without doing so, straight back to the address it had: the
old primary, refused or silent until the retries run out (redis/redis-py#3874, still open); a
worker blocked in its dequeue then stayed stuck for half a minute after a failover.

TCP keep-alive with a short TCP_USER_TIMEOUT: a primary cut off by a network partition
answers nothing, and without it a blocked read (RQ's idle dequeue) would wait for its socket
timeout before anyone asked the Sentinels again.
"""

from __future__ import annotations

import socket
from typing import Any

import redis
from redis.asyncio.sentinel import SentinelManagedConnection as AsyncSentinelConnection
from redis.connection import SSLConnection
from redis.exceptions import BusyLoadingError, MasterDownError, ReadOnlyError, ResponseError
from redis.sentinel import SentinelManagedConnection

__all__ = [
    "NOT_PRIMARY_CODES",
    "AsyncPrimaryConnection",
    "AsyncPrimarySSLConnection",
    "NotPrimary",
    "NotSent",
    "PrimaryConnection",
    "PrimarySSLConnection",
    "is_not_primary",
    "keepalive_options",
    "not_written",
    "refused",
]

#: Error codes that mean the command was refused, not run, because the server is no writable
#: primary right now.
NOT_PRIMARY_CODES = ("READONLY", "NOREPLICAS", "MASTERDOWN")

#: Seconds of unacknowledged data (or of unanswered keep-alive probes) before the kernel gives a
#: connection up: a few, so a partitioned primary is left well within a failover's time.
USER_TIMEOUT = 3.0
KEEPALIVE_IDLE = 1  # seconds idle before the first probe
KEEPALIVE_INTERVAL = 1  # seconds between probes
KEEPALIVE_COUNT = 3


class NotPrimary(redis.ConnectionError):
    """The server refused a write as no primary (READONLY, NOREPLICAS, MASTERDOWN): nothing
    was written; ask the Sentinels for the primary and send it again."""


class NotSent(redis.ConnectionError):
    """No connection could be made (no primary known, or it refused): nothing was sent."""


def is_not_primary(exc: BaseException) -> bool:
    """Whether an error reply says "no writable primary here" (see NOT_PRIMARY_CODES)."""
    if isinstance(exc, NotPrimary):
        return True
    if not isinstance(exc, ResponseError):
        return False
    if isinstance(exc, ReadOnlyError | MasterDownError):
        return True  # redis-py strips the code of the errors it has a class for
    return str(exc).split(" ", 1)[0] in NOT_PRIMARY_CODES


def not_written(exc: BaseException) -> bool:
    """Whether a failed write provably did not land, so that sending it again is safe.

    True for a refusal as no primary, for a server still loading its data, and for a failure
    to connect (nothing was sent). False for anything that may have happened after the
    command reached a server (a timeout, a connection lost while waiting for the reply).
    """
    return isinstance(exc, NotSent | BusyLoadingError) or is_not_primary(exc)


def keepalive_options() -> dict[int, int]:
    """TCP options for Sentinel-mode connections (Linux names; left out where missing)."""
    wanted = {
        "TCP_KEEPIDLE": KEEPALIVE_IDLE,
        "TCP_KEEPINTVL": KEEPALIVE_INTERVAL,
        "TCP_KEEPCNT": KEEPALIVE_COUNT,
        "TCP_USER_TIMEOUT": int(USER_TIMEOUT * 1000),
    }
    return {getattr(socket, k): v for k, v in wanted.items() if hasattr(socket, k)}


def refused(exc: ResponseError) -> NotPrimary:
    """The NotPrimary a "no primary here" refusal becomes on a Sentinel-managed connection."""
    return NotPrimary(f"the server is no writable primary ({exc}); asking the Sentinels again")


class PrimaryConnection(SentinelManagedConnection):
    """A Sentinel-managed connection to the primary that raises NotPrimary (see the module)."""

    def _connect_retry(self) -> None:
        if self._sock:
            return
        self.connect_check_health(
            check_health=self.connection_pool.check_connection, retry_socket_connect=False
        )

    def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        """Connect to the primary the Sentinels name now (one attempt: callers retry)."""
        if self._sock:
            return
        self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(check_health=check_health, retry_socket_connect=False)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        """The reply; a "no primary here" refusal disconnects and raises NotPrimary."""
        try:
            # Past SentinelManagedConnection's own READONLY handling: ours covers it.
            return super(SentinelManagedConnection, self).read_response(*args, **kwargs)
        except ResponseError as exc:
            if not is_not_primary(exc):
                raise
            self.disconnect()  # type: ignore[no-untyped-call]
            raise refused(exc) from exc


class PrimarySSLConnection(PrimaryConnection, SSLConnection):
    """PrimaryConnection over TLS (rediss+sentinel://)."""


class AsyncPrimaryConnection(AsyncSentinelConnection):
    """The redis.asyncio PrimaryConnection."""

    async def _connect_retry(self) -> None:
        if self._reader:
            return
        await self.connect_check_health(
            check_health=self.connection_pool.check_connection, retry_socket_connect=False
        )

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        """Connect to the primary the Sentinels name now (one attempt: callers retry)."""
        if self.is_connected:
            return
        self.host, self.port = await self.connection_pool.get_master_address()
        await super().connect_check_health(check_health=check_health, retry_socket_connect=False)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        """The reply; a "no primary here" refusal disconnects and raises NotPrimary."""
        try:
            return await super(AsyncSentinelConnection, self).read_response(*args, **kwargs)
        except ResponseError as exc:
            if not is_not_primary(exc):
                raise
            await self.disconnect()
            raise refused(exc) from exc


class AsyncPrimarySSLConnection(AsyncPrimaryConnection, redis.asyncio.SSLConnection):
    """AsyncPrimaryConnection over TLS (rediss+sentinel://)."""
