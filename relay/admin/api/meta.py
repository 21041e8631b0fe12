"""GET /api/v1/sources, GET /api/v1/status and GET /api/v1/routes."""

from __future__ import annotations

from typing import Any

import redis
from aiohttp import web

from relay.admin.api.common import in_thread, routes_of
from relay.admin.api.config_docs import routes_document, source_config
from relay.admin.api.spec import Operation
from relay.admin.errors import json_response
from relay.core.times import format_time
from relay.ops import deliveries as ops
from relay.ops.events import EventSummary, latest_by_source

#: Index entries read at most to find each source's newest event.
LAST_EVENT_SCAN = 10_000


def _sources(conn: redis.Redis, configured: tuple[str, ...]) -> tuple[list[Any], int]:
    counters = {s.name: s for s in ops.source_statuses(conn)}
    names = list(configured) + sorted(set(counters) - set(configured))
    latest, scanned = latest_by_source(conn, names, max_scan=LAST_EVENT_SCAN)
    return [(name, counters.get(name), latest.get(name)) for name in names], scanned


def _last(summary: EventSummary | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    return {
        "id": summary.id,
        "received": format_time(summary.received_at),
        "received_at": summary.received_at,
        "type": summary.type,
    }


async def list_sources_handler(request: web.Request) -> web.StreamResponse:
    """Every source: counts, its newest event, and its settings (secrets by variable name)."""
    table = routes_of(request)
    rows, scanned = await in_thread(request, _sources, tuple(table.sources))
    sources = [
        {
            "name": name,
            "configured": name in table.sources,
            "received": counts.received if counts else 0,
            "duplicates": counts.duplicates if counts else 0,
            "unrouted": counts.unrouted if counts else 0,
            "last_event": _last(latest),
            "config": source_config(table.sources[name]) if name in table.sources else None,
        }
        for name, counts, latest in rows
    ]
    return json_response({"sources": sources, "last_event_scanned": scanned})


async def status_handler(request: web.Request) -> web.StreamResponse:
    """What `relay status` shows: queue, workers, per-target and per-source figures."""
    targets = tuple(routes_of(request).targets)
    status = await in_thread(request, ops.collect_status, targets)
    return json_response(status.to_json())


async def routes_handler(request: web.Request) -> web.StreamResponse:
    """The routes.toml in force, as data; secrets by the name of their variable only."""
    return json_response(routes_document(routes_of(request)))


OPERATIONS = (
    Operation(
        "GET",
        "/api/v1/sources",
        "listSources",
        "Every source: received, duplicates, unrouted, its newest event, its settings",
        list_sources_handler,
        "sources",
        {200: ("the sources, those of routes.toml first", "SourceList")},
        description=(
            f"`last_event` is looked for among the newest {LAST_EVENT_SCAN:,} events; null when "
            "a source has none there."
        ),
    ),
    Operation(
        "GET",
        "/api/v1/status",
        "getStatus",
        "What `relay status` shows",
        status_handler,
        "status",
        {200: ("queue depth, workers, per-target and per-source figures", "Status")},
    ),
    Operation(
        "GET",
        "/api/v1/routes",
        "getRoutes",
        "The routes.toml in force, as data (secrets as variable names only)",
        routes_handler,
        "status",
        {200: ("sources, targets and routes", "Routes")},
    ),
)
