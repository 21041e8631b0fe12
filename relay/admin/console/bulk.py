"""Bulk replay of dead letters from the console: a count preview, then a job with progress.

POST /dead-letters/replay (from the dead-letters page) answers a preview: how many deliveries
the selection holds, how many of them have expired, and the first few, with a button to go on.
Going on starts the same replay job as `POST /api/v1/dead-letters/replay`
(JOB_STARTER below), and the browser follows the job's page, `/dead-letters/jobs/{id}`: it
reloads itself until the job ends (the script draws the progress bar from the API meanwhile).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import quote

import orjson
import redis
from aiohttp import web

from relay.admin.api.dead_letters import MAX_BULK
from relay.admin.api.jobs import start_job
from relay.admin.api.params import MAX_ID_PREFIX
from relay.admin.console.dead_letters import FILTER_FIELDS, HEADERS, parse_dead_filters
from relay.admin.console.guard import html_response, refusal_page
from relay.admin.console.html import (
    button,
    cell,
    definition_list,
    e,
    event_url,
    hidden,
    link,
    num_cell,
    pill,
    post_form,
    table,
    text_cell,
    url,
    when,
)
from relay.admin.console.layout import Viewer, render_page
from relay.admin.console.pages import Form, Page, action, audit, done, page, read, redis_of
from relay.admin.errors import ApiError
from relay.ops import deliveries as ops
from relay.ops.status_page.model import cut
from relay.store import keys
from relay.store.jobs import Job, JobState, load_job

#: Rows the preview lists (the count covers all of them).
PREVIEW_ROWS = 20
#: Most rows one "Replay selected" may tick (a page holds 50; a hand-made form no more).
MAX_SELECTED = 1000


@dataclass(frozen=True)
class Selection:
    """What an operator asked to replay: ticked rows, or every dead letter of a filter."""

    scope: str  # selected | filter
    members: tuple[str, ...]  # event_id:target, when selected
    filters: dict[str, str]  # the API's filter names and the values given, when by filter

    def hidden_fields(self) -> str:
        """The selection again, for the preview's confirm form."""
        fields = hidden("scope", self.scope)
        fields += "".join(hidden("letter", m) for m in self.members)
        return fields + "".join(hidden(f"filter_{k}", v) for k, v in self.filters.items())

    def back(self) -> str:
        """The dead-letters page this selection came from."""
        return url("/dead-letters", self.filters)


def read_selection(form: Form) -> Selection:
    """The selection a form names; ApiError (400, naming the field) when it is wrong."""
    scope = form.get("scope", "")
    filters = {k: str(form.get(f"filter_{k}", "")).strip() for k in FILTER_FIELDS}
    filters = {k: v for k, v in filters.items() if v}
    if scope == "filter":
        parse_dead_filters(filters)  # checked now, so the preview names a bad field
        return Selection("filter", (), filters)
    if scope != "selected":
        raise ApiError(HTTPStatus.BAD_REQUEST, "invalid_field", "scope: selected or filter")
    members = tuple(dict.fromkeys(str(m) for m in form.getall("letter", [])))
    if len(members) > MAX_SELECTED:
        raise ApiError(
            HTTPStatus.BAD_REQUEST, "invalid_field", f"letter: at most {MAX_SELECTED} at once"
        )
    for member in members:
        event_id, target = keys.split_dead_member(member)
        if not event_id or not target or len(event_id) > MAX_ID_PREFIX:
            raise ApiError(HTTPStatus.BAD_REQUEST, "invalid_field", "letter: not a dead letter")
    return Selection("selected", members, filters)


def selected_letters(conn: redis.Redis, selection: Selection) -> list[ops.DeadLetter]:
    """The dead letters the selection holds now (the store may have changed since the page)."""
    if selection.scope == "filter":
        dead_filter, _ = parse_dead_filters(selection.filters)
        # The API's bound: one more than it replays, so the preview can say there are more.
        return list(ops.page_dead(conn, dead_filter, limit=MAX_BULK + 1).letters)
    if not selection.members:
        return []
    # Read only the part of the store between the ticked rows' times, not all of it.
    scores = [s for s in conn.zmscore(keys.DEAD, list(selection.members)) if s is not None]
    if not scores:
        return []
    ids = tuple(dict.fromkeys(keys.split_dead_member(m)[0] for m in selection.members))
    bounded = ops.DeadFilter(event_ids=ids, since=min(scores), until=max(scores))
    wanted = set(selection.members)
    return [
        d
        for d in ops.page_dead(conn, bounded).letters
        if keys.dead_member(d.event_id, d.target) in wanted
    ]


def _preview_row(d: ops.DeadLetter, now: float) -> str:
    return (
        "<tr>"
        + cell(when(d.dead_at, now), "nowrap")
        + cell(link(event_url(d.event_id), d.event_id), "mono nowrap")
        + text_cell(d.target)
        + text_cell(d.source)
        + text_cell(d.type)
        + text_cell("expired" if d.expired else d.state)
        + num_cell(d.attempts)
        + text_cell(cut(d.reason))
        + "</tr>"
    )


def render_preview(
    selection: Selection, letters: list[ops.DeadLetter], viewer: Viewer, now: float
) -> str:
    """The count first, the first rows, and the button that starts the replay."""
    more = len(letters) > MAX_BULK
    letters = letters[:MAX_BULK]
    expired = sum(d.expired for d in letters)
    replayable = len(letters) - expired
    what = "selected" if selection.scope == "selected" else "matching the filter"
    count = (
        f'<p class="count" id="replay-count"><strong data-count="{replayable}">'
        f"{replayable}</strong> dead letter(s) {e(what)} will be replayed"
    )
    if expired:
        count += f"; {expired} more have expired (their bodies are gone) and cannot be"
    count += ".</p>"
    if more:
        count += (
            f'<p class="note">A replay takes at most {MAX_BULK:,} at once: more match the '
            "filter; replay again after this one.</p>"
        )
    shown = table(
        f"The first {min(PREVIEW_ROWS, len(letters))} of {len(letters)}",
        HEADERS,
        [_preview_row(d, now) for d in letters[:PREVIEW_ROWS]],
        empty="Nothing to replay: the selection is empty now.",
        ident="preview",
    )
    go = ""
    if replayable:
        inner = selection.hidden_fields() + hidden("confirm", "1")
        inner += button(f"Replay {replayable} dead letter(s)", cls="primary")
        go = post_form("/dead-letters/replay", viewer.csrf, inner, label="Confirm the replay")
    back = link(selection.back(), "Back to the dead letters")
    return count + f'<div class="actions">{go} {back}</div>' + shown


async def preview(request: web.Request, viewer: Viewer, form: Form) -> web.StreamResponse:
    """The preview page of a bulk replay (nothing is changed yet)."""
    try:
        selection = read_selection(form)
    except ApiError as exc:
        return refusal_page(HTTPStatus.BAD_REQUEST, exc.message, viewer)
    letters = await read(request, selected_letters, redis_of(request), selection)
    body = render_preview(selection, letters, viewer, time.time())
    return html_response(render_page("Replay dead letters", body, viewer, current="/dead-letters"))


async def start(request: web.Request, viewer: Viewer, form: Form) -> web.StreamResponse:
    """Start the replay job of a confirmed selection; redirect to its page."""
    try:
        selection = read_selection(form)
    except ApiError as exc:
        return refusal_page(HTTPStatus.BAD_REQUEST, exc.message, viewer)
    conn = redis_of(request)
    letters = await read(request, selected_letters, conn, selection)
    pairs = [(d.event_id, d.target) for d in letters[:MAX_BULK] if not d.expired]
    described = {"scope": selection.scope, "filter": selection.filters,
                 "selected": len(selection.members)}  # fmt: skip
    job = await start_job(
        request.app,
        conn,
        pairs,
        by=viewer.principal.name,
        selection=described,
    )
    what = (
        "selected dead letters"
        if selection.scope == "selected"
        else (f"dead letters where {selection.filters}")
    )
    audit(viewer, "replay_dead_letters", what, f"job {job.id} started: {job.total} selected",
          job=job.id)  # fmt: skip
    return done(request, job_path(job.id), True, f"Replaying {job.total} dead letter(s).")


@action
async def replay(request: web.Request, viewer: Viewer, form: Form) -> web.StreamResponse:
    """POST /dead-letters/replay: the preview, or (with confirm=1) the start of the job."""
    if form.get("confirm") == "1":
        return await start(request, viewer, form)
    return await preview(request, viewer, form)


def job_path(job_id: str) -> str:
    """The console page of a replay job."""
    return "/dead-letters/jobs/" + quote(job_id, safe="")


def render_job(job: Job) -> str:
    """A job's progress (the script updates it from the API while it runs), and its result."""
    running = job.state is JobState.RUNNING
    poll = f' data-job data-poll="/api/v1/jobs/{e(quote(job.id, safe=""))}"' if running else ""
    progress = (
        f'<div class="job"{poll}><p>{pill(str(job.state))} started by {e(job.by)}</p>'
        f'<label for="job-progress">Progress</label> '
        f'<progress id="job-progress" max="{max(job.total, 1)}" value="{job.done}">'
        f"{job.done} of {job.total}</progress> "
        f'<span data-progress-text aria-live="polite">{job.done} of {job.total} done</span></div>'
    )
    facts = [
        ("Selected", e(job.total)),
        ("Replayed", e(job.replayed)),
        ("Could not be replayed", e(job.failed)),
        ("Error", e(job.error or "-")),
    ]
    if job.resumed:  # only then: most jobs finish in the process that started them
        facts.append(("Resumed", e(f"{job.resumed} time(s), after its process stopped")))
    rows = [
        "<tr>"
        + cell(link(event_url(str(f.get("event_id", ""))), f.get("event_id", "")), "mono")
        + text_cell(f.get("target"))
        + text_cell(f.get("outcome"))
        + text_cell(f.get("message"))
        + "</tr>"
        for f in orjson.loads(job.failures)
        if isinstance(f, dict)
    ]
    failures = table(
        "The first deliveries that could not be replayed",
        ("Event", "Target", "Outcome", "Why"),
        rows,
        empty="Every delivery so far was replayed." if job.replayed else "",
    )
    again = link(job_path(job.id), "Reload") if running else link("/dead-letters", "Dead letters")
    return (
        progress
        + definition_list(facts)
        + (failures if rows or job.replayed else "")
        + f"<p>{again}</p>"
    )


@page("/dead-letters")
async def job_page(request: web.Request, viewer: Viewer) -> Page:
    """GET /dead-letters/jobs/{id}: a replay job's progress and result."""
    job = await read(request, load_job, redis_of(request), request.match_info["job_id"])
    if job is None:
        body = "<p>No such replay job (jobs are kept for a day).</p>"
        return Page("Replay job not found", body, status=404)
    return Page(f"Replay job {job.id}", render_job(job))
