"""Sources (`/sources`): what each source sent, its last event, duplicates and unrouted events.

Counters are `relay status`'s (relay.ops.deliveries.collect_status); the last event of each
source is the first of `relay events list --source NAME` (relay.ops.events.list_events), read
from the newest LAST_EVENT_SCAN events at most, so a quiet source costs a bounded read.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from aiohttp import web

from relay.admin.console.html import (
    cell,
    e,
    event_url,
    link,
    num_cell,
    table,
    url,
    when,
)
from relay.admin.console.layout import Viewer
from relay.admin.console.pages import Page, page, read, redis_of
from relay.admin.state import ROUTES
from relay.ops import deliveries as ops
from relay.ops.events import EventQuery, EventSummary, list_events

#: The last event of a source is looked for among this many of the newest events.
LAST_EVENT_SCAN = 5000

HEADERS = ("Source", "Kind", "Received", "Last event", "Duplicates", "Unrouted")


@dataclass(frozen=True)
class SourceRow:
    """One source: its counters, its kind in routes.toml, and its newest event."""

    counters: ops.SourceStatus
    kind: str  # "" when the source is no longer in routes.toml
    last: EventSummary | None


def read_sources(
    conn: redis.Redis, configured: Sequence[tuple[str, str]], targets: Sequence[str]
) -> list[SourceRow]:
    """Every configured source (name, kind), then any other Redis has counters for."""
    status = ops.collect_status(conn, targets)
    counters = {s.name: s for s in status.sources}
    kinds = dict(configured)
    names = [n for n, _ in configured] + sorted(set(counters) - set(kinds))
    rows = []
    for name in names:
        newest = list_events(conn, EventQuery(source=name), limit=1, max_scan=LAST_EVENT_SCAN)
        rows.append(
            SourceRow(
                counters=counters.get(name, ops.SourceStatus(name)),
                kind=kinds.get(name, ""),
                last=newest.events[0] if newest.events else None,
            )
        )
    return rows


def _row(row: SourceRow, now: float) -> str:
    c = row.counters
    name = link(url("/events", {"source": c.name}), c.name)
    last = (
        f"{when(row.last.received_at, now)} {link(event_url(row.last.id), row.last.id, 'mono')}"
        if row.last is not None
        else f'<span class="note">none among the newest {LAST_EVENT_SCAN}</span>'
    )
    unrouted = link(url("/events", {"source": c.name, "state": "unrouted"}), c.unrouted)
    kind = e(row.kind) if row.kind else '<span class="note">not in routes.toml</span>'
    return (
        f'<tr data-source="{e(c.name)}"><th scope="row">{name}</th>'
        + cell(kind)
        + num_cell(c.received, "received")
        + cell(last, field="last")
        + num_cell(c.duplicates, "duplicates")
        + cell(unrouted, "num alert" if c.unrouted else "num", "unrouted")
        + "</tr>"
    )


def render_sources(rows: Sequence[SourceRow], now: float) -> str:
    """The sources page's body."""
    return (
        '<p class="lead">Counters since the start. Duplicates: events whose dedupe key was seen '
        "within its window (acknowledged, not delivered again). Unrouted: events no route "
        "matched (kept for inspection only).</p>"
        + table(
            "Sources",
            HEADERS,
            [_row(r, now) for r in rows],
            empty="No sources are configured and none has sent anything.",
            ident="sources",
            hide_caption=True,
        )
    )


@page("/sources")
async def sources_page(request: web.Request, viewer: Viewer) -> Page:
    """GET /sources."""
    routes = request.app[ROUTES]()
    configured = [(name, str(src.kind)) for name, src in routes.sources.items()]
    rows = await read(request, read_sources, redis_of(request), configured, tuple(routes.targets))
    return Page("Sources", render_sources(rows, time.time()))
