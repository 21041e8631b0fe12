"""Events (`/events`): search by the API's filters, newest first, a page at a time.

The listing is `relay events list`'s (relay.ops.events.list_events) with the filters parsed as
the API parses them. The first page lists new events as they arrive: the console's script
polls `GET /api/v1/events` with the same filters (the table's `data-poll`); without script the
page is complete as served.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from aiohttp import web
from multidict import MultiDict

from relay.admin.api.events import event_query
from relay.admin.api.params import EVENT_CURSOR, EVENT_FILTERS, SCAN_BUDGET, read_query
from relay.admin.console.html import (
    cell,
    e,
    event_url,
    link,
    pill,
    select,
    table,
    text_cell,
    text_input,
    url,
    when,
)
from relay.admin.console.layout import Viewer
from relay.admin.console.pages import Page, page, read, redis_of
from relay.admin.errors import ApiError
from relay.admin.state import ROUTES
from relay.ops.events import MAX_SCAN, STATES, EventListing, EventQuery, EventSummary, list_events
from relay.ops.events.walk import EventPosition

#: Events per page (the API's default page size too).
PAGE_SIZE = 50
#: The script checks for new events this often (seconds).
POLL_SECONDS = 5

HEADERS = ("Received", "Event", "Source", "Type", "Targets")
#: The form's fields: the API's filters, by the API's names (the script polls the same query).
FILTER_FIELDS = tuple(p.name for p in EVENT_FILTERS)


def _states(summary: EventSummary) -> str:
    if summary.unrouted:
        return pill("unrouted")
    return " ".join(
        f'<span class="ts">{e(t.target)} {pill(t.state)}'
        + (f'<span class="note"> &times;{t.attempts_made}</span>' if t.attempts_made > 1 else "")
        + "</span>"
        for t in summary.targets
    )


def event_row(summary: EventSummary, now: float) -> str:
    """One row of the listing (the script builds the same cells for rows it adds)."""
    return (
        f'<tr data-id="{e(summary.id)}">'
        + cell(when(summary.received_at, now), "nowrap")
        + cell(link(event_url(summary.id), summary.id), "mono nowrap")
        + text_cell(summary.source)
        + text_cell(summary.type)
        + cell(_states(summary), field="targets")
        + "</tr>"
    )


def filter_form(values: Mapping[str, str], sources: list[str], targets: list[str]) -> str:
    """The search form (GET, so a search is a link that can be shared)."""
    fields = (
        select("source", "Source", sources, values.get("source"))
        + text_input("type", "Type (glob)", values.get("type"), placeholder="COURSEMEMBER_*")
        + select("target", "Target", targets, values.get("target"))
        + select("state", "State", [str(s) for s in STATES], values.get("state"))
        + text_input(
            "received_from", "Received from", values.get("received_from"), placeholder="2h, ISO"
        )
        + text_input("received_to", "Received to", values.get("received_to"), placeholder="ISO")
        + text_input("id_prefix", "Id starts with", values.get("id_prefix"), placeholder="evt_01")
    )
    return (
        '<form method="get" action="/events" class="filters" role="search" '
        f'aria-label="Search events">{fields}'
        '<div class="field"><button type="submit" class="primary">Search</button></div>'
        '<div class="field"><a class="button" href="/events">Clear</a></div></form>'
    )


def _pager(listing: EventListing, values: Mapping[str, str], first: bool) -> str:
    links = []
    if not first:
        links.append(link(url("/events", values), "« Newest"))
    if listing.next is not None:
        older = url("/events", {**values, "cursor": listing.next.to_cursor()})
        links.append(link(older, "Older »", "older"))
    if not links:
        return ""
    return f'<nav class="pager" aria-label="Pages of events">{" ".join(links)}</nav>'


def render_events(listing: EventListing, values: Mapping[str, str], first: bool, now: float) -> str:
    """The listing, its pager and (on the first page) the live-update hook."""
    rows = [event_row(s, now) for s in listing.events]
    poll = url("/api/v1/events", {**values, "limit": PAGE_SIZE})
    live = (
        f'<p class="live" id="live" data-poll="{e(poll)}" data-seconds="{POLL_SECONDS}" '
        'aria-live="polite"></p>'
        if first
        else ""
    )
    partial = (
        f'<p class="note">This page stopped early, after reading {listing.scanned} events: '
        "Older goes on from there, or narrow the search with Received from and to.</p>"
        if listing.partial
        else ""
    )
    return (
        live
        + table(
            "Events, newest first",
            HEADERS,
            rows,
            empty="No event matches.",
            ident="events",
            hide_caption=True,
        )
        + partial
        + _pager(listing, values, first)
    )


def parse_filters(
    given: Mapping[str, str],
) -> tuple[EventQuery, EventPosition | None]:
    """The search as the API reads it (relay.admin.api.params); ApiError names a bad field.

    A form sends its empty fields too: they mean "any", so they are left out first.
    """
    values = read_query(
        MultiDict({k: v for k, v in given.items() if v}), (*EVENT_FILTERS, EVENT_CURSOR)
    )
    query = event_query(values)
    return query, values.get("cursor")


@page("/events")
async def events_page(request: web.Request, viewer: Viewer) -> Page:
    """GET /events: the search form and one page of matching events."""
    routes = request.app[ROUTES]()
    given = {k: request.query.get(k, "").strip() for k in (*FILTER_FIELDS, EVENT_CURSOR.name)}
    values = {k: v for k, v in given.items() if v and k in FILTER_FIELDS}
    form = filter_form(values, sorted(routes.sources), sorted(routes.targets))
    try:
        query, start = parse_filters(given)
    except ApiError as exc:
        problem = f'<p class="notice error" role="alert">{e(exc.message)}</p>'
        return Page("Events", form + problem, status=400)
    # The API's bounds: at most MAX_SCAN index entries and SCAN_BUDGET seconds per page.
    listing = await read(
        request,
        list_events,
        redis_of(request),
        query,
        limit=PAGE_SIZE,
        start=start,
        max_scan=MAX_SCAN,
        deadline=time.monotonic() + SCAN_BUDGET,
    )
    body = form + render_events(listing, values, start is None, time.time())
    return Page("Events", body)
