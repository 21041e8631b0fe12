"""Asking the Sentinels for the primary, with a "no primary found" that says why.

redis-py's `discover_master` asks each Sentinel in turn and, when none names a primary, raises
MasterNotFoundError listing each Sentinel by the repr of its client and each failure by the
repr of the exception. Since redis-py 7 an exception's repr is only its kind
(`network:ConnectionError`), so the reason is lost: with a wrong `ssl_ca_certs` relay printed
a screenful of connection-pool settings and never the words "certificate verify failed".
These subclasses ask the same way (the same order, the Sentinel that answered moved first) and
name each Sentinel by its address and each failure by its message.
"""

from __future__ import annotations

from typing import Any, cast

import redis
from redis import asyncio as aioredis
from redis.asyncio import sentinel as aiosentinel
from redis.exceptions import ConnectionError, RedisError, TimeoutError
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

__all__ = [
    "AsyncSentinels",
    "Sentinels",
    "is_sentinel_client",
    "named_primary",
    "no_primary_found",
    "replica_priorities",
]

#: In an error from Python's ssl module when the peer's certificate chain or name is refused.
_VERIFY_FAILED = "CERTIFICATE_VERIFY_FAILED"


def no_primary_found(service: str, errors: list[str]) -> str:
    """The message of MasterNotFoundError: the service, then why each Sentinel failed."""
    if not errors:
        return f"no Sentinel names a primary for the service {service!r}"
    message = f"no Sentinel could be asked for the primary of {service!r}: " + "; ".join(errors)
    if any(_VERIFY_FAILED in error for error in errors):
        message += (
            " (TLS: the Sentinels' certificates are not signed by a CA in ssl_ca_certs, or do "
            "not name the address in REDIS_URL)"
        )
    return message


def _failure(sentinel: Any, exc: BaseException) -> str:
    kwargs = sentinel.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}: {str(exc).rstrip('.')}"


class Sentinels(Sentinel):
    """redis-py's Sentinel whose MasterNotFoundError names each Sentinel's failure."""

    def discover_master(self, service_name: str) -> tuple[str, int]:
        """The primary's (host, port) as the first Sentinel that knows it names it."""
        errors: list[str] = []
        for number, sentinel in enumerate(self.sentinels):
            try:
                # A dict by service name in the RESP2 replies relay asks for, as redis-py's own
                # discover_master assumes (the stubs also allow the list of other reply modes).
                masters = cast(dict[str, Any], sentinel.sentinel_masters())
            except (ConnectionError, TimeoutError) as exc:
                errors.append(_failure(sentinel, exc))
                continue
            state = masters.get(service_name)
            if state and self.check_master_state(state, service_name):  # type: ignore[no-untyped-call]
                self.sentinels[0], self.sentinels[number] = sentinel, self.sentinels[0]
                return state["ip"], state["port"]
        raise MasterNotFoundError(no_primary_found(service_name, errors))


class AsyncSentinels(aiosentinel.Sentinel):
    """The redis.asyncio Sentinels."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        """The primary's (host, port) as the first Sentinel that knows it names it."""
        errors: list[str] = []
        for number, sentinel in enumerate(self.sentinels):
            try:
                masters = cast(dict[str, Any], await sentinel.sentinel_masters())
            except (ConnectionError, TimeoutError) as exc:
                errors.append(_failure(sentinel, exc))
                continue
            state = masters.get(service_name)
            if state and self.check_master_state(state, service_name):
                self.sentinels[0], self.sentinels[number] = sentinel, self.sentinels[0]
                return state["ip"], state["port"]
        raise aiosentinel.MasterNotFoundError(no_primary_found(service_name, errors))


def is_sentinel_client(client: aioredis.Redis) -> bool:
    """Whether `client` finds its primary through Sentinels."""
    return isinstance(client.connection_pool, aiosentinel.SentinelConnectionPool)


async def named_primary(client: aioredis.Redis) -> tuple[str, int] | None:
    """The primary the Sentinels behind `client` name now; None when `client` does not go
    through Sentinels, or none of them names one (it cannot be asked, or no primary is known).

    Asked of the Sentinels directly, not through the pool's `get_master_address`, which also
    drops the pool's idle connections when the answer changed.
    """
    pool = client.connection_pool
    if not isinstance(pool, aiosentinel.SentinelConnectionPool):
        return None
    try:
        host, port = await pool.sentinel_manager.discover_master(pool.service_name)
    except (RedisError, OSError):  # MasterNotFoundError included: nobody names one
        return None
    return str(host), int(port)


def replica_priorities(client: redis.Redis) -> tuple[int, ...]:
    """The `replica-priority` of each replica the Sentinels list for `client`'s service, as the
    first Sentinel that answers says; none without Sentinels, or when none answers."""
    pool = client.connection_pool
    if not isinstance(pool, SentinelConnectionPool):
        return ()
    for sentinel in pool.sentinel_manager.sentinels:
        try:
            replicas = cast(list[dict[str, Any]], sentinel.sentinel_slaves(pool.service_name))
        except (RedisError, OSError):
            continue
        return tuple(int(replica.get("slave-priority", 100)) for replica in replicas)
    return ()
