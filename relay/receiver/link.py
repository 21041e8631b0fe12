"""The intake's own Redis connection: a group of commands in one write, replies read in order.

redis.asyncio's pipeline wraps a round trip in a connection pool, MULTI/EXEC, a retry wrapper
and a reply per queued command; for the receiver's commit, one atomic script call per batch,
that machinery costs more than the call. The link holds one connection outside any pool and does
what the pool would: connect when needed, replace a connection the server closed (a Redis
restart while the receiver was idle), and drop the connection on any error, so that no reply
of a failed round trip can ever be read as the next one's. A failure to connect (under Sentinel:
no primary known yet, or the old one gone) is `NotSent`: nothing was written, so the intake may
send the batch again.

A script goes out whole (EVAL) once per connection, then by its digest (EVALSHA): the commit
script is about 5 KB, which every batch would otherwise write, and Redis would hash again. A
new connection (a restart, a failover: a server whose script cache may be empty) starts with
EVAL again. A server whose cache was flushed meanwhile answers NOSCRIPT, which ran nothing: the
connection is dropped like after any error, and the caller may send the same again.

The bytes go straight to the connection's stream and the replies are parsed by a hiredis
reader of the link's own: redis-py's send wraps every write in `asyncio.wait_for` (a task of
its own) and every read in a timeout and its parser's layers, about 30 µs of the receiver's CPU
per round trip, which every batch paid. The link keeps what mattered of it: the connection's
socket timeout bounds a read, and a write that does not go out at once; an error reply is raised
as redis-py raises it (READONLY as ReadOnlyError, NOSCRIPT as NoScriptError, ...).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

import hiredis
import redis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

from relay.store.failover import AsyncPrimaryConnection, NotSent, is_not_primary, refused


class RedisLink:
    """One connection made from `client`'s pool settings (URL, timeouts, TLS), used alone."""

    def __init__(self, client: Redis) -> None:
        self._pool = client.connection_pool
        self._connection: AbstractConnection | None = None
        #: Script → digest, for the scripts sent whole on this connection (EVALSHA from then on).
        self._loaded: dict[str, str] = {}
        self._replies: Any = None  # the connection's hiredis.Reader (made when it connects)
        self._timeout: float | None = None  # the connection's socket timeout

    async def send(self, commands: Sequence[Sequence[Any]]) -> None:
        """Write `commands` in one go; read each reply with `read`, in order.

        NotSent when no connection could be made (nothing was written).
        """
        try:
            connection = await self._ready()
        except (redis.RedisError, OSError) as exc:
            raise NotSent(f"cannot connect to Redis: {exc}") from exc
        loaded = self._loaded
        commands = [self._by_digest(c, loaded) if c[0] == "EVAL" else c for c in commands]
        try:
            writer = connection._writer
            if writer is None or writer.transport.is_closing():
                raise redis.ConnectionError("the connection to Redis was closed")
            writer.writelines(connection.pack_commands(commands))
            if writer.transport.get_write_buffer_size():
                # Not all of it went out at once (a large batch, or a server not reading).
                async with asyncio.timeout(self._timeout):
                    await writer.drain()
        except BaseException as exc:
            await self.drop()
            error = _redis_error(exc, "writing to")
            if error is exc:
                raise
            raise error from exc

    async def read(self) -> Any:
        """The next reply; an error reply is raised (redis.ResponseError), as any other error.

        After any error the connection is dropped: replies still due on it are never read.
        """
        connection, replies = self._connection, self._replies
        if connection is None:
            raise redis.ConnectionError("the link was dropped; send again")
        try:
            reply = replies.gets()
            if reply is False:  # not all here yet: read (a reply already read costs no wait)
                stream = connection._reader
                if stream is None:
                    raise redis.ConnectionError("the connection to Redis was closed")
                async with asyncio.timeout(self._timeout):
                    while reply is False:
                        data = await stream.read(READ_SIZE)
                        if not data:
                            raise redis.ConnectionError("Redis closed the connection")
                        replies.feed(data)
                        reply = replies.gets()
        except BaseException as exc:
            await self.drop()
            error = _redis_error(exc, "reading from")
            if error is exc:
                raise
            raise error from exc
        if isinstance(reply, redis.ResponseError):
            await self.drop()
            if isinstance(connection, AsyncPrimaryConnection) and is_not_primary(reply):
                raise refused(reply) from reply  # as the Sentinel connection's own read does
            raise reply
        return reply

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) of the server the connection is open to; None while there is none
        (or while it is still connecting)."""
        connection = self._connection
        if connection is None or not connection.is_connected:
            return None
        host, port = getattr(connection, "host", None), getattr(connection, "port", None)
        return (str(host), int(port)) if host is not None and port is not None else None

    @staticmethod
    def _by_digest(command: Sequence[Any], loaded: dict[str, str]) -> Sequence[Any]:
        """EVALSHA for a script already sent on this connection; else the EVAL itself, and
        the script counts as sent (an EVAL whose reply is lost drops the connection)."""
        script = command[1]
        digest = loaded.get(script)
        if digest is None:
            loaded[script] = _digest(script)
            return command
        return ("EVALSHA", digest, *command[2:])

    async def drop(self) -> None:
        """Close the connection (if any); the next `send` opens a new one (`_fresh`)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.disconnect(nowait=True)

    async def _ready(self) -> AbstractConnection:
        connection = self._connection
        if connection is None:
            connection = self._connection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            if not connection.is_connected:
                await connection.connect()
                self._fresh(connection)
            elif await connection.can_read():
                # Data nobody asked for, or EOF: the server closed it (a restart). What
                # redis-py's pool does on checkout: reconnect before sending anything.
                await connection.disconnect()
                await connection.connect()
                self._fresh(connection)
        except BaseException:
            await self.drop()
            raise
        return connection

    def _fresh(self, connection: AbstractConnection) -> None:
        """A new connection: no script sent on it yet, no reply read."""
        self._loaded = {}
        # Error replies become redis-py's exceptions, by redis-py's own mapping.
        self._replies = hiredis.Reader(replyError=connection._parser.parse_error)
        self._timeout = connection.socket_timeout


#: Bytes asked of the stream per read: a batch's replies are small.
READ_SIZE = 65536


def _redis_error(exc: BaseException, doing: str) -> BaseException:
    """redis-py's exception for a failed write or read (as its connection raises them)."""
    if isinstance(exc, TimeoutError):  # asyncio.timeout's, on Python 3.11+
        return redis.TimeoutError(f"Timeout {doing} Redis")
    if isinstance(exc, OSError):
        return redis.ConnectionError(f"Error {doing} Redis: {exc}")
    return exc


#: Script → its SHA-1 in hex, as Redis names it (a few scripts, each hashed once).
_DIGESTS: dict[str, str] = {}


def _digest(script: str) -> str:
    digest = _DIGESTS.get(script)
    if digest is None:
        # SHA-1 is what Redis names scripts by; nothing here relies on it being collision-proof.
        digest = _DIGESTS[script] = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
    return digest
