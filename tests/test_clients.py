"""relay.store.clients: every Redis client relay builds, with bounds named by purpose."""

from __future__ import annotations

import errno
import time
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import connection as aioredis_connection
from redis.asyncio.sentinel import MasterNotFoundError as AsyncMasterNotFoundError
from redis.sentinel import MasterNotFoundError

from relay.store import clients
from relay.store.sentinels import no_primary_found
from tests.support.redis_server import free_port


def kwargs(client: redis.Redis | redis.asyncio.Redis) -> dict[str, object]:
    return dict(client.connection_pool.connection_kwargs)


@pytest.mark.parametrize(
    ("bounds", "connect", "read"),
    [(clients.OPERATOR, 5.0, 10.0), (clients.PROBE, 1.0, 1.0), (clients.WORKER, None, None)],
)
def test_sync_client_carries_its_bounds(
    bounds: clients.Bounds, connect: float | None, read: float | None
) -> None:
    options = kwargs(clients.sync_client("redis://127.0.0.1:6379/3", bounds))
    assert options["socket_connect_timeout"] == connect
    assert options["socket_timeout"] == read
    assert options["db"] == 3  # the URL still chooses everything it names


def test_worker_bounds_leave_the_read_timeout_to_rq() -> None:
    # RQ sets a socket timeout just above its blocking dequeue wait; a shorter one of ours would
    # break every idle wait on the queue.
    assert clients.WORKER.read is None


def test_intake_bounds_follow_the_intake_timeout_and_never_resend() -> None:
    short, long = clients.intake(0.5), clients.intake(3.0)
    assert (short.connect, short.read) == (0.5, 0.5)  # never connect longer than the deadline
    assert (long.connect, long.read) == (clients.INTAKE_CONNECT, 3.0)
    assert not long.retries
    sync = clients.sync_client("redis://127.0.0.1:6379/0", long)
    assert sync.get_retry() is not None
    assert sync.get_retry().get_retries() == 0  # type: ignore[union-attr]
    options = kwargs(sync)
    assert options["socket_keepalive"] is True
    assert options["health_check_interval"] == clients.INTAKE_HEALTH_CHECK


async def test_async_client_carries_the_same_bounds() -> None:
    client = clients.async_client("redis://127.0.0.1:6379/0", clients.intake(2.0))
    try:
        options = kwargs(client)
        assert options["socket_timeout"] == 2.0
        assert options["socket_connect_timeout"] == clients.INTAKE_CONNECT
        assert client.get_retry() is not None
        assert client.get_retry().get_retries() == 0  # type: ignore[union-attr]
    finally:
        await client.aclose()


def test_operator_client_talks_to_a_real_redis(redis_url: str) -> None:
    with clients.sync_client(redis_url, clients.OPERATOR) as client:
        assert client.ping() is True


def test_probe_fails_fast_when_nothing_listens() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    with clients.sync_client(url, clients.PROBE) as client, pytest.raises(redis.ConnectionError):
        client.ping()
    assert time.monotonic() - started < 5  # refused at once; bounded by PROBE in any case


ONCE = clients.Bounds(connect=0.5, read=0.5, retries=False)


async def test_no_primary_found_names_each_sentinel_and_why() -> None:
    """redis-py's own message listed each Sentinel's client repr and `network:ConnectionError`,
    never the reason (relay.store.sentinels)."""
    ports = (free_port(), free_port())
    url = "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in ports) + "/relay/0"
    with clients.sync_client(url, ONCE) as client, pytest.raises(MasterNotFoundError) as caught:
        client.ping()
    aclient = clients.async_client(url, ONCE)
    try:
        with pytest.raises(AsyncMasterNotFoundError) as async_caught:
            await aclient.ping()
    finally:
        await aclient.aclose()
    for message in (str(caught.value), str(async_caught.value)):
        assert message.startswith("no Sentinel could be asked for the primary of 'relay': ")
        assert message.count(f"Error {errno.ECONNREFUSED} connecting to") == 2, message
        assert all(f"127.0.0.1:{p}: " in message for p in ports)
        assert "ssl_ca_certs" not in message  # the TLS hint only for a refused certificate


def test_no_primary_found_tells_silence_from_failures() -> None:
    assert no_primary_found("relay", []) == "no Sentinel names a primary for the service 'relay'"
    refused = "h:1: Error 1 connecting to h:1. [SSL: CERTIFICATE_VERIFY_FAILED] certificate ..."
    assert "ssl_ca_certs" in no_primary_found("relay", [refused])


# --- the asyncio client's C command packer ------------------------------------------------------


@given(
    args=st.lists(
        st.binary(max_size=40)
        | st.text(max_size=20)
        | st.integers(-(2**63), 2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.binary(max_size=8).map(bytearray)
        | st.binary(max_size=8).map(memoryview),
        max_size=8,
    )
)
def test_c_packed_commands_are_the_bytes_redis_py_would_send(args: list[Any]) -> None:
    python = aioredis_connection.Connection()
    packed = clients.c_packing(aioredis_connection.Connection)()
    for command in (("EVAL", *args), ("CONFIG GET", *args), (b"GET", *args)):
        assert b"".join(packed.pack_command(*command)) == b"".join(python.pack_command(*command))


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("redis://127.0.0.1:6379/0", aioredis_connection.Connection),
        ("rediss://127.0.0.1:6379/0", aioredis_connection.SSLConnection),
        ("unix:///tmp/redis.sock", aioredis_connection.UnixDomainSocketConnection),
    ],
)
def test_async_client_keeps_the_connection_kind_its_url_chose(url: str, base: type) -> None:
    cls = clients.async_client(url, clients.intake(1.0)).connection_pool.connection_class
    assert issubclass(cls, base)
    assert cls.pack_command is not base.pack_command
