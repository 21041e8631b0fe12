"""One event (`/events/{id}`): its request, each target's state and attempt timeline, replay.

The data is `relay events show`'s (relay.ops.events.get_event). The body is shown pretty
(relay.admin.console.body) with the raw text in a `<details>` beside it: the toggle works
without script. Replay (one target, or every dead delivery of the event) is a POST form.
"""

from __future__ import annotations

import time
from urllib.parse import quote

from aiohttp import web

from relay.admin.console.body import BodyKind, BodyView, view_body
from relay.admin.console.html import (
    button,
    definition_list,
    e,
    event_url,
    hidden,
    link,
    pill,
    post_form,
    table,
    target_url,
    when,
)
from relay.admin.console.layout import Viewer
from relay.admin.console.pages import (
    Form,
    Page,
    action,
    audit,
    done,
    form_text,
    page,
    read,
    redis_of,
)
from relay.admin.state import SETTINGS
from relay.core.headers import DROPPED_HEADERS
from relay.core.states import Outcome
from relay.core.times import format_time
from relay.ops.deliveries import ReplayResult
from relay.ops.deliveries.bulk import event_pairs, replay_pairs
from relay.ops.events import Attempt, DeliveryView, EventView, get_event

#: The first characters of a target's answer shown in the timeline (the record keeps more).
SNIPPET_CHARS = 300


def replay_path(event_id: str) -> str:
    """Where an event's replay form posts."""
    return f"/events/{quote(event_id, safe='')}/replay"


def _headers(view: EventView) -> str:
    rows = [
        f'<tr><th scope="row" class="mono">{e(name)}</th><td class="mono">'
        # Credentials are never stored (relay.core.headers); an older record is masked anyway.
        f"{'[redacted]' if name.lower() in DROPPED_HEADERS else e(value)}</td></tr>"
        for name, value in view.event.headers
    ]
    return table("Request headers", ("Name", "Value"), rows, empty="No headers were kept.")


def _pretty(body: BodyView) -> str:
    if body.kind is BodyKind.JSON:
        return f'<pre class="body" data-kind="json">{e(body.pretty)}</pre>'
    if body.kind is BodyKind.FORM:
        rows = [
            f'<tr><th scope="row" class="mono">{e(k)}</th><td class="mono">{e(v)}</td></tr>'
            for k, v in body.fields
        ]
        return table("Form fields", ("Field", "Value"), rows, empty="The form is empty.")
    return ""


def _body(view: EventView) -> str:
    body = view_body(view.event.body, view.event.content_type)
    if body.kind is BodyKind.EMPTY:
        return '<p class="empty">The body is empty.</p>'
    size = f"{body.size} bytes" + (" (the first 256 KiB are shown)" if body.cut else "")
    pretty = _pretty(body)
    raw = f'<pre class="body" data-kind="raw">{e(body.raw)}</pre>'
    if not pretty:
        return f'<p class="note">{e(size)}, shown as text</p>{raw}'
    return (
        f'<p class="note">{e(size)}, shown as {e(body.kind)}</p>{pretty}'
        f'<details class="raw"><summary>Raw body</summary>{raw}</details>'
    )


def _attempt(a: Attempt, now: float) -> str:
    failed = a.outcome is not Outcome.DELIVERED
    status = f"HTTP {a.status}" if a.status is not None else "no response"
    parts = [f"<strong>Attempt {a.attempt}</strong>", when(a.at, now), e(status)]
    if a.duration is not None:
        parts.append(e(f"{a.duration * 1000:.0f} ms"))
    if a.outcome:
        parts.append(pill(a.outcome))
    if a.retry_in is not None:
        parts.append(e(f"retry in {a.retry_in:.0f} s"))
    line = " · ".join(parts)
    if a.error:
        line += f' <span class="error">{e(a.error)}</span>'
    if a.response:
        line += f'<span class="snippet mono">{e(a.response[:SNIPPET_CHARS])}</span>'
    klass = "failed" if failed else "succeeded"
    return f'<li class="{klass}">{line}</li>'


def _delivery(event_id: str, d: DeliveryView, viewer: Viewer, now: float) -> str:
    head = f"{link(target_url(d.target), d.target)} {pill(d.state)}"
    facts = f"{d.attempts_made} attempt(s)"
    if d.before_replay:
        facts += f", {d.before_replay} of them before the latest replay"
    if d.reason:
        facts += f"; {d.reason}"
    action = ""
    if viewer.can_write and d.state.dead_letter:
        inner = hidden("target", d.target) + button(f"Replay to {d.target}")
        action = post_form(replay_path(event_id), viewer.csrf, inner, label=f"Replay {d.target}")
    timeline = (
        '<ol class="timeline">' + "".join(_attempt(a, now) for a in d.attempts) + "</ol>"
        if d.attempts
        else '<p class="empty">No attempt yet.</p>'
    )
    return (
        f'<section class="delivery" data-target="{e(d.target)}" aria-label="{e(d.target)}">'
        f"<h3>{head}</h3><p>{e(facts)}</p>{action}{timeline}</section>"
    )


def _summary(view: EventView, now: float) -> str:
    ev = view.event
    expires = "never" if view.expires_in is None else f"in {view.expires_in // 3600} h"
    items = [
        ("Source", e(ev.source)),
        ("Type", e(ev.type or "-")),
        ("Received", f"{e(format_time(ev.received_at))} ({when(ev.received_at, now)})"),
        ("Method", e(ev.method)),
        ("Content type", e(ev.content_type or "-")),
        ("Targets", " ".join(f"{e(d.target)} {pill(d.state)}" for d in view.deliveries) or "-"),
        ("Kept until", e(expires)),
    ]
    return definition_list(items)


def render_event(view: EventView, viewer: Viewer, now: float) -> str:
    """The event page's body."""
    event_id = view.event.id
    dead = [d for d in view.deliveries if d.state.dead_letter]
    replay_all = ""
    if viewer.can_write and dead:
        label = f"Replay every dead delivery ({len(dead)})"
        replay_all = (
            '<div class="actions">'
            + post_form(
                replay_path(event_id), viewer.csrf, button(label, cls="primary"), label=label
            )
            + "</div>"
        )
    unrouted = '<p class="banner">No route matched this event: it is kept for inspection only.</p>'
    deliveries = "".join(_delivery(event_id, d, viewer, now) for d in view.deliveries)
    omitted = (
        f'<p class="note">{view.attempts_omitted} older attempt record(s) not shown.</p>'
        if view.attempts_omitted
        else ""
    )
    return (
        _summary(view, now)
        + replay_all
        + "<h2>Deliveries</h2>"
        + (deliveries or unrouted)
        + omitted
        + "<h2>Body</h2>"
        + _body(view)
        + "<h2>Headers</h2>"
        + _headers(view)
    )


def _replay_text(results: list[ReplayResult]) -> tuple[bool, str]:
    done_ = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    parts = []
    if done_:
        parts.append("Replayed to " + ", ".join(f"{r.target} (attempt {r.attempt})" for r in done_))
    parts += [r.message for r in failed]
    return not failed and bool(done_), ". ".join(parts) + "."


@action
async def replay(request: web.Request, viewer: Viewer, form: Form) -> web.StreamResponse:
    """POST /events/{id}/replay: replay one target's dead delivery, or every dead one."""
    event_id = request.match_info["event_id"]
    target = form_text(form, "target") or None
    conn, retention = redis_of(request), request.app[SETTINGS].retention

    def run() -> list[ReplayResult]:
        pairs, nothing = event_pairs(conn, [event_id], target)
        return nothing + replay_pairs(conn, pairs, retention=retention)

    results = await read(request, run)
    ok, text = _replay_text(results)
    what = f"event {event_id}" + (f" to {target}" if target else "")
    replayed = sum(r.ok for r in results)
    audit(viewer, "replay_event", what, f"replayed {replayed}" if ok else "refused")
    return done(request, event_url(event_id), ok, text)


@page("/events")
async def event_page(request: web.Request, viewer: Viewer) -> Page:
    """GET /events/{id}: one event."""
    event_id = request.match_info["event_id"]
    view = await read(request, get_event, redis_of(request), event_id)
    if view is None:
        body = (
            f"<p>No event {e(event_id)}: unknown, or expired after the retention period.</p>"
            f"<p>{link('/events', 'Search the events')}</p>"
        )
        return Page("Event not found", body, status=404)
    return Page(f"Event {event_id}", render_event(view, viewer, time.time()))
