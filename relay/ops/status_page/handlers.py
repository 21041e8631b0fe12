"""The status page's aiohttp part: GET /status (HTML) and GET /status.json, thin over the rest."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
import redis
import structlog
from aiohttp import web

from relay.ops.status_page.auth import SECURITY_HEADERS, check_token
from relay.ops.status_page.reads import CACHE_SECONDS, UNAVAILABLE, PageReader
from relay.ops.status_page.view import render_html, render_unavailable

log = structlog.get_logger("relay.status")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
_HTML_HEADERS = {**SECURITY_HEADERS, "Content-Security-Policy": CSP, "X-Frame-Options": "DENY"}


def _unavailable_message(exc: BaseException) -> str:
    log.warning("status_unavailable", error=type(exc).__name__)
    return f"Redis did not answer the status read: {type(exc).__name__}"


def status_handlers(
    token: str,
    connection: Callable[[], redis.Redis],
    targets: Callable[[], Sequence[str]],
    *,
    cache_seconds: float = CACHE_SECONDS,
    reconciled: Callable[[], Sequence[str]] = tuple,
) -> tuple[Handler, Handler]:
    """The handlers of /status and /status.json; `token` ("" for none) guards both.
    `reconciled` names the sources with a `reconcile` table."""
    reader = PageReader(connection, targets, cache_seconds, reconciled)

    async def page_html(request: web.Request) -> web.StreamResponse:
        refusal, kept = check_token(request, token)
        if refusal is not None:
            return refusal
        try:
            page = await reader.read()
        except UNAVAILABLE as exc:
            # Still a page that reloads itself: it comes back on its own with Redis.
            body = render_unavailable(_unavailable_message(exc), kept)
            return web.Response(
                status=503, text=body, content_type="text/html", headers=_HTML_HEADERS
            )
        return web.Response(
            text=render_html(page, kept), content_type="text/html", headers=_HTML_HEADERS
        )

    async def page_json(request: web.Request) -> web.StreamResponse:
        refusal, _ = check_token(request, token)
        if refusal is not None:
            return refusal
        try:
            page = await reader.read()
        except UNAVAILABLE as exc:
            body: dict[str, Any] = {"error": _unavailable_message(exc), "status": 503}
            status = 503
        else:
            body, status = page.to_json(), 200
        return web.Response(
            status=status,
            body=orjson.dumps(body),
            content_type="application/json",
            headers=SECURITY_HEADERS,
        )

    return page_html, page_json


def add_status_routes(
    app: web.Application,
    token: str,
    connection: Callable[[], redis.Redis],
    targets: Callable[[], Sequence[str]],
    reconciled: Callable[[], Sequence[str]] = tuple,
) -> None:
    """Add GET /status and GET /status.json to the receiver app."""
    page_html, page_json = status_handlers(token, connection, targets, reconciled=reconciled)
    app.router.add_get("/status", page_html, allow_head=False)
    app.router.add_get("/status.json", page_json, allow_head=False)
