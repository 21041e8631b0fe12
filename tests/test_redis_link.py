"""RedisLink: the intake's own connection, against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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


@asynccontextmanager
async def own_server(make_redis: Any) -> AsyncIterator[tuple[Any, RedisLink]]:
    """A started redis-server of the test's own (to stop and start) and a link to it."""
    server = make_redis()
    server.start()
    c = clients.async_client(server.url, clients.intake(1.0))
    link = RedisLink(c)
    try:
        yield server, link
    finally:
        await link.drop()
        await c.aclose()


async def test_a_stopped_server_fails_the_send_and_a_restarted_one_is_used_again(
    make_redis: Any,
) -> None:
    async with own_server(make_redis) as (server, link):
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


def script_calls(client: redis.Redis) -> tuple[int, int]:
    """(EVAL calls, EVALSHA calls) the server has run since its statistics were reset."""
    stats = client.info("commandstats")
    return (
        stats.get("cmdstat_eval", {}).get("calls", 0),
        stats.get("cmdstat_evalsha", {}).get("calls", 0),
    )


ECHO = "return ARGV[1]"


async def test_a_script_goes_whole_once_per_connection_then_by_digest(
    client: aioredis.Redis, redis_client: redis.Redis
) -> None:
    redis_client.config_resetstat()
    link = RedisLink(client)
    for n in range(3):
        await link.send([("EVAL", ECHO, 0, f"call {n}")])
        assert await link.read() == f"call {n}".encode()
    assert script_calls(redis_client) == (1, 2)
    # A new connection may reach a server that never saw the script: whole again.
    await link.drop()
    await link.send([("EVAL", ECHO, 0, "again"), ("EVAL", ECHO, 0, "twice")])
    assert [await link.read(), await link.read()] == [b"again", b"twice"]
    assert script_calls(redis_client) == (2, 3)
    await link.drop()


async def test_a_flushed_script_cache_answers_noscript_and_the_script_goes_whole_again(
    client: aioredis.Redis, redis_client: redis.Redis
) -> None:
    link = RedisLink(client)
    await link.send([("EVAL", ECHO, 0, "first")])
    assert await link.read() == b"first"
    redis_client.script_flush()
    await link.send([("EVAL", ECHO, 0, "lost"), ("PING",)])
    with pytest.raises(redis.exceptions.NoScriptError):
        await link.read()
    with pytest.raises(redis.ConnectionError, match="dropped"):  # the PING's reply is not read
        await link.read()
    await link.send([("EVAL", ECHO, 0, "whole")])
    assert await link.read() == b"whole"
    await link.drop()


async def test_a_server_restarted_under_an_open_link_gets_the_script_whole(
    make_redis: Any,
) -> None:
    async with own_server(make_redis) as (server, link):
        await link.send([("EVAL", ECHO, 0, "before")])
        assert await link.read() == b"before"
        server.stop()
        server.start()  # an empty script cache behind the same address
        await asyncio.sleep(0.1)  # the loop sees the old connection's EOF
        await link.send([("EVAL", ECHO, 0, "after")])
        assert await link.read() == b"after"
