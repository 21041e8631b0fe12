"""Who a request to the admin listener acts as: a bearer token, or the console's session.

Two ways in, tried in this order:

1. `Authorization: Bearer <token>`: the API's way (curl, CI, scripts). When the header is
   present it alone decides: a wrong token is refused even if a session cookie is also sent.
   Browsers never attach this header by themselves, so bearer requests need no CSRF check.
2. The console's session: a hook the console installs with `set_session_resolver(app, hook)`.

The session hook (the interface the console implements)
-------------------------------------------------------
`SessionResolver = Callable[[web.Request, TokenSet], Awaitable[Principal | None]]`

- Called for every admin request that carries no `Authorization` header, for every method.
- Returns the `Principal` of a valid session (e.g. the token kept in the console's HttpOnly,
  SameSite=Strict cookie, looked up with `tokens.lookup(value)`), or None when the request has
  no session or an invalid one (the caller then answers 401).
- A cookie is sent by the browser on its own, so for an unsafe method (anything but GET, HEAD,
  OPTIONS) the hook must also check the request's CSRF proof (a header or form field of the
  console's choosing) and raise `SessionRefused(message)` when it is missing or wrong: the API
  answers 403 with error code `csrf_failed`. It must never raise for a mere missing session.
- It is a coroutine, because a session may need a store to be checked (the console asks Redis
  whether it was signed out); a `redis.RedisError` it lets through is answered 503
  `redis_unavailable`, never taken as a valid session.
- It must not log the cookie or the token value.

Until the console installs a hook, only bearer tokens are accepted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from relay.admin.state import TOKENS
from relay.admin.tokens import Principal, TokenSet

__all__ = [
    "PRINCIPAL",
    "SAFE_METHODS",
    "SESSION_RESOLVER",
    "SessionRefused",
    "SessionResolver",
    "authenticate",
    "bearer_token",
    "set_session_resolver",
]

#: Methods that change nothing: a session may use them without a CSRF proof.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

SessionResolver = Callable[[web.Request, TokenSet], Awaitable[Principal | None]]

#: The console's session hook, when it has installed one.
SESSION_RESOLVER: web.AppKey[SessionResolver] = web.AppKey("admin_session_resolver")

#: The principal a request was authenticated as (set by the API's auth middleware).
PRINCIPAL = web.RequestKey("admin_principal", Principal)


class SessionRefused(Exception):
    """A session request was refused for a reason other than "no session": a failed CSRF check."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


def set_session_resolver(app: web.Application, resolver: SessionResolver) -> None:
    """Install the console's session hook on the admin app (before the app starts)."""
    app[SESSION_RESOLVER] = resolver


def bearer_token(request: web.Request) -> str | None:
    """The value of an `Authorization: Bearer` header; "" for another or an empty scheme;
    None when the request has no Authorization header at all."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


async def authenticate(request: web.Request) -> Principal | None:
    """The principal of `request`, or None (answer 401); SessionRefused for a failed CSRF check,
    and whatever the session hook raises when it cannot check (redis.RedisError)."""
    tokens = request.app[TOKENS]
    presented = bearer_token(request)
    if presented is not None:
        return tokens.lookup(presented) if presented else None
    resolver = request.app.get(SESSION_RESOLVER)
    return await resolver(request, tokens) if resolver is not None else None
