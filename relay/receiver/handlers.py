"""The receiver's own endpoints: GET /healthz, /readyz and /metrics."""

from __future__ import annotations

import asyncio

import redis
from aiohttp import web

from relay.core.metrics import CONTENT_TYPE, render
from relay.receiver.state import REDIS, ROUTES, SCRAPE

#: How long /readyz waits for PING before calling Redis unreachable.
READY_TIMEOUT = 1.0


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; the Redis-backed gauges are read in a thread."""
    body = await asyncio.to_thread(render, request.app[SCRAPE])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when Redis answers PING and routes are loaded; 503 with the reason otherwise."""
    table = request.app[ROUTES].table  # loaded and validated before the app was built
    connection = request.app[REDIS]
    try:
        await asyncio.wait_for(asyncio.to_thread(connection.ping), READY_TIMEOUT)
    except (redis.RedisError, OSError, TimeoutError) as exc:
        reason = f"Redis does not answer PING: {type(exc).__name__}"
        return web.json_response({"status": "unready", "reason": reason}, status=503)
    return web.json_response(
        {"status": "ok", "sources": len(table.sources), "routes": len(table.routes)}
    )
