"""The admin app's one middleware for `/api/`: authentication, scope, and the error shape.

Every path under `/api/v1` needs a principal (relay.admin.auth): none, or a wrong token, is 401;
a read token on a write (any method but GET/HEAD/OPTIONS) is 403. Authentication runs before
routing, so an unknown path under `/api/v1` is 401 too without a token: the API does not say
which paths exist to someone who may not use it. Paths outside `/api/` (the console) pass
through untouched; the console authenticates its own pages with the same `authenticate`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus

import structlog
from aiohttp import web

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


def _authorize(request: web.Request) -> None:
    """Set the request's principal, or raise the 401/403 ApiError."""
    try:
        principal = authenticate(request)
    except SessionRefused as exc:
        raise forbidden("csrf_failed", exc.message) from None
    if principal is None:
        if not request.app[TOKENS]:
            raise unauthorized("no admin tokens are configured: set RELAY_ADMIN_TOKENS")
        raise unauthorized("a valid token is needed: Authorization: Bearer <token>")
    if request.method not in SAFE_METHODS and not principal.can_write:
        raise forbidden(
            "insufficient_scope", f"token {principal.name!r} has scope read; this needs write"
        )
    request[PRINCIPAL] = principal


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate `/api/v1` requests and answer every `/api/` error in the stable shape."""
    if not request.path.startswith(API_PREFIX):
        return await handler(request)
    try:
        if _protected(request.path):
            _authorize(request)
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < HTTPStatus.BAD_REQUEST:
            raise  # redirects and the like are not errors
        return error_response(from_http_exception(exc))
