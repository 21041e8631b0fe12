"""Who may see the status page: its token (Bearer header or ?token=), else this machine only."""

from __future__ import annotations

import hmac
import ipaddress

import orjson
from aiohttp import web

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token may be in the URL
}

#: Headers a reverse proxy adds: a request carrying one did not come from this machine's user.
_FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP", "X-Forwarded-Host")


def refused(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON error response with the page's security headers."""
    return web.Response(
        status=status,
        body=orjson.dumps({"error": message, "status": status}),
        content_type="application/json",
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


def _unauthorized(message: str) -> web.Response:
    return refused(401, message, {"WWW-Authenticate": 'Bearer realm="relay status"'})


def given_token(request: web.Request) -> tuple[str | None, bool]:
    """The token a request carries (Bearer header first, then ?token=) and whether by query."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    by_query = request.query.get("token")
    return (by_query, True) if by_query else (None, False)


def is_direct_local(request: web.BaseRequest) -> bool:
    """Whether the request came straight from this machine: loopback, and through no proxy."""
    remote = request.remote or ""
    try:
        loopback = ipaddress.ip_address(remote.removeprefix("::ffff:")).is_loopback
    except ValueError:  # a Unix socket (no address) or something unparsable: not known local
        return False
    return loopback and not any(name in request.headers for name in _FORWARDING_HEADERS)


def check_token(request: web.Request, expected: str) -> tuple[web.Response | None, str | None]:
    """(a 401/403 refusal or None, the token to keep in links when it came by query).

    With no token set, the page is for this machine only: a receiver exposed on a network (or
    behind a proxy that forwards `/status`) must not show target names and their errors to
    anyone who asks.
    """
    if not expected:
        if is_direct_local(request):
            return None, None
        return refused(
            403,
            "the status page is only served to this machine while RELAY_STATUS_TOKEN is unset; "
            "set it to see the page from elsewhere",
        ), None
    value, by_query = given_token(request)
    if value is None:
        return _unauthorized(
            "the status page needs its token: Authorization: Bearer <token> or ?token=<token>"
        ), None
    if not hmac.compare_digest(value.encode(), expected.encode()):
        return _unauthorized("the status token is wrong"), None
    return None, value if by_query else None
