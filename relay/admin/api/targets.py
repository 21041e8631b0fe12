"""GET /api/v1/targets, POST /api/v1/targets/{name}/pause and .../resume."""

from __future__ import annotations

import re
from typing import Any

import redis
from aiohttp import web

from relay.admin.api.common import (
    in_thread,
    json_body,
    note,
    only_fields,
    principal_name,
    routes_of,
)
from relay.admin.api.config_docs import target_config
from relay.admin.api.params import MAX_REASON
from relay.admin.api.schemas import obj
from relay.admin.api.spec import Operation, PathParam
from relay.admin.errors import bad_field, json_response, not_found
from relay.ops import deliveries as ops
from relay.store import keys
from relay.store.pauses import pause_target, paused, resume_target

#: Target names as routes.toml allows them (relay.config.fields.NAME).
_TARGET_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")

TARGET_NAME = PathParam(
    "name",
    "A target's name in routes.toml.",
    {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[A-Za-z0-9_.-]+$"},
)


async def list_targets_handler(request: web.Request) -> web.StreamResponse:
    """Every target: its state (paused or not, with why), its figures and its settings."""
    table = routes_of(request)
    status = await in_thread(request, ops.collect_status, tuple(table.targets))
    targets = [
        {
            **t.to_json(),
            "config": target_config(table.targets[t.name]) if t.name in table.targets else None,
        }
        for t in status.targets
    ]
    return json_response({"targets": targets})


def _pause_view(conn: redis.Redis, name: str) -> dict[str, Any] | None:
    found = paused(conn, [name]).get(name)
    return found.to_view() if found is not None else None


def _name_of(request: web.Request) -> str:
    """The `{name}` of the path, when it names a configured target; 404 otherwise."""
    name = request.match_info["name"]
    known = bool(_TARGET_NAME.fullmatch(name)) and name in routes_of(request).targets
    if not known:
        targets = ", ".join(sorted(routes_of(request).targets)) or "none"
        raise not_found("target_not_found", f"no target {name[:200]!r} in routes.toml ({targets})")
    return name


def _is_paused(conn: redis.Redis, name: str) -> bool:
    return bool(conn.exists(keys.paused_key(name)))


def _pause(conn: redis.Redis, name: str, reason: str) -> tuple[bool, dict[str, Any] | None]:
    changed = pause_target(conn, name, reason)
    return changed, _pause_view(conn, name)


async def pause_handler(request: web.Request) -> web.StreamResponse:
    """Hold a target's deliveries (they keep their attempts) until it is resumed."""
    name = _name_of(request)
    body = await json_body(request)
    only_fields(body, ("reason",))
    reason = body.get("reason", f"paused by {principal_name(request)} through the API")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise bad_field("reason", f"must be text of 1 to {MAX_REASON} characters")
    changed, view = await in_thread(request, _pause, name, reason)
    note(request, "pause", name, "paused" if changed else "already paused", reason=reason)
    return json_response({"target": name, "paused": True, "changed": changed, "pause": view})


async def resume_handler(request: web.Request) -> web.StreamResponse:
    """Release a paused target: its held deliveries go out within the workers' poll interval."""
    name = request.match_info["name"]
    body = await json_body(request)
    only_fields(body, ())
    configured = bool(_TARGET_NAME.fullmatch(name)) and name in routes_of(request).targets
    # A target gone from routes.toml may still be paused in Redis: resuming it is allowed.
    if not configured and not (
        bool(_TARGET_NAME.fullmatch(name)) and await in_thread(request, _is_paused, name)
    ):
        _name_of(request)  # raises the 404
    changed = await in_thread(request, resume_target, name)
    note(request, "resume", name, "resumed" if changed else "was not paused")
    return json_response({"target": name, "paused": False, "changed": changed, "pause": None})


OPERATIONS = (
    Operation(
        "GET",
        "/api/v1/targets",
        "listTargets",
        "Every target: paused or not (and why), live and total figures, its settings",
        list_targets_handler,
        "targets",
        {200: ("the targets, those of routes.toml first", "TargetList")},
    ),
    Operation(
        "POST",
        "/api/v1/targets/{name}/pause",
        "pauseTarget",
        "Pause a target: its deliveries are held, keeping their attempts, until resumed",
        pause_handler,
        "targets",
        {
            200: (
                "paused (`changed` false: it already was; the first reason is kept)",
                "PauseResult",
            ),
            404: ("no such target in routes.toml", "Error"),
        },
        path_params=(TARGET_NAME,),
        body=obj(
            {"reason": {"type": "string", "minLength": 1, "maxLength": MAX_REASON}},
            optional=("reason",),
        )
        | {"additionalProperties": False},
    ),
    Operation(
        "POST",
        "/api/v1/targets/{name}/resume",
        "resumeTarget",
        "Resume a target: held deliveries go out within the workers' poll interval",
        resume_handler,
        "targets",
        {
            200: ("resumed (`changed` false: it was not paused)", "PauseResult"),
            404: ("no such target", "Error"),
        },
        path_params=(TARGET_NAME,),
        body=obj({}) | {"additionalProperties": False},
    ),
)
