"""The overview (`/`): the status page's figures, with paused and failing targets first.

The figures and each target's health are the status page's (relay.ops.status_page: the same
reads, the same rules, the same 2-second cache); this module only draws them for the console,
with links to the events and targets, and a "needs attention" box on top.
"""

from __future__ import annotations

from aiohttp import web

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
    table,
    target_action,
    target_url,
    text_cell,
    when,
)
from relay.admin.console.layout import Viewer
from relay.admin.console.pages import READER, Page, page
from relay.admin.state import REDIS, ROUTES
from relay.ops.status_page import (
    BREAKER_OPEN,
    DEGRADED,
    FAILING,
    HEALTH_SAMPLE,
    HEALTH_WINDOW,
    PAUSED,
    REFRESH_SECONDS,
    StatusPage,
    TargetRow,
)
from relay.ops.status_page.model import cut
from relay.ops.status_page.reads import PageReader
from relay.store.breakers import describe_breaker
from relay.store.pauses import describe_pause

TARGET_HEADERS = (
    "Target", "Health", "Due now", "Retrying", "Dead letters", "Delivered", "Attempts",
    "Failures", "Replayed", "Failed / tried",
)  # fmt: skip
FAILURE_HEADERS = ("When", "Event", "Target", "Attempt", "Status", "Error", "Response")
DEAD_HEADERS = ("Dead since", "Event", "Target", "Source", "Type", "Attempts", "Reason")
SOURCE_HEADERS = ("Source", "Received", "Duplicates", "Unrouted")
#: The healths that need a hand, in the order the "needs attention" box lists them.
ATTENTION = (PAUSED, BREAKER_OPEN, FAILING, DEGRADED)


def make_reader(app: web.Application) -> PageReader:
    """The status page's reader on the admin app's Redis and routes."""
    return PageReader(lambda: app[REDIS], lambda: tuple(app[ROUTES]().targets))


def _figure(label: str, value: int, href: str, alert: bool = False) -> str:
    klass = "figure alert" if alert and value else "figure"
    return (
        f'<a class="{klass}" href="{e(href)}"><span class="value">{value}</span>'
        f'<span class="label">{e(label)}</span></a>'
    )


def _figures(sp: StatusPage) -> str:
    s = sp.status
    count = {h: sum(r.health == h for r in sp.targets) for h in ATTENTION}
    return (
        '<div class="figures">'
        + _figure("targets paused", count[PAUSED], "/targets", alert=True)
        + _figure("breakers open", count[BREAKER_OPEN], "/targets", alert=True)
        + _figure("targets failing", count[FAILING], "/targets", alert=True)
        + _figure("targets degraded", count[DEGRADED], "/targets", alert=True)
        + _figure("dead letters", sp.dead_letters_total, "/dead-letters", alert=True)
        + _figure("deliveries due now", sum(t.pending for t in s.targets), "/targets")
        + _figure("retrying or in flight", sum(t.scheduled for t in s.targets), "/targets")
        + _figure("workers", s.workers, "/targets", alert=False)
        + "</div>"
    )


def _attention_item(row: TargetRow, sp: StatusPage, viewer: Viewer) -> str:
    t = row.figures
    name = link(target_url(t.name), t.name)
    if t.paused is not None:
        what = f"is paused {e(describe_pause(t.paused, sp.status.at))}; its deliveries are held."
        act = ""
        if viewer.can_write:
            inner = hidden("back", "/") + button("Resume")
            path = target_action(t.name, "resume")
            act = " " + post_form(path, viewer.csrf, inner, label=f"Resume {t.name}")
        return f"<li>{pill(PAUSED)} {name} {what}{act}</li>"
    if t.breaker is not None and t.breaker.is_open:
        what = (
            f"'s circuit breaker is {describe_breaker(t.breaker, sp.status.at)}; its deliveries "
            "are held, and go out again on their own when a probe succeeds."
        )
        return f"<li>{pill(BREAKER_OPEN)} {name}{e(what)}</li>"
    failed = f"{row.recent_failures} of its newest {row.recent_attempts} attempts failed"
    return f"<li>{pill(row.health)} {name}: {e(failed)}.</li>"


def _attention(sp: StatusPage, viewer: Viewer) -> str:
    s = sp.status
    items = [
        _attention_item(r, sp, viewer)
        for r in sorted(
            (r for r in sp.targets if r.health in ATTENTION),
            key=lambda r: ATTENTION.index(r.health),
        )
    ]
    waiting = any(t.pending or t.scheduled for t in s.targets)
    if s.workers == 0 and (waiting or s.queue.queued):
        items.insert(0, "<li>No worker is running: deliveries are waiting.</li>")
    if not items:
        return (
            '<section class="attention calm" aria-labelledby="attention-h">'
            '<h2 id="attention-h">Nothing needs attention</h2>'
            "<p>No target is paused, failing or degraded, and no circuit breaker is open.</p>"
            "</section>"
        )
    return (
        '<section class="attention" aria-labelledby="attention-h">'
        f'<h2 id="attention-h">Needs attention ({len(items)})</h2>'
        f"<ul>{''.join(items)}</ul></section>"
    )


def _target_rows(sp: StatusPage) -> list[str]:
    rows = []
    for row in sp.targets:
        t = row.figures
        name = link(target_url(t.name), t.name)
        rows.append(
            f'<tr data-target="{e(t.name)}"><th scope="row">{name}</th>'
            + cell(pill(row.health), field="health")
            + num_cell(t.pending, "pending")
            + num_cell(t.scheduled, "scheduled")
            + num_cell(t.dead_letters, "dead_letters", alert=True)
            + num_cell(t.delivered, "delivered")
            + num_cell(t.attempts, "attempts")
            + num_cell(t.failures, "failures")
            + num_cell(t.replayed, "replayed")
            + text_cell(f"{row.recent_failures}/{row.recent_attempts}", "num", "recent")
            + "</tr>"
        )
    return rows


def _failure_rows(sp: StatusPage) -> list[str]:
    now = sp.status.at
    return [
        "<tr>"
        + cell(when(f.at, now))
        + cell(link(event_url(f.event_id), f.event_id), "mono nowrap")
        + text_cell(f.target)
        + num_cell(f.attempt)
        + text_cell(f"HTTP {f.status}" if f.status is not None else "")
        + text_cell(f.error)
        + text_cell(f.response, "mono")
        + "</tr>"
        for f in sp.failures
    ]


def _dead_rows(sp: StatusPage) -> list[str]:
    now = sp.status.at
    return [
        "<tr>"
        + cell(when(d.dead_at, now))
        + cell(link(event_url(d.event_id), d.event_id), "mono nowrap")
        + text_cell(d.target)
        + text_cell(d.source)
        + text_cell(d.type)
        + num_cell(d.attempts)
        + text_cell(cut(d.reason))
        + "</tr>"
        for d in sp.dead_letters
    ]


def _source_rows(sp: StatusPage) -> list[str]:
    return [
        f'<tr><th scope="row">{e(src.name)}</th>'
        + num_cell(src.received)
        + num_cell(src.duplicates)
        + num_cell(src.unrouted)
        + "</tr>"
        for src in sp.status.sources
    ]


def render_overview(sp: StatusPage, viewer: Viewer) -> str:
    """The overview's body."""
    minutes = int(HEALTH_WINDOW // 60)
    return (
        # The script reloads the overview this often (not while a field has the focus), as
        # the status page reloads itself.
        f'<div data-refresh="{REFRESH_SECONDS}" hidden></div>'
        f'<p class="lead">Read at {when(sp.status.at, sp.status.at)} · queue '
        f"{e(sp.status.queue.name)} · {sp.status.workers} worker(s)</p>"
        + _attention(sp, viewer)
        + _figures(sp)
        + "<h2>Targets</h2>"
        + table(
            "Targets: what is due now, counters since the start, and the newest attempts",
            TARGET_HEADERS,
            _target_rows(sp),
            empty="No targets yet.",
            ident="targets",
            hide_caption=True,
        )
        + f'<p class="note">Health: paused while held; breaker-open while its circuit breaker '
        f"holds the deliveries; else the newest {HEALTH_SAMPLE} "
        f"attempts of the last {minutes} minutes: ok when all delivered, failing when none "
        "did, degraded in between, idle without attempts.</p>"
        + "<h2>Recent failures</h2>"
        + table(
            "Recent failed attempts",
            FAILURE_HEADERS,
            _failure_rows(sp),
            empty="No failed attempts among the newest events.",
            ident="failures",
            hide_caption=True,
        )
        + f"<h2>Newest dead letters ({sp.dead_letters_total} in all)</h2>"
        + table(
            "Newest dead letters",
            DEAD_HEADERS,
            _dead_rows(sp),
            empty="The dead-letter store is empty.",
            ident="dead",
            hide_caption=True,
        )
        + f"<p>{link('/dead-letters', 'All dead letters, to select and replay')}</p>"
        + "<h2>Sources</h2>"
        + table(
            "Sources",
            SOURCE_HEADERS,
            _source_rows(sp),
            empty="No events received yet.",
            ident="sources",
            hide_caption=True,
        )
    )


@page("/")
async def overview(request: web.Request, viewer: Viewer) -> Page:
    """GET /: the overview."""
    sp = await request.app[READER].read()
    return Page("Overview", render_overview(sp, viewer))
