"""The glue of every console handler: `page` for GET pages and `action` for POST forms.

A page handler returns a `Page` (title and body markup); `page` checks who is looking first
(redirecting to the sign-in form), draws the frame, shows and clears the notice of the last
action, and answers 503 when Redis does not (also when it cannot say whether the session was
signed out: relay.admin.console.guard.session_of fails closed). An action handler gets the
checked viewer and the form (relay.admin.console.guard.check_action: CSRF, scope) and answers a
redirect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import ParamSpec, TypeVar
from urllib.parse import quote

import redis
import structlog
from aiohttp import web
from multidict import MultiDictProxy

from relay.admin.console.guard import (
    NOTICE_COOKIE,
    VIEWER,
    check_action,
    clear_cookie,
    html_response,
    redirect,
    refusal_page,
    set_notice,
    take_notice,
    viewer_of,
)
from relay.admin.console.layout import Notice, NoticeKind, Viewer, render_page
from relay.admin.state import REDIS
from relay.ops.status_page.reads import PageReader

log = structlog.get_logger("relay.console")

#: One status page reader per app (relay.ops.status_page): reloads close together (tabs,
#: operators) share one Redis read; an action drops it.
READER = web.AppKey("console_status_reader", PageReader)

#: What a page read may raise when Redis is away or slow: the page says so with a 503.
UNAVAILABLE = (redis.RedisError, OSError, TimeoutError)
#: A page's Redis reads taking longer than this answer 503 rather than hold the browser.
READ_TIMEOUT = 10.0

Form = MultiDictProxy[str | bytes | bytearray | web.FileField]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PageHandler = Callable[[web.Request, Viewer], Awaitable["Page"]]
ActionHandler = Callable[[web.Request, Viewer, Form], Awaitable[web.StreamResponse]]

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Page:
    """What a page handler made: its title and body (markup already escaped)."""

    title: str
    body: str
    heading: str | None = None
    status: int = 200


def sign_in_redirect(request: web.Request) -> web.Response:
    """303 to the sign-in form, coming back here afterwards."""
    return redirect("/sign-in?next=" + quote(request.path_qs, safe=""))


async def read(request: web.Request, func: Callable[P, T], *args: P.args, **kw: P.kwargs) -> T:
    """Run a sync relay.ops read in a thread, bounded by READ_TIMEOUT."""
    return await asyncio.wait_for(asyncio.to_thread(func, *args, **kw), READ_TIMEOUT)


def unavailable(
    request: web.Request, exc: BaseException, advice: str, viewer: Viewer | None
) -> web.Response:
    """The 503 page of a request Redis did not answer (logged once, with the error's type)."""
    log.warning("console_unavailable", path=request.path, error=type(exc).__name__)
    return refusal_page(
        HTTPStatus.SERVICE_UNAVAILABLE,
        f"Redis did not answer ({type(exc).__name__}): {advice}",
        viewer,
    )


def redis_of(request: web.Request) -> redis.Redis:
    """The admin app's Redis client."""
    return request.app[REDIS]


def page(current: str) -> Callable[[PageHandler], Handler]:
    """Make a page handler an aiohttp handler: sign-in first, the frame, the notice, 503s."""

    def decorate(handler: PageHandler) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                viewer = await viewer_of(request)
            except UNAVAILABLE as exc:
                return unavailable(request, exc, "reload in a moment.", None)
            if viewer is None:
                return sign_in_redirect(request)
            request[VIEWER] = viewer
            try:
                made = await handler(request, viewer)
            except UNAVAILABLE as exc:
                return unavailable(request, exc, "reload in a moment.", viewer)
            notice = take_notice(request)
            html = render_page(
                made.title, made.body, viewer, current=current, heading=made.heading, notice=notice
            )
            response = html_response(html, made.status)
            if notice is not None:
                clear_cookie(request, response, NOTICE_COOKIE)
            return response

        return run

    return decorate


def action(handler: ActionHandler) -> Handler:
    """Make an action handler an aiohttp handler: CSRF and scope checked before it runs."""

    async def run(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        try:
            checked = await check_action(request, {k: str(v) for k, v in form.items()})
        except UNAVAILABLE as exc:
            return unavailable(request, exc, "nothing was changed; try again in a moment.", None)
        if isinstance(checked, web.Response):
            return checked
        request[VIEWER] = checked
        try:
            return await handler(request, checked, form)
        except UNAVAILABLE as exc:
            return unavailable(
                request,
                exc,
                "nothing was changed, or not all of it; look at the page again before retrying.",
                checked,
            )

    return run


def done(request: web.Request, location: str, ok: bool, text: str) -> web.Response:
    """Redirect after an action, with a notice of what it did for the next page (whose figures
    are read anew: the status page's shared read would still show them as before)."""
    request.app[READER].forget()
    response = redirect(location)
    set_notice(request, response, Notice(NoticeKind.OK if ok else NoticeKind.ERROR, text))
    return response


def audit(viewer: Viewer, action_name: str, what: str, result: str, **facts: object) -> None:
    """The one audit line of a write, in the API's words (`admin_audit`: who, never a token
    value; the action; what it was done to; how it ended), marked as made in the console."""
    structlog.get_logger("relay.admin").info(
        "admin_audit", principal=viewer.principal.name, action=action_name, what=what,
        result=result, via="console", **facts,
    )  # fmt: skip


def form_text(form: Form, name: str, limit: int = 500) -> str:
    """A text field of a form ("" when absent), stripped and cut to `limit` characters."""
    value = form.get(name, "")
    return value.strip()[:limit] if isinstance(value, str) else ""
