"""The management API: JSON under /api/v1, described by OpenAPI 3.1 at /api/openapi.json."""

from __future__ import annotations

import asyncio

from aiohttp import web

from relay.admin.errors import json_response
from relay.admin.state import REDIS, ROUTES
from relay.ops import deliveries as ops

__all__ = ["add_api_routes"]


async def _status(request: web.Request) -> web.StreamResponse:
    app = request.app
    targets = tuple(app[ROUTES]().targets)
    status = await asyncio.to_thread(ops.collect_status, app[REDIS], targets)
    return json_response(status.to_json())


def add_api_routes(app: web.Application) -> None:
    """Add every /api route to the admin app."""
    app.router.add_get("/api/v1/status", _status, allow_head=False)
