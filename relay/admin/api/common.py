"""What every API handler shares: Redis calls off the loop, the JSON body, and audit facts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import orjson
import redis
from aiohttp import web

from relay.admin.auth import PRINCIPAL
from relay.admin.errors import bad_field
from relay.admin.state import REDIS, ROUTES
from relay.config.model import RouteTable

P = ParamSpec("P")
R = TypeVar("R")

#: What a write did, for its one audit line (relay.admin.middleware writes it).
AUDIT = web.RequestKey("admin_audit", dict[str, Any])


async def in_thread(request: web.Request, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """`fn(redis, *args, **kwargs)` in a worker thread: relay.ops reads with a sync client."""
    conn: redis.Redis = request.app[REDIS]
    return await asyncio.to_thread(fn, conn, *args, **kwargs)


def routes_of(request: web.Request) -> RouteTable:
    """The route table in force."""
    return request.app[ROUTES]()


def principal_name(request: web.Request) -> str:
    """The name of the token (or session) the request acts as."""
    return request[PRINCIPAL].name


def note(request: web.Request, action: str, what: str, result: str, **facts: Any) -> None:
    """Record what a write did; the middleware logs it once as the request's audit line."""
    request[AUDIT] = {"action": action, "what": what, "result": result, **facts}


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; {} for an empty body; 400 naming `body` otherwise."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_field("body", "not valid JSON") from None
    if not isinstance(data, dict):
        raise bad_field("body", "must be a JSON object")
    return data


def flag(body: dict[str, Any], name: str, default: bool = False) -> bool:
    """A boolean field of a JSON body."""
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise bad_field(name, "must be true or false")
    return value


def only_fields(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    """400 for a field the operation does not take (a typo would otherwise be ignored)."""
    for name in body:
        if name not in allowed:
            raise bad_field(name, "unknown field")
