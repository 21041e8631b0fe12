"""RedisLink: the intake's own connection, against a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from redis import asyncio as aioredis

from relay.receiver.link import RedisLink
from relay.store import clients


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = clients.async_client(redis_url, clients.intake(3.0))
    yield c
    await c.aclose()


async def test_commands_go_in_one_write_and_replies_come_in_order(
    client: aioredis.Redis,
) -> None:
    link = RedisLink(client)
    await link.send([("SET", "link:a", "1"), ("INCR", "link:a"), ("GET", "link:a")])
    # Raw replies: the link applies none of redis-py's response callbacks.
    assert [await link.read() for _ in range(3)] == [b"OK", 2, b"2"]
    await link.drop()


async def test_an_error_reply_is_raised_and_drops_the_connection(
    client: aioredis.Redis,
) -> None:
    link = RedisLink(client)
    await link.send([("NO-SUCH-COMMAND",), ("PING",)])
    with pytest.raises(redis.ResponseError):
        await link.read()
    # The PING's reply is never read as an answer to anything else: the connection is gone.
    with pytest.raises(redis.ConnectionError, match="dropped"):
        await link.read()
    await link.send([("PING",)])
    assert await link.read() == b"PONG"
    await link.drop()


async def test_a_stopped_server_fails_the_send_and_a_restarted_one_is_used_again(
    make_redis: Any,
) -> None:
    server = make_redis()
    server.start()
    c = clients.async_client(server.url, clients.intake(1.0))
    link = RedisLink(c)
    try:
        await link.send([("PING",)])
        assert await link.read() == b"PONG"
        server.stop()
        await link.send([("PING",)])  # before the loop has seen the EOF: the write goes out
        with pytest.raises(redis.ConnectionError):
            await link.read()
        # Once the loop has seen it, the send itself fails: connecting again is refused.
        with pytest.raises(redis.ConnectionError):
            await link.send([("PING",)])
        server.start()
        await link.send([("PING",)])
        assert await link.read() == b"PONG"
    finally:
        await link.drop()
        await c.aclose()
