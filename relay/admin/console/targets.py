"""Targets (`/targets`): each target's state and rates, and pause/resume with a reason.

The figures and health are the status page's (relay.ops.status_page); pausing and resuming are
the same writes as `relay pause` and `relay resume` (PAUSE_ACTIONS below).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from relay.admin.console.html import (
    button,
    cell,
    e,
    link,
    num_cell,
    pill,
    post_form,
    table,
    target_action,
    url,
    when,
)
from relay.admin.console.layout import Viewer
from relay.admin.console.pages import (
    READER,
    Form,
    Page,
    action,
    audit,
    done,
    form_text,
    page,
    redis_of,
)
from relay.admin.state import ROUTES
from relay.ops.status_page import (
    BREAKER_OPEN,
    DEGRADED,
    FAILING,
    HEALTH_SAMPLE,
    HEALTH_WINDOW,
    PAUSED,
    StatusPage,
    TargetRow,
)
from relay.store.breakers import describe_breaker
from relay.store.pauses import pause_target, resume_target

#: A pause reason is a sentence, not a document.
REASON_MAX = 200
DEFAULT_REASON = "paused from the console"

HEADERS = (
    "Target", "State", "Control", "Due now", "Retrying", "Dead letters", "Delivered", "Failures",
    "Newest attempts",
)  # fmt: skip


def _rate(row: TargetRow) -> str:
    if not row.recent_attempts:
        return '<span class="note">no attempts</span>'
    ok = row.recent_attempts - row.recent_failures
    share = 100 * ok // row.recent_attempts
    return e(f"{share}% delivered ({ok} of {row.recent_attempts})")


def _state(row: TargetRow, now: float) -> str:
    t = row.figures
    out = pill(row.health)
    if t.paused is not None:
        since = when(t.paused.since, now) if t.paused.since is not None else "an unknown time"
        reason = e(t.paused.reason or "no reason given")
        out += f'<span class="note"> since {since}: {reason}</span>'
    if t.breaker is not None and t.breaker.is_open:
        # The status page's words: since when, after how many failures, last error, next probe.
        note = f"breaker {describe_breaker(t.breaker, now)}"
        out += f'<span class="note breaker"> {e(note)}</span>'
    return out


def _control(row: TargetRow) -> str:
    """Rate, concurrency and order in force and what they hold (ControlView.describe)."""
    control = row.figures.control
    return e(control.describe()) if control is not None else '<span class="note">none</span>'


def _actions(row: TargetRow, viewer: Viewer) -> str:
    name = row.figures.name
    if row.figures.paused is not None:
        return post_form(
            target_action(name, "resume"), viewer.csrf, button("Resume"), label=f"Resume {name}"
        )
    ident = f"reason-{name}"
    inner = (
        f'<label class="visually-hidden" for="{e(ident)}">Reason to pause {e(name)}</label>'
        f'<input type="text" id="{e(ident)}" name="reason" maxlength="{REASON_MAX}" '
        f'placeholder="reason">' + button("Pause", cls="danger")
    )
    return post_form(
        target_action(name, "pause"), viewer.csrf, inner, cls="inline pause-form",
        label=f"Pause {name}",
    )  # fmt: skip


def _row(row: TargetRow, viewer: Viewer, now: float) -> str:
    t = row.figures
    dead = link(url("/dead-letters", {"target": t.name}), t.dead_letters)
    name = link(url("/events", {"target": t.name}), t.name)
    configured = "" if t.configured else ' <span class="note">not in routes.toml</span>'
    out = (
        f'<tr id="target-{e(t.name)}" data-target="{e(t.name)}">'
        f'<th scope="row">{name}{configured}</th>'
        + cell(_state(row, now), field="state")
        + cell(_control(row), field="control")
        + num_cell(t.pending, "pending")
        + num_cell(t.scheduled, "scheduled")
        + cell(dead, "num alert" if t.dead_letters else "num", "dead_letters")
        + num_cell(t.delivered, "delivered")
        + num_cell(t.failures, "failures")
        + cell(_rate(row), field="rate")
    )
    if viewer.can_write:
        out += cell(_actions(row, viewer), field="actions")
    return out + "</tr>"


def render_targets(sp: StatusPage, viewer: Viewer) -> str:
    """The targets page's body."""
    now = sp.status.at
    headers = (*HEADERS, "Actions") if viewer.can_write else HEADERS
    # Paused first, then breaker open, failing and degraded: what needs a hand is at the top.
    order = {PAUSED: 0, BREAKER_OPEN: 1, FAILING: 2, DEGRADED: 3}
    rows = sorted(sp.targets, key=lambda r: order.get(r.health, len(order)))
    minutes = int(HEALTH_WINDOW // 60)
    return (
        '<p class="lead">A paused target\'s deliveries are held, not attempted, and keep their '
        "attempt budget; resuming sends them within a second. An open circuit breaker holds "
        "them too, but for one probe per interval, and closes on its own when a probe "
        "delivers. Control: the rate, concurrency and order in force and what they hold. "
        "Newest attempts: how many of "
        f"the target's newest {HEALTH_SAMPLE} attempts of the last {minutes} minutes "
        "delivered.</p>"
        + table(
            "Targets",
            headers,
            [_row(r, viewer, now) for r in rows],
            empty="No targets yet.",
            ident="targets",
            hide_caption=True,
        )
    )


@page("/targets")
async def targets_page(request: web.Request, viewer: Viewer) -> Page:
    """GET /targets."""
    sp = await request.app[READER].read()
    return Page("Targets", render_targets(sp, viewer))


def _known(request: web.Request, name: str) -> bool:
    return name in request.app[ROUTES]().targets


@action
async def pause(request: web.Request, viewer: Viewer, form: Form) -> web.StreamResponse:
    """POST /targets/{name}/pause: hold its deliveries, with a reason."""
    name = request.match_info["name"]
    if not _known(request, name):
        return done(request, "/targets", False, f"No target named {name!r} in routes.toml.")
    reason = form_text(form, "reason", REASON_MAX) or DEFAULT_REASON
    reason = f"{reason} ({viewer.principal.name})"
    newly = await asyncio.to_thread(pause_target, redis_of(request), name, reason)
    audit(viewer, "pause", name, "paused" if newly else "already paused", reason=reason)
    text = f"{name} is paused: its deliveries are held." if newly else f"{name} was paused already."
    return done(request, "/targets", True, text)


@action
async def resume(request: web.Request, viewer: Viewer, form: Form) -> web.StreamResponse:
    """POST /targets/{name}/resume: release its held deliveries."""
    name = request.match_info["name"]
    was = await asyncio.to_thread(resume_target, redis_of(request), name)
    audit(viewer, "resume", name, "resumed" if was else "was not paused")
    text = f"{name} is resumed: held deliveries go out now." if was else f"{name} was not paused."
    # The overview has a Resume button too: go back where the operator was.
    back = "/" if form_text(form, "back") == "/" else "/targets"
    return done(request, back, True, text)
