"""Every answer's JSON error shape and the one canonical log line per request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

import orjson
import structlog
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from relay.core.errors import HTTPError
from relay.core.logs import LineLogger
from relay.core.metrics import UNKNOWN_SOURCE, ReceiverMetrics
from relay.receiver.decoding import codings_named
from relay.receiver.state import FACTS

log = structlog.get_logger("relay.receiver")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """The JSON error body every non-2xx answer carries."""
    return web.Response(
        status=status,
        body=orjson.dumps({"error": message, "status": status}),
        content_type="application/json",
        headers=headers,
    )


def new_facts(method: str) -> dict[str, Any]:
    """What a request's canonical log line says, to be filled in by its handler: its first
    keys, in the line's order (`Canonical.answer` sets the status and duration)."""
    return {"method": method, "status": 0, "duration_ms": 0.0}


class Canonical:
    """JSON errors for every failure and one log line per request (never the path: it holds the
    token), counting /hooks requests in `metrics`: as the app's middleware, and around the hook
    handler where relay.receiver.dispatch sends /hooks requests past the router.

    `request_log` is made when the app is built, after logging is configured: a module-level
    logger is a proxy that looks up its bound logger again on every call.
    """

    def __init__(self, metrics: ReceiverMetrics, request_log: LineLogger) -> None:
        self.metrics = metrics
        self.request_log = request_log

    def middleware(self) -> Any:
        """The app's middleware: every request the router dispatches."""

        @web.middleware
        async def canonical(request: web.Request, handler: Handler) -> web.StreamResponse:
            facts = new_facts(request.method)
            request[FACTS] = facts
            # A /hooks request (its route has a source) is counted by source and status.
            return await self.answer(
                request, handler(request), facts, "source" in request.match_info
            )

        return canonical

    async def answer(
        self,
        request: web.BaseRequest,
        handling: Awaitable[web.StreamResponse],
        facts: dict[str, Any],
        hook: bool,
    ) -> web.StreamResponse:
        """Await the handler's answer (`handling`, which fills in `facts`: made by `new_facts`),
        turn a failure into its JSON error, then count (a `hook` request) and log the request
        (`facts` is the line: the caller gives it up)."""
        started = time.perf_counter()
        try:
            response = await handling
        except HTTPError as exc:
            facts.setdefault("reason", exc.message)
            response = error_response(int(exc.status), exc.message)
        except web.HTTPException as exc:
            # aiohttp's own answers (unknown path, client_max_size): same JSON shape, headers.
            if exc.status == HTTPStatus.GONE:  # never tell a provider to cancel a subscription
                exc = web.HTTPNotFound()
            headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
            response = error_response(exc.status, exc.reason, headers)
        except (HttpProcessingError, web.RequestPayloadError, ConnectionResetError) as exc:
            # RequestPayloadError: a body aiohttp cannot decode (broken gzip, bad chunk framing).
            facts["reason"] = "the request body could not be read"
            log.info("body_unreadable", error=type(exc).__name__)
            response = error_response(400, "the request body could not be read")
            # The rest of the body cannot be framed: aiohttp drops the connection after this
            # answer, so say so (Connection: close) rather than let a client reuse it.
            response.force_close()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("request_failed", source=facts.get("source"), method=request.method)
            response = error_response(500, "internal error; it has been logged")
        metrics = self.metrics
        status = response.status
        unread = status >= 400 and _refused(request, response, facts, metrics)
        elapsed = time.perf_counter() - started
        if hook:
            metrics.observe_request(facts.get("source", UNKNOWN_SOURCE), status, elapsed)
        # The line is `facts`, which starts with these three (`new_facts`): no second dict.
        facts["status"] = status
        # Milliseconds to three places, as a whole number of microseconds over 1000: round(x,
        # 3) of a float goes through its decimal digits, at twice the cost (the two differ, by
        # a microsecond, only where x is within a rounding error of a tie).
        facts["duration_ms"] = round(elapsed * 1_000_000) / 1000
        self.request_log.info("request", facts)
        if unread:
            await answer_then_discard(request, response)
        return response


def _refused(
    request: web.BaseRequest,
    response: web.StreamResponse,
    facts: dict[str, Any],
    metrics: ReceiverMetrics,
) -> bool:
    """After a refusal: close if the body was not read; count a refused compressed body.

    True when the body was left unread (the caller answers, then discards what still comes).
    """
    unread = request.body_exists and not request.content.at_eof()
    if unread:
        # Refused before its body was read: it is never decoded, only discarded for a bounded
        # while after the answer (answer_then_discard), then the connection closes. Say so up
        # front (Connection: close) so that no client sends its next request into it.
        response.force_close()
    reason = facts.get("refused_body")
    if reason is None and unread:
        encoding = request.headers.get(hdrs.CONTENT_ENCODING)
        if encoding is not None and codings_named(encoding):
            reason = "refused_early"  # 401/404/405...: a bomb is never inflated
    if reason is not None:
        source = facts.get("source", UNKNOWN_SOURCE)
        metrics.refuse_body(source, reason)
        log.info(
            "compressed_body_refused",
            source=source,
            reason=reason,
            status=response.status,
            encoding=request.headers.get(hdrs.CONTENT_ENCODING, "")[:40],
        )
    return unread


#: What relay reads (and throws away, never decodes) of a refused request's unread body after
#: answering it, and for how long, before it closes the connection. Most HTTP clients send the
#: whole body before they read the answer: closing at once, with their bytes still arriving,
#: resets the connection and they never see the 401/404/405/413/415. Beyond these bounds the
#: sender is not a provider, and the connection is cut.
DISCARD_BYTES = 4 * 1024 * 1024
DISCARD_SECONDS = 2.0


async def answer_then_discard(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """Send the answer now, then read and drop the rest of the body, bounded, then close."""
    left = DISCARD_BYTES
    try:
        await response.prepare(request)
        await response.write_eof()
        async with asyncio.timeout(DISCARD_SECONDS):
            while left > 0:
                chunk = await request.content.readany()
                if not chunk:
                    return
                left -= len(chunk)
    except (TimeoutError, ConnectionError, web.RequestPayloadError, HttpProcessingError):
        # The client went away, or sent more than a provider would: the connection is cut.
        return
