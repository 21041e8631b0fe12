"""Who a console request acts as, and the checks every page and action passes.

- Reading a page needs a principal: a valid session cookie (relay.admin.console.session) not
  signed out (relay.store.revoked_sessions, one EXISTS), or a bearer token as the API takes it
  (relay.admin.auth.authenticate). Without one, a page redirects to the sign-in form. When Redis
  cannot say whether the session was signed out, the check raises (the page answers 503).
- Every POST made with the session cookie must carry the session's CSRF token (a form field,
  or the `X-CSRF-Token` header from the console's script), and is refused when the browser says
  it came from another site (`Sec-Fetch-Site`). A read token's POST is refused with 403.
- The cookie is HttpOnly and SameSite=Strict, and Secure when the request came over https
  (directly, or through a proxy trusted with RELAY_ADMIN_TRUST_PROXY to say so).

`resolve_session` is the session hook of relay.admin.auth: the API takes the same cookie (the
console's script polls it), with the CSRF token in a header on writes.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import time
from http import HTTPStatus

import orjson
import structlog
from aiohttp import web

from relay.admin.auth import SAFE_METHODS, SessionRefused, authenticate, bearer_token
from relay.admin.console.html import e
from relay.admin.console.layout import Notice, NoticeKind, Viewer, render_page
from relay.admin.console.session import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_SECONDS,
    Session,
    read_session,
)
from relay.admin.state import REDIS, TOKENS
from relay.admin.tokens import Principal, TokenSet
from relay.store import revoked_sessions

log = structlog.get_logger("relay.console")

#: Set by add_console_routes from RELAY_ADMIN_TRUST_PROXY: X-Forwarded-Proto may say https.
TRUST_PROXY = web.AppKey("console_trust_proxy", bool)
#: The viewer of a request, once a page or action has let it through.
VIEWER = web.RequestKey("console_viewer", Viewer)

#: One short-lived cookie carries the result of an action to the page it redirects to.
NOTICE_COOKIE = "relay_console_notice"
NOTICE_MAX = 400

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HTML_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def html_response(body: str, status: int = 200) -> web.Response:
    """An HTML page with the console's security headers."""
    return web.Response(status=status, text=body, content_type="text/html", headers=HTML_HEADERS)


def redirect(location: str) -> web.Response:
    """303 See Other to a path of the console (after a POST, the page to show)."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def is_https(request: web.Request) -> bool:
    """Whether the browser reached us over https (directly, or via a trusted proxy)."""
    if request.secure:
        return True
    if not request.app.get(TRUST_PROXY, False):
        return False
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return forwarded.split(",")[0].strip().lower() == "https"


def set_cookie(
    request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: int
) -> None:
    """Set a console cookie: HttpOnly, SameSite=Strict, Path=/, Secure over https."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=is_https(request),
    )


def clear_cookie(request: web.Request, response: web.StreamResponse, name: str) -> None:
    """Remove a console cookie (same attributes, so the browser matches it)."""
    set_cookie(request, response, name, "", 0)


def signed_session(request: web.Request) -> Session | None:
    """The request's session as its cookie proves it (signature, expiry, token), or None; whether
    it was signed out is not asked here (session_of asks)."""
    tokens = request.app[TOKENS]
    return read_session(request.cookies.get(COOKIE), tokens.sign, time.time())


async def session_of(request: web.Request) -> Session | None:
    """The request's valid session, or None: also None once it was signed out anywhere.

    Raises redis.RedisError when Redis cannot say. That fails closed on purpose: taking the
    session when the check cannot be made would let a signed-out copy of the cookie in whenever
    Redis is away, and the console can show nothing without Redis anyway (every page reads it),
    so its callers answer the same 503 as for any other Redis failure.
    """
    session = signed_session(request)
    if session is None:
        return None
    # Only for a validly signed cookie: a forged one costs no round trip. The admin app's client
    # is sync, so the one EXISTS runs in a thread, as the pages' reads do (its socket timeouts
    # bound it).
    revoked = await asyncio.to_thread(
        revoked_sessions.is_revoked, request.app[REDIS], session.nonce
    )
    return None if revoked else session


async def revoke(request: web.Request, session: Session) -> bool:
    """Revoke `session` everywhere until it would have expired; False when it already was.
    Raises redis.RedisError when Redis does not answer."""
    return await asyncio.to_thread(
        revoked_sessions.revoke_session,
        request.app[REDIS],
        session.nonce,
        session.name,
        session.revocation_seconds(time.time()),
    )


def start_session(request: web.Request, response: web.StreamResponse, session: Session) -> bool:
    """Put `session` in the response's cookie; False when its token does not exist."""
    value = session.cookie_value(request.app[TOKENS].sign)
    if value is None:
        return False
    set_cookie(request, response, COOKIE, value, SESSION_SECONDS)
    return True


def cross_site(request: web.Request) -> bool:
    """Whether the browser says the request came from another site (Fetch Metadata)."""
    return request.headers.get("Sec-Fetch-Site", "none") in ("cross-site", "same-site")


async def resolve_session(request: web.Request, tokens: TokenSet) -> Principal | None:
    """relay.admin.auth's session hook: the principal of the cookie's session, or None (also
    once signed out); a write without the session's CSRF token in `X-CSRF-Token` raises
    SessionRefused (403); redis.RedisError when Redis cannot say (the API answers 503)."""
    session = await session_of(request)
    if session is None:
        return None
    principal = tokens.named(session.name)
    if principal is None or request.method in SAFE_METHODS:
        return principal
    if cross_site(request) or not session.csrf_ok(request.headers.get(CSRF_HEADER), tokens.sign):
        raise SessionRefused("the console's CSRF token is missing or wrong: reload the page")
    return principal


async def viewer_of(request: web.Request) -> Viewer | None:
    """Who reads a console page: a bearer token (no CSRF token), or the session; None if neither.
    Raises redis.RedisError when Redis cannot say whether the session was signed out."""
    tokens = request.app[TOKENS]
    if bearer_token(request) is not None:
        principal = await authenticate(request)
        return None if principal is None else Viewer(principal, "")
    session = await session_of(request)
    if session is None:
        return None
    principal = tokens.named(session.name)
    return None if principal is None else Viewer(principal, session.csrf_token(tokens.sign))


def refusal_page(status: HTTPStatus, message: str, viewer: Viewer | None) -> web.Response:
    """A console page that says why a request was refused."""
    body = f'<p class="refusal">{e(message)}</p><p><a href="/">Back to the overview</a></p>'
    page = render_page(status.phrase, body, viewer, heading=f"{int(status)} {status.phrase}")
    return html_response(page, int(status))


def _refused(principal: Principal, request: web.Request, result: str) -> None:
    """The audit line of a write refused before it ran (as the API writes one too)."""
    structlog.get_logger("relay.admin").info(
        "admin_audit", principal=principal.name, action=f"POST {request.path}",
        what=request.path, result=result, via="console",
    )  # fmt: skip


async def check_action(request: web.Request, form: dict[str, str]) -> Viewer | web.Response:
    """The viewer a POST acts as, or the refusal: 401 without a principal (or with a signed-out
    session), 403 for a cross-site request, a missing or wrong CSRF token, or a read token.
    Raises redis.RedisError when Redis cannot say whether the session was signed out."""
    tokens = request.app[TOKENS]
    if bearer_token(request) is not None:
        principal = await authenticate(request)  # a header a browser never adds by itself
        if principal is None:
            return refusal_page(HTTPStatus.UNAUTHORIZED, "That token is not valid.", None)
        viewer = Viewer(principal, "")
    else:
        session = await session_of(request)
        principal = tokens.named(session.name) if session is not None else None
        if session is None or principal is None:
            return refusal_page(HTTPStatus.UNAUTHORIZED, "Sign in first.", None)
        viewer = Viewer(principal, session.csrf_token(tokens.sign))
        presented = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
        if cross_site(request) or not session.csrf_ok(presented, tokens.sign):
            _refused(principal, request, "refused: csrf_failed")
            return refusal_page(
                HTTPStatus.FORBIDDEN,
                "This form is stale or came from another site: reload the page and try again.",
                viewer,
            )
    if not viewer.can_write:
        _refused(viewer.principal, request, "refused: insufficient_scope")
        return refusal_page(
            HTTPStatus.FORBIDDEN,
            f"Token {viewer.principal.name!r} has scope read: it may look, not change anything.",
            viewer,
        )
    return viewer


def set_notice(request: web.Request, response: web.StreamResponse, notice: Notice) -> None:
    """Carry `notice` to the next page this browser loads (one minute at most)."""
    raw = orjson.dumps({"k": notice.kind.value, "t": notice.text[:NOTICE_MAX]})
    value = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
    set_cookie(request, response, NOTICE_COOKIE, value, 60)


def take_notice(request: web.Request) -> Notice | None:
    """The notice an action left for this page, if any (the caller clears the cookie)."""
    value = request.cookies.get(NOTICE_COOKIE)
    if not value:
        return None
    try:
        data = orjson.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        return Notice(NoticeKind(data["k"]), str(data["t"])[:NOTICE_MAX])
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return None


def same_value(a: str | None, b: str | None) -> bool:
    """Whether two presented secrets are equal and not empty (constant time)."""
    return bool(a and b) and hmac.compare_digest((a or "").encode(), (b or "").encode())
