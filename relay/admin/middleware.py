"""The admin app's one middleware for `/api/`: authentication, scope, and the error shape.

Every path under `/api/v1` needs a principal (relay.admin.auth): none, or a wrong token, is 401;
a read token on a write (any method but GET/HEAD/OPTIONS) is 403. Authentication runs before
routing, so an unknown path under `/api/v1` is 401 too without a token: the API does not say
which paths exist to someone who may not use it. Paths outside `/api/` (the console) pass
through untouched; the console authenticates its own pages with the same `authenticate`.

Every write under `/api/v1` (any method but GET/HEAD/OPTIONS), refused or not, is logged once
as an `admin_audit` line: the principal's name (never a token value), the action, what it was
about, and the result (handlers describe theirs with relay.admin.api.common.note).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus

import redis
import structlog
from aiohttp import web

from relay.admin.api.common import AUDIT
from relay.admin.auth import PRINCIPAL, SAFE_METHODS, SessionRefused, authenticate
from relay.admin.errors import (
    ApiError,
    error_response,
    forbidden,
    from_http_exception,
    unauthorized,
)
from relay.admin.state import TOKENS

API_PREFIX = "/api/"
#: Paths under here need a principal; the OpenAPI document beside them does not (it holds no data).
PROTECTED_PREFIX = "/api/v1"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = structlog.get_logger("relay.admin")


def _protected(path: str) -> bool:
    return path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")


async def _authorize(request: web.Request) -> None:
    """Set the request's principal, or raise the 401/403 ApiError."""
    try:
        principal = await authenticate(request)
    except SessionRefused as exc:
        raise forbidden("csrf_failed", exc.message) from None
    if principal is None:
        if not request.app[TOKENS]:
            raise unauthorized("no admin tokens are configured: set RELAY_ADMIN_TOKENS")
        raise unauthorized("a valid token is needed: Authorization: Bearer <token>")
    request[PRINCIPAL] = principal  # also for the audit line of a refused write
    if request.method not in SAFE_METHODS and not principal.can_write:
        raise forbidden(
            "insufficient_scope", f"token {principal.name!r} has scope read; this needs write"
        )


def _audit(request: web.Request, status: int, code: str | None) -> None:
    """The one audit line of a write: who, what, and how it ended (never a token value)."""
    principal = request.get(PRINCIPAL)
    facts = dict(request.get(AUDIT) or {})
    route = request.match_info.route.resource
    log.info(
        "admin_audit",
        principal=principal.name if principal is not None else None,
        action=facts.pop("action", None) or f"{request.method} {route.canonical if route else '?'}",
        what=facts.pop("what", None) or request.path,
        result=facts.pop("result", None) or code or str(status),
        status=status,
        **facts,
    )


async def _answer(request: web.Request, handler: Handler) -> tuple[web.StreamResponse, str | None]:
    """The handler's answer, every failure in the API's error shape; and the error code."""
    try:
        if _protected(request.path):
            await _authorize(request)
        return await handler(request), None
    except ApiError as exc:
        return error_response(exc), exc.code
    except web.HTTPException as exc:
        if exc.status < HTTPStatus.BAD_REQUEST:
            raise  # redirects and the like are not errors
        error = from_http_exception(exc)
        response = error_response(error)
        if "Allow" in exc.headers:  # a 405 says which methods the path takes
            response.headers["Allow"] = exc.headers["Allow"]
        return response, error.code
    except redis.RedisError as exc:
        log.warning("admin_redis_error", path=request.path, error=type(exc).__name__)
        error = ApiError(
            HTTPStatus.SERVICE_UNAVAILABLE,
            "redis_unavailable",
            f"Redis did not answer: {type(exc).__name__}",
        )
        return error_response(error), error.code


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate `/api/v1` requests, answer every `/api/` error in the stable shape, and
    write one audit line per write."""
    if not request.path.startswith(API_PREFIX):
        return await handler(request)
    response, code = await _answer(request, handler)
    if request.method not in SAFE_METHODS and _protected(request.path):
        _audit(request, response.status, code)
    return response
