"""Dead letters (`/dead-letters`): filter, select, and replay in bulk.

The listing is `relay dead list`'s (relay.ops.deliveries.page_dead) with the filters parsed as
the API parses them (relay.admin.api.params.DEAD_FILTERS). The table sits in a POST form: tick
rows and "Replay selected", or "Replay all that match" the filter; either leads to a preview
with the count first (relay.admin.console.bulk), then to the replay with its progress.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from aiohttp import web
from multidict import MultiDict

from relay.admin.api.dead_letters import dead_filter
from relay.admin.api.params import CURSOR, DEAD_FILTERS, SCAN_BUDGET, read_query
from relay.admin.console.html import (
    button,
    cell,
    e,
    event_url,
    hidden,
    link,
    num_cell,
    pill,
    post_form,
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
from relay.ops import deliveries as ops
from relay.ops.events import MAX_SCAN
from relay.ops.pages import Position
from relay.ops.status_page.model import cut
from relay.store import keys

#: Dead letters per page.
PAGE_SIZE = 50
#: The filters, by the API's names, in the order the form draws them.
FILTER_FIELDS = tuple(p.name for p in DEAD_FILTERS)

HEADERS = ("Dead since", "Event", "Target", "Source", "Type", "State", "Attempts", "Reason")


def parse_dead_filters(given: Mapping[str, str]) -> tuple[ops.DeadFilter, Position | None]:
    """The filter as the API reads it; ApiError names a bad field (empty fields mean "any")."""
    values = read_query(MultiDict({k: v for k, v in given.items() if v}), (*DEAD_FILTERS, CURSOR))
    selection = dead_filter(values)
    return selection, values.get("cursor")


def filter_values(query: Mapping[str, str]) -> dict[str, str]:
    """The filters a request names (stripped; empty ones left out)."""
    given = {k: query.get(k, "").strip() for k in FILTER_FIELDS}
    return {k: v for k, v in given.items() if v}


def filter_form(values: Mapping[str, str], sources: list[str], targets: list[str]) -> str:
    """The filter form (GET: a filter is a link)."""
    fields = (
        select("target", "Target", targets, values.get("target"))
        + select("source", "Source", sources, values.get("source"))
        + text_input("type", "Type (glob)", values.get("type"), placeholder="COURSEMEMBER_*")
        + select("state", "State", ["dead", "gone"], values.get("state"))
        + text_input("dead_from", "Dead from", values.get("dead_from"), placeholder="2h, ISO")
        + text_input("dead_to", "Dead to", values.get("dead_to"), placeholder="ISO")
        + text_input("id_prefix", "Id starts with", values.get("id_prefix"), placeholder="evt_")
    )
    return (
        '<form method="get" action="/dead-letters" class="filters" role="search" '
        f'aria-label="Filter dead letters">{fields}'
        '<div class="field"><button type="submit" class="primary">Filter</button></div>'
        '<div class="field"><a class="button" href="/dead-letters">Clear</a></div></form>'
    )


def _row(d: ops.DeadLetter, now: float, selectable: bool) -> str:
    member = keys.dead_member(d.event_id, d.target)
    tick = ""
    if selectable:
        ident = f"sel-{member}"
        tick = cell(
            f'<input type="checkbox" name="letter" value="{e(member)}" id="{e(ident)}">'
            f'<label class="visually-hidden" for="{e(ident)}">Select {e(d.event_id)} to '
            f"{e(d.target)}</label>"
        )
    return (
        f'<tr data-id="{e(d.event_id)}" data-target="{e(d.target)}">'
        + tick
        + cell(when(d.dead_at, now), "nowrap")
        + cell(link(event_url(d.event_id), d.event_id), "mono nowrap")
        + text_cell(d.target)
        + text_cell(d.source)
        + text_cell(d.type)
        + cell(pill("expired" if d.expired else d.state or "unknown"))
        + num_cell(d.attempts)
        + text_cell(cut(d.reason))
        + "</tr>"
    )


def _pager(found: ops.DeadPage, values: Mapping[str, str], first: bool) -> str:
    links = []
    if not first:
        links.append(link(url("/dead-letters", values), "« Newest"))
    if found.next is not None:
        older = url("/dead-letters", {**values, "cursor": found.next.to_cursor()})
        links.append(link(older, "Older »", "older"))
    return f'<nav class="pager" aria-label="Pages">{" ".join(links)}</nav>' if links else ""


def render_dead(
    found: ops.DeadPage, values: Mapping[str, str], viewer: Viewer, first: bool, now: float
) -> str:
    """The listing, inside the bulk replay form for a write token."""
    write = viewer.can_write and bool(found.letters)
    headers = (("Select",) if write else ()) + HEADERS
    rows = [_row(d, now, write) for d in found.letters]
    listing = table(
        "Dead letters, newest first",
        headers,
        rows,
        empty="No dead letter matches." if values else "The dead-letter store is empty.",
        ident="dead",
        hide_caption=True,
    )
    pager = _pager(found, values, first)
    if found.partial:
        pager = (
            f'<p class="note">This page stopped early, after reading {found.scanned} dead '
            "letters: Older goes on from there.</p>" + pager
        )
    if not write:
        return listing + pager
    keep = "".join(hidden(f"filter_{k}", v) for k, v in values.items())
    select_all = (
        '<label><input type="checkbox" data-select-all> all on this page</label>'
        '<span class="note" data-selected-count aria-live="polite"></span>'
    )
    actions = (
        '<div class="actions">'
        + button("Replay selected…", name="scope", value="selected", cls="primary")
        + button("Replay all that match the filter…", name="scope", value="filter")
        + select_all
        + "</div>"
    )
    inner = keep + actions + listing
    form = post_form(
        "/dead-letters/replay", viewer.csrf, inner, cls="bulk", label="Replay dead letters"
    )
    return form + pager


@page("/dead-letters")
async def dead_letters_page(request: web.Request, viewer: Viewer) -> Page:
    """GET /dead-letters: the filter and one page of dead letters."""
    routes = request.app[ROUTES]()
    values = filter_values(request.query)
    form = filter_form(values, sorted(routes.sources), sorted(routes.targets))
    try:
        selection, start = parse_dead_filters(
            {**values, CURSOR.name: request.query.get(CURSOR.name, "")}
        )
    except ApiError as exc:
        problem = f'<p class="notice error" role="alert">{e(exc.message)}</p>'
        return Page("Dead letters", form + problem, status=400)
    # The API's bounds: at most MAX_SCAN store entries and SCAN_BUDGET seconds per page.
    found = await read(
        request,
        ops.page_dead,
        redis_of(request),
        selection,
        limit=PAGE_SIZE,
        start=start,
        max_scan=MAX_SCAN,
        deadline=time.monotonic() + SCAN_BUDGET,
    )
    body = form + render_dead(found, values, viewer, start is None, time.time())
    return Page("Dead letters", body)
