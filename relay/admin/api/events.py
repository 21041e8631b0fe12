"""GET /api/v1/events, GET /api/v1/events/{id} and POST /api/v1/events/{id}/replay."""

from __future__ import annotations

import re
import time
from http import HTTPStatus
from typing import Any

from aiohttp import web

from relay.admin.api.common import flag, in_thread, json_body, note, only_fields
from relay.admin.api.params import (
    DEFAULT_LIMIT,
    EVENT_CURSOR,
    EVENT_FILTERS,
    LIMIT,
    MAX_FILTER,
    SCAN_BUDGET,
    read_query,
)
from relay.admin.api.schemas import BOOLEAN, obj
from relay.admin.api.spec import Operation, PathParam
from relay.admin.errors import ApiError, bad_field, json_response, not_found
from relay.admin.state import SETTINGS
from relay.ops import deliveries as ops
from relay.ops.events import MAX_SCAN, EventQuery, get_event, list_events
from relay.ops.events.documents import event_json, summary_json

#: Event ids (with a split suffix): anything else cannot be one, and is not looked up.
_EVENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

EVENT_ID = PathParam(
    "id",
    "An event id (evt_ and 26 characters).",
    {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_-]+$"},
)


def event_id_of(request: web.Request) -> str:
    """The `{id}` of the path; 404 when it cannot be an event id."""
    event_id = request.match_info["id"]
    if not _EVENT_ID.fullmatch(event_id):
        raise not_found(
            "event_not_found", "no such event: event ids look like evt_ and 26 characters"
        )
    return event_id


def event_query(values: dict[str, Any]) -> EventQuery:
    """The listing query of parsed filters (relay.admin.api.params' names)."""
    return EventQuery(
        source=values.get("source"),
        type_glob=values.get("type"),
        target=values.get("target"),
        state=values.get("state"),
        since=values.get("received_from"),
        until=values.get("received_to"),
        id_prefix=values.get("id_prefix"),
    )


async def list_events_handler(request: web.Request) -> web.StreamResponse:
    """Events newest first, filtered, one page at a time."""
    values = read_query(request.query, (*EVENT_FILTERS, LIMIT, EVENT_CURSOR))
    listing = await in_thread(
        request,
        list_events,
        event_query(values),
        limit=values.get("limit", DEFAULT_LIMIT),
        max_scan=MAX_SCAN,
        start=values.get("cursor"),
        deadline=time.monotonic() + SCAN_BUDGET,
    )
    return json_response(
        {
            "events": [summary_json(s) for s in listing.events],
            "next_cursor": listing.next.to_cursor() if listing.next is not None else None,
            "scanned": listing.scanned,
            "partial": listing.partial,
        }
    )


async def get_event_handler(request: web.Request) -> web.StreamResponse:
    """One event: record, headers, whole body, each target's state and attempt log."""
    event_id = event_id_of(request)
    view = await in_thread(request, get_event, event_id)
    if view is None:
        raise not_found(
            "event_not_found",
            f"no event {event_id}: unknown, or expired after the retention period",
        )
    return json_response(event_json(view, 0, full_body=True))


def _refusal(event_id: str, results: list[ops.ReplayResult]) -> ApiError:
    """Why nothing of an event could be replayed: 404 when the event is unknown, else 409."""
    first = results[0]
    message = "; ".join(r.message for r in results if r.message) or "nothing to replay"
    if first.outcome == "expired" and not first.target:
        return not_found("event_not_found", message)
    return ApiError(HTTPStatus.CONFLICT, first.outcome, message)


async def replay_event_handler(request: web.Request) -> web.StreamResponse:
    """Replay an event's dead deliveries (or only `target`'s), keeping the webhook-id."""
    event_id = event_id_of(request)
    body = await json_body(request)
    only_fields(body, ("target", "dry_run"))
    target = body.get("target")
    if target is not None and (not isinstance(target, str) or not 0 < len(target) <= MAX_FILTER):
        raise bad_field("target", f"must be a target name (1 to {MAX_FILTER} characters)")
    dry_run = flag(body, "dry_run")
    retention = request.app[SETTINGS].retention
    pairs, nothing = await in_thread(request, ops.event_pairs, [event_id], target)
    results = nothing + await in_thread(
        request, ops.replay_pairs, pairs, retention=retention, dry_run=dry_run
    )
    summary = ops.replay_summary(dry_run, len(pairs), results)
    ok = sum(r.ok for r in results)
    what = f"{event_id}" + (f" to {target}" if target else "")
    if not ok:
        error = _refusal(event_id, results)
        note(request, "replay_event", what, f"refused: {error.code}", dry_run=dry_run)
        raise error
    done = ", ".join(r.target for r in results if r.ok)
    note(
        request,
        "replay_event",
        what,
        f"{'would replay' if dry_run else 'replayed'} {ok} ({done}), failed {len(results) - ok}",
        dry_run=dry_run,
    )
    return json_response({"event_id": event_id, **summary})


_EVENT_TAG = "events"

OPERATIONS = (
    Operation(
        "GET",
        "/api/v1/events",
        "listEvents",
        "Events newest first, filtered, with cursor pagination",
        list_events_handler,
        _EVENT_TAG,
        {200: ("a page of events; `next_cursor` is null on the last", "EventList")},
        query=(*EVENT_FILTERS, LIMIT, EVENT_CURSOR),
        description=(
            "A page reads at most 10,000 index entries: when a filter matches little, the page "
            "may hold fewer events than `limit` (`partial`), and `next_cursor` goes on from "
            "where the reading stopped."
        ),
    ),
    Operation(
        "GET",
        "/api/v1/events/{id}",
        "getEvent",
        "One event: its record, headers, body, each target's state and attempts",
        get_event_handler,
        _EVENT_TAG,
        {200: ("the event", "Event"), 404: ("unknown or expired", "Error")},
        path_params=(EVENT_ID,),
    ),
    Operation(
        "POST",
        "/api/v1/events/{id}/replay",
        "replayEvent",
        "Replay an event's dead deliveries (all of them, or one target's)",
        replay_event_handler,
        _EVENT_TAG,
        {
            200: ("what was replayed (or, with dry_run, would be)", "ReplaySummary"),
            404: ("unknown or expired", "Error"),
            409: ("nothing to replay: no dead delivery (code not_dead, expired, ...)", "Error"),
        },
        path_params=(EVENT_ID,),
        body=obj(
            {
                "target": {"type": "string", "minLength": 1, "maxLength": MAX_FILTER},
                "dry_run": BOOLEAN,
            },
            optional=("target", "dry_run"),
        )
        | {"additionalProperties": False},
    ),
)
