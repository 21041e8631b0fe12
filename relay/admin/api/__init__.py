"""The management API: JSON under /api/v1, described by OpenAPI 3.1 at /api/openapi.json.

Each module declares its operations (relay.admin.api.spec.Operation); `OPERATIONS` is all of
them, and both the routes and the document come from it.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from relay.admin.api import dead_letters, events, meta, targets
from relay.admin.api.jobs import job_tasks
from relay.admin.api.spec import OPENAPI_PATH, Operation, add_operations, openapi_document

__all__ = ["OPENAPI_PATH", "OPERATIONS", "add_api_routes", "openapi_document"]

OPERATIONS: tuple[Operation, ...] = (
    *events.OPERATIONS,
    *dead_letters.OPERATIONS,
    *targets.OPERATIONS,
    *meta.OPERATIONS,
)


def add_api_routes(app: web.Application) -> None:
    """Add every /api route (and the job runner's lifetime) to the admin app."""
    add_operations(app, OPERATIONS)
    document = orjson.dumps(openapi_document(OPERATIONS))

    async def openapi(_: web.Request) -> web.StreamResponse:
        return web.Response(body=document, content_type="application/json")

    app.router.add_get(OPENAPI_PATH, openapi, allow_head=False)
    app.cleanup_ctx.append(job_tasks)
