"""The status page as HTML (pure): the templates `page.html` and `status.html`, filled with rows.

The page is plain HTML with inline CSS, no script and no external resource, and reloads itself.
Every value put into it is escaped here; the templates hold only fixed markup.
"""

from __future__ import annotations

import re
from importlib import resources
from string import Template
from urllib.parse import quote

from relay.core.times import format_age, format_time
from relay.ops.status_page.cells import cell as _cell
from relay.ops.status_page.cells import escape_text as _e
from relay.ops.status_page.cells import num as _num
from relay.ops.status_page.cells import table as _table
from relay.ops.status_page.cells import when as _when
from relay.ops.status_page.model import (
    DEGRADED,
    FAILING,
    HEALTH_SAMPLE,
    HEALTH_WINDOW,
    PAUSED,
    REFRESH_SECONDS,
    StatusPage,
    cut,
)
from relay.ops.status_page.reconcile_view import reconcile_banners, reconcile_section
from relay.store.breakers import BreakerState, describe_breaker
from relay.store.pauses import Pause, describe_pause

#: Column groups of the targets table: what is true now, and counters since the start.
TARGET_GROUPS = (("", 2), ("now", 3), ("since the start", 6), ("last hour", 1))
TARGET_HEADERS = (
    "Target", "Health", "Pending", "Retrying", "Dead letters", "Delivered", "Attempts",
    "Failures", "Dead", "Gone", "Replayed", "Failed / tried",
)  # fmt: skip
FAILURE_HEADERS = ("When", "Event", "Target", "Attempt", "Status", "Error", "Outcome", "Response")
DEAD_HEADERS = ("Dead since", "Event", "Target", "Source", "Type", "State", "Attempts", "Reason")
SOURCE_HEADERS = ("Source", "Received", "Duplicates", "Unrouted")


def _template(name: str) -> Template:
    """A template of this package; a line break and the indentation after it are dropped, so
    the file reads as an indented document and the page is sent compact."""
    text = resources.files("relay.ops.status_page").joinpath(name).read_text(encoding="utf-8")
    return Template(re.sub(r"\n\s*", "", text))


#: The document around a body: head, refresh, the inline CSS.
PAGE = _template("page.html")
#: The status page's body: header, figures, the four tables, the footer.
STATUS = _template("status.html")


def _paused_note(pause: Pause, now: float) -> str:
    """The pause under a paused target's name: since when (a <time>) and why."""
    since = pause.since
    when = "since an unknown time"
    if since is not None:
        moment = _e(format_time(since))
        when = (
            f'since <time datetime="{moment}" title="{moment}">{moment}</time> '
            f"({_e(format_age(now - since))} ago)"
        )
    reason = _e(pause.reason or "no reason given")
    return f'<span class="note pause">paused {when}: {reason}</span>'


def _breaker_note(state: BreakerState, now: float) -> str:
    """The open breaker under a target's name: since when (a <time>), after what, next probe."""
    assert state.opened_at is not None
    moment = _e(format_time(state.opened_at))
    since = f'<time datetime="{moment}" title="{moment}">{moment}</time>'
    rest = describe_breaker(state, now).split(" ago) ", 1)[-1]
    age = _e(format_age(now - state.opened_at))
    return f'<span class="note breaker">breaker open since {since} ({age} ago) {_e(rest)}</span>'


def _target_rows(page: StatusPage) -> list[str]:
    rows = []
    for row in page.targets:
        t = row.figures
        name = _e(t.name) + ("" if t.configured else ' <span class="note">not in routes</span>')
        if t.paused is not None:
            name += " " + _paused_note(t.paused, page.status.at)
        if t.breaker is not None and t.breaker.is_open:
            name += " " + _breaker_note(t.breaker, page.status.at)
        if t.control is not None:  # rate, concurrency, order, and what they hold
            name += f' <span class="note control">{_e(t.control.describe())}</span>'
        rows.append(
            f'<tr data-target="{_e(t.name)}"><td data-field="name" class="name">{name}</td>'
            f'<td data-field="health"><span class="pill {row.health}">{row.health}</span></td>'
            + _num("pending", t.pending)
            + _num("scheduled", t.scheduled)
            + _num("dead_letters", t.dead_letters, alert=True)
            + _num("delivered", t.delivered, cls="start")
            + _num("attempts", t.attempts)
            + _num("failures", t.failures)
            + _num("dead", t.dead)
            + _num("gone", t.gone, alert=True)
            + _num("replayed", t.replayed)
            + _cell("recent", f"{row.recent_failures}/{row.recent_attempts}", "num start")
            + "</tr>"
        )
    return rows


def _failure_rows(page: StatusPage) -> list[str]:
    now = page.status.at
    rows = []
    for f in page.failures:
        status = f"HTTP {f.status}" if f.status is not None else ""
        rows.append(
            "<tr>"
            + _when("at", f.at, now)
            + _cell("event_id", f.event_id, "mono id")
            + _cell("target", f.target)
            + _num("attempt", f.attempt)
            + _cell("status", status)
            + _cell("error", f.error)
            + _cell("outcome", f.outcome)
            + _cell("response", f.response, "mono")
            + "</tr>"
        )
    return rows


def _dead_rows(page: StatusPage) -> list[str]:
    now = page.status.at
    return [
        "<tr>"
        + _when("dead_at", d.dead_at, now)
        + _cell("event_id", d.event_id, "mono id")
        + _cell("target", d.target)
        + _cell("source", d.source)
        + _cell("type", d.type)
        + _cell("state", "expired" if d.expired else d.state)
        + _num("attempts", d.attempts)
        + _cell("reason", cut(d.reason))
        + "</tr>"
        for d in page.dead_letters
    ]


def _source_rows(page: StatusPage) -> list[str]:
    return [
        f'<tr data-source="{_e(src.name)}">{_cell("name", src.name)}'
        + _num("received", src.received)
        + _num("duplicates", src.duplicates)
        + _num("unrouted", src.unrouted)
        + "</tr>"
        for src in page.status.sources
    ]


def _figure(field: str, label: str, value: int, alert: bool = False) -> str:
    klass = "figure alert" if alert and value else "figure"
    return (
        f'<div class="{klass}"><span class="value" data-field="{_e(field)}">{value}</span>'
        f'<span class="label">{_e(label)}</span></div>'
    )


def _figures(page: StatusPage) -> str:
    s, q = page.status, page.status.queue
    return "".join(
        (
            _figure("targets.paused", "targets paused", _count(page, PAUSED), alert=True),
            _figure("targets.breaker_open", "breakers open", _breakers_open(page), alert=True),
            _figure("targets.failing", "targets failing", _count(page, FAILING), alert=True),
            _figure("targets.degraded", "targets degraded", _count(page, DEGRADED), alert=True),
            _figure("dead_letters.total", "dead letters", page.dead_letters_total, alert=True),
            _figure("targets.pending", "deliveries due now", sum(t.pending for t in s.targets)),
            _figure(
                "targets.scheduled", "retrying or in flight", sum(t.scheduled for t in s.targets)
            ),
            # RQ jobs are kicks (worker.jobs.deliver_due): a few at most, whatever the load.
            _figure("queue.queued", "kicks queued", q.queued),
            _figure("queue.started", "kicks running", q.started),
            _figure("queue.failed", "failed kicks", q.failed, alert=True),
            _figure("workers", "workers", s.workers),
        )
    )


def _count(page: StatusPage, health: str) -> int:
    return sum(r.health == health for r in page.targets)


def _breakers_open(page: StatusPage) -> int:
    # Counted apart from health: a paused target's health is paused, open breaker or not.
    return sum(t.breaker is not None and t.breaker.is_open for t in page.status.targets)


def _banners(page: StatusPage) -> str:
    s, q = page.status, page.status.queue
    banners = []
    # Deliveries wait in the targets' due sets (pending: due now; scheduled: retries, leases),
    # not in RQ's registries: kicks are the only jobs.
    waiting = any(t.pending or t.scheduled for t in s.targets)
    if s.workers == 0 and (q.queued or q.scheduled or waiting):
        banners.append("No worker is running: queued deliveries are waiting.")
    banners += [
        f"{t.name} is paused {describe_pause(t.paused, s.at)}. Its deliveries are held "
        f"until `relay resume {t.name}`."
        for t in s.targets
        if t.paused is not None
    ]
    banners += [
        f"{t.name}'s circuit breaker is {describe_breaker(t.breaker, s.at)}. Its deliveries are "
        "held with their attempts untouched, and go out again on their own when a probe succeeds."
        for t in s.targets
        if t.breaker is not None and t.breaker.is_open
    ]
    banners += reconcile_banners(s.reconciled, s.at)
    return "".join(f'<div class="banner">{_e(b)}</div>' for b in banners)


def _document(title: str, token: str | None, body: str) -> str:
    """The page around `body`; a token given by query is kept in the refresh link."""
    target = f"; url=status?token={quote(token, safe='')}" if token else ""
    return PAGE.substitute(refresh=f"{REFRESH_SECONDS}{_e(target)}", title=_e(title), body=body)


def render_html(page: StatusPage, token: str | None = None) -> str:
    """The whole page; `token` (given by query) is kept in the refresh and JSON links."""
    failing = _count(page, FAILING)
    generated = _e(format_time(page.status.at))
    body = STATUS.substitute(
        generated=generated,
        refresh_seconds=REFRESH_SECONDS,
        queue=_e(page.status.queue.name),
        suffix=_e(f"?token={quote(token, safe='')}" if token else ""),
        banners=_banners(page),
        figures=_figures(page),
        targets=_table(
            TARGET_HEADERS, _target_rows(page), "No targets yet.", ' id="targets"', TARGET_GROUPS
        ),
        failures=_table(
            FAILURE_HEADERS,
            _failure_rows(page),
            "No failed attempts among the newest events.",
            ' id="failures"',
        ),
        dead_total=page.dead_letters_total,
        dead_letters=_table(
            DEAD_HEADERS, _dead_rows(page), "The dead-letter store is empty.", ' id="dead"'
        ),
        sources=_table(
            SOURCE_HEADERS, _source_rows(page), "No events received yet.", ' id="sources"'
        ),
        reconciliation=reconcile_section(page.status.reconciled, page.status.at),
        health_sample=HEALTH_SAMPLE,
        health_minutes=int(HEALTH_WINDOW // 60),
    )
    return _document("relay status" + (f" · {failing} failing" if failing else ""), token, body)


def render_unavailable(message: str, token: str | None = None) -> str:
    """The page while Redis does not answer: one banner, and it still reloads itself."""
    body = f'<main><div class="banner">{_e(message)}</div></main>'
    return _document("relay status · unavailable", token, body)
