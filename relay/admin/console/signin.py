"""Signing in with a token and out again: GET/POST /sign-in, POST /sign-out.

The sign-in form has a CSRF check of its own before there is a session (a random value both in
a short-lived cookie and in the form: the double-submit pattern), so no other site can sign a
browser in under a token of its choosing. Signing out removes the cookie and revokes the
session in Redis, so a copy of the cookie (another tab's, or a stolen one) ends with it. Log
lines name the token, never its value.
"""

from __future__ import annotations

import time
from http import HTTPStatus
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from relay.admin.console.guard import (
    NOTICE_COOKIE,
    clear_cookie,
    cross_site,
    html_response,
    redirect,
    refusal_page,
    revoke,
    same_value,
    set_cookie,
    set_notice,
    signed_session,
    start_session,
    take_notice,
    viewer_of,
)
from relay.admin.console.html import button, e, hidden
from relay.admin.console.layout import Notice, NoticeKind, render_page
from relay.admin.console.pages import UNAVAILABLE
from relay.admin.console.session import COOKIE, CSRF_FIELD, new_pre_session, new_session
from relay.admin.state import TOKENS
from relay.core.times import format_time

log = structlog.get_logger("relay.console")

#: The sign-in form's own CSRF cookie, and how long a form stays usable (seconds).
PRE_COOKIE = "relay_console_signin"
PRE_SECONDS = 1800


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path of this console only (never another site)."""
    if not value:
        return "/"
    parts = urlsplit(value)
    local = not parts.scheme and not parts.netloc and value.startswith("/")
    if not local or value.startswith("//") or "\\" in value or value.startswith("/sign-"):
        return "/"
    return value


def _form(pre: str, next_path: str, notice: Notice | None, tokens_configured: bool) -> str:
    hint = (
        "Paste an admin token: one of the values of RELAY_ADMIN_TOKENS (name:scope:value)."
        if tokens_configured
        else "No admin token is configured: set RELAY_ADMIN_TOKENS and restart relay serve."
    )
    fields = (
        hidden(CSRF_FIELD, pre)
        + hidden("next", next_path)
        + '<div class="field"><label for="f-token">Token</label>'
        '<input type="password" id="f-token" name="token" required autocomplete="off" '
        'spellcheck="false" autofocus></div>' + button("Sign in", cls="primary")
    )
    form = f'<form method="post" action="/sign-in" class="signin">{fields}</form>'
    body = f"<p>{e(hint)}</p>{form}"
    return render_page("Sign in", body, None, notice=notice)


def _form_response(
    request: web.Request, next_path: str, notice: Notice | None = None, status: int = 200
) -> web.Response:
    pre = new_pre_session()
    tokens_configured = bool(request.app[TOKENS])
    response = html_response(_form(pre, next_path, notice, tokens_configured), status)
    set_cookie(request, response, PRE_COOKIE, pre, PRE_SECONDS)
    return response


async def sign_in_form(request: web.Request) -> web.StreamResponse:
    """GET /sign-in: the form (or the overview for a browser already signed in), with the notice
    sign-out left, if any."""
    next_path = safe_next(request.query.get("next"))
    try:
        signed_in = await viewer_of(request) is not None
    except UNAVAILABLE:
        # The form needs no Redis: show it rather than send a browser whose session cannot be
        # checked to a page that cannot be shown (that page answers the 503 itself).
        signed_in = False
    if signed_in:
        raise web.HTTPSeeOther(next_path)
    notice = take_notice(request)
    response = _form_response(request, next_path, notice)
    if notice is not None:
        clear_cookie(request, response, NOTICE_COOKIE)
    return response


async def sign_in(request: web.Request) -> web.StreamResponse:
    """POST /sign-in: check the form's own CSRF value and the token; start a session."""
    form = await request.post()
    next_path = safe_next(str(form.get("next", "")))
    presented = str(form.get(CSRF_FIELD, ""))
    if cross_site(request) or not same_value(request.cookies.get(PRE_COOKIE), presented):
        log.warning("console_sign_in_refused", reason="csrf")
        note = Notice(NoticeKind.ERROR, "The form was stale or came from another site: try again.")
        return _form_response(request, next_path, note, int(HTTPStatus.FORBIDDEN))
    tokens = request.app[TOKENS]
    principal = tokens.lookup(str(form.get("token", "")).strip())
    if principal is None:
        log.warning("console_sign_in_refused", reason="unknown token")
        note = Notice(NoticeKind.ERROR, "That token is not valid.")
        return _form_response(request, next_path, note, int(HTTPStatus.UNAUTHORIZED))
    response = redirect(next_path)
    start_session(request, response, new_session(principal.name, time.time()))
    clear_cookie(request, response, PRE_COOKIE)
    log.info("console_signed_in", principal=principal.name, scope=str(principal.scope))
    return response


async def sign_out(request: web.Request) -> web.StreamResponse:
    """POST /sign-out: end the session everywhere (needs the session's CSRF token): the cookie
    goes, and the session is revoked in Redis so that no copy of the cookie is taken any more.
    When Redis does not answer, the cookie still goes and the sign-in page says that copies of
    it stay valid until the session's end."""
    form = await request.post()
    # The signature only, not the revocation list: signing out must work while Redis is away,
    # and revoking a session that already is changes nothing.
    session = signed_session(request)
    if session is None:
        raise web.HTTPSeeOther("/sign-in")
    tokens = request.app[TOKENS]
    if cross_site(request) or not session.csrf_ok(str(form.get(CSRF_FIELD, "")), tokens.sign):
        # No viewer in the frame: whether this session was signed out already is not asked.
        return refusal_page(HTTPStatus.FORBIDDEN, "This form is stale: reload the page.", None)
    response = redirect("/sign-in")
    clear_cookie(request, response, COOKIE)
    try:
        if await revoke(request, session):
            log.info("session_revoked", principal=session.name, until=session.expires())
    except UNAVAILABLE as exc:
        log.warning("session_not_revoked", principal=session.name, error=type(exc).__name__)
        until = format_time(session.expires())
        note = Notice(
            NoticeKind.ERROR,
            f"Signed out in this browser only: Redis did not answer ({type(exc).__name__}), so "
            f"a copy of this session's cookie stays valid until {until}. To end it now, rotate "
            "the token.",
        )
        set_notice(request, response, note)
    log.info("console_signed_out", principal=session.name)
    return response


def add_sign_in_routes(app: web.Application) -> None:
    """GET and POST /sign-in, POST /sign-out."""
    app.router.add_get("/sign-in", sign_in_form, allow_head=False)
    app.router.add_post("/sign-in", sign_in)
    app.router.add_post("/sign-out", sign_out)
