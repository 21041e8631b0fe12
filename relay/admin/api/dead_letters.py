"""GET /api/v1/dead-letters, POST /api/v1/dead-letters/replay and GET /api/v1/jobs/{id}."""

from __future__ import annotations

import re
import time
from http import HTTPStatus
from typing import Any

from aiohttp import web

from relay.admin.api.common import (
    flag,
    in_thread,
    json_body,
    note,
    only_fields,
    principal_name,
)
from relay.admin.api.jobs import start_job
from relay.admin.api.params import (
    CURSOR,
    DEAD_FILTERS,
    DEFAULT_LIMIT,
    LIMIT,
    SCAN_BUDGET,
    read_fields,
    read_query,
)
from relay.admin.api.schemas import BOOLEAN, obj
from relay.admin.api.spec import Operation, PathParam
from relay.admin.errors import bad_field, json_response, not_found
from relay.admin.state import REDIS
from relay.core.times import format_time
from relay.ops import deliveries as ops
from relay.ops.events import MAX_SCAN
from relay.store.jobs import load_job

#: A bulk replay takes at most this many deliveries; what is left can be replayed after.
MAX_BULK = 100_000

_JOB_ID = re.compile(r"job_[0-9a-f]{20}")


def dead_filter(values: dict[str, Any]) -> ops.DeadFilter:
    """The dead-letter selection of parsed filters (relay.admin.api.params' names)."""
    return ops.DeadFilter(
        target=values.get("target"),
        source=values.get("source"),
        event_type=values.get("type"),
        since=values.get("dead_from"),
        until=values.get("dead_to"),
        state=values.get("state"),
        received_from=values.get("received_from"),
        received_to=values.get("received_to"),
        id_prefix=values.get("id_prefix"),
    )


def letter_json(letter: ops.DeadLetter) -> dict[str, Any]:
    """One dead letter as the API answers it (its time also as ISO text)."""
    return {**letter.to_json(), "dead": format_time(letter.dead_at)}


async def list_dead_handler(request: web.Request) -> web.StreamResponse:
    """Dead letters newest first (by when they went dead), filtered, one page at a time."""
    values = read_query(request.query, (*DEAD_FILTERS, LIMIT, CURSOR))
    page = await in_thread(
        request,
        ops.page_dead,
        dead_filter(values),
        limit=values.get("limit", DEFAULT_LIMIT),
        start=values.get("cursor"),
        max_scan=MAX_SCAN,
        deadline=time.monotonic() + SCAN_BUDGET,
    )
    return json_response(
        {
            "dead_letters": [letter_json(d) for d in page.letters],
            "next_cursor": page.next.to_cursor() if page.next is not None else None,
            "scanned": page.scanned,
            "partial": page.partial,
        }
    )


def _selection(body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The parsed `filter` of a bulk replay and `all`; 400 when it selects nothing on purpose."""
    raw = body.get("filter", {})
    if not isinstance(raw, dict):
        raise bad_field("filter", "must be an object of filters")
    values = read_fields(raw, DEAD_FILTERS, where="filter.")
    everything = flag(body, "all")
    if not values and not everything:
        raise bad_field(
            "filter", 'say what to replay: at least one filter, or "all": true for every one'
        )
    if values and everything:
        raise bad_field("all", '"all": true takes no filter')
    return values, everything


async def replay_dead_handler(request: web.Request) -> web.StreamResponse:
    """Replay the dead letters a filter selects: a count with dry_run, else a job to poll."""
    body = await json_body(request)
    only_fields(body, ("filter", "all", "dry_run"))
    values, everything = _selection(body)
    dry_run = flag(body, "dry_run")
    shown = {k: v for k, v in (body.get("filter") or {}).items()}
    what = "all dead letters" if everything else f"dead letters where {shown}"
    page = await in_thread(request, ops.page_dead, dead_filter(values), limit=MAX_BULK + 1)
    letters = page.letters[:MAX_BULK]
    more = len(page.letters) > MAX_BULK
    if dry_run:
        note(
            request, "replay_dead_letters", what, f"dry run: {len(letters)} selected", dry_run=True
        )
        return json_response({"dry_run": True, "selected": len(letters), "more": more})
    pairs = [(d.event_id, d.target) for d in letters]
    job = await start_job(
        request.app,
        request.app[REDIS],
        pairs,
        by=principal_name(request),
        selection={"filter": shown, "all": everything},
    )
    note(
        request,
        "replay_dead_letters",
        what,
        f"job {job.id} started: {len(pairs)} selected",
        job=job.id,
    )
    return json_response(
        {"job": job.to_json()},
        status=HTTPStatus.ACCEPTED,
        headers={"Location": f"/api/v1/jobs/{job.id}"},
    )


async def get_job_handler(request: web.Request) -> web.StreamResponse:
    """A bulk replay's progress."""
    job_id = request.match_info["id"]
    job = await in_thread(request, load_job, job_id) if _JOB_ID.fullmatch(job_id) else None
    if job is None:
        raise not_found("job_not_found", f"no job {job_id[:40]!r}: unknown, or over a day old")
    return json_response({"job": job.to_json()})


_FILTER_SCHEMA = obj(
    {p.name: dict(p.schema) for p in DEAD_FILTERS}, optional=tuple(p.name for p in DEAD_FILTERS)
) | {"additionalProperties": False}


OPERATIONS = (
    Operation(
        "GET",
        "/api/v1/dead-letters",
        "listDeadLetters",
        "Dead letters newest first (by when they went dead), filtered, with cursor pagination",
        list_dead_handler,
        "dead letters",
        {200: ("a page of dead letters; `next_cursor` is null on the last", "DeadLetterList")},
        query=(*DEAD_FILTERS, LIMIT, CURSOR),
    ),
    Operation(
        "POST",
        "/api/v1/dead-letters/replay",
        "replayDeadLetters",
        "Replay the dead letters a filter selects (dry_run: only count them)",
        replay_dead_handler,
        "dead letters",
        {
            200: ("dry_run: how many the filter selects", "BulkReplayCount"),
            202: ("the replay started as a job: poll its Location", "JobAnswer"),
        },
        body=obj(
            {"filter": _FILTER_SCHEMA, "all": BOOLEAN, "dry_run": BOOLEAN},
            optional=("filter", "all", "dry_run"),
        )
        | {"additionalProperties": False},
        description=(
            'Give `filter` (the filters of GET /api/v1/dead-letters) or `"all": true`. '
            f"At most {MAX_BULK:,} deliveries per replay (`more` says when there are more)."
        ),
    ),
    Operation(
        "GET",
        "/api/v1/jobs/{id}",
        "getJob",
        "A bulk replay's progress",
        get_job_handler,
        "dead letters",
        {200: ("the job", "JobAnswer"), 404: ("unknown, or over a day old", "Error")},
        path_params=(PathParam("id", "A job id (job_ and 20 hex digits)."),),
    ),
)
