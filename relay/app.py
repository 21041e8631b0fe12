"""The receiver's aiohttp application: `/hooks/{source}[/{token}]`, `/healthz`, `/readyz`.

The handler stays thin: the pure parts live in `relay.extract` (request -> events),
`relay.signatures` (ms-signature) and `relay.routes` (matching); durability is
`relay.intake.IntakeWriter` (group commit). Statuses are DESIGN.md's: 202 only after the commit,
400/401/404/405/413/415 for input problems, 503 when Redis cannot take the event, never 410.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from types import MappingProxyType
from typing import Any

import orjson
import redis
import structlog
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CollectorRegistry
from structlog.typing import FilteringBoundLogger

from relay import keys
from relay.decoding import BodyDecoder, Coding, accepted_coding, codings_named
from relay.envelope import Event
from relay.errors import (
    BadRequest,
    HTTPError,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from relay.extract import kept_headers, parse_request
from relay.ids import derived_event_id, new_event_id
from relay.intake import Committed, IntakeWriter, intake_client, sync_client
from relay.metrics import (
    CONTENT_TYPE,
    UNKNOWN_SOURCE,
    ReceiverMetrics,
    RedisCollector,
    multiprocess_registry,
    render,
)
from relay.reload import POLL_INTERVAL, RouteReloader
from relay.route_table import RouteTable, Source
from relay.settings import Settings
from relay.signatures import verify_ms_signature
from relay.spool import Spool
from relay.spool_drain import SpoolDrainer, redis_commit
from relay.status_page import add_status_routes

log = structlog.get_logger("relay.receiver")

#: The ASP.NET handshake sends 32 hex digits; anything much longer is not a handshake.
MAX_ECHO = 256
#: REST Hooks secrets are short random strings; a huge header is not one.
MAX_HOOK_SECRET = 1024
#: How long /readyz waits for PING before calling Redis unreachable.
READY_TIMEOUT = 1.0

#: How every server of this app must be built (`relay serve`, its `--processes` children,
#: `relay dev`'s embedded receiver, the tests): aiohttp's `auto_decompress` inflates a body in
#: the protocol before any handler runs, refused requests included, so relay decodes instead
#: (relay.decoding, bounded by the source's max_body); and with no lingering, the unread body
#: of a refused request is not drained for up to 10 s after the answer: the connection closes.
SERVER_OPTIONS: Mapping[str, Any] = MappingProxyType(
    {"auto_decompress": False, "lingering_time": 0.0}
)


@dataclass
class RoutesHolder:
    """The current route table; mutable on purpose so a reload can swap it in place."""

    table: RouteTable


SETTINGS = web.AppKey("settings", Settings)
ROUTES = web.AppKey("routes", RoutesHolder)
REDIS = web.AppKey("redis", redis.Redis)
WRITER = web.AppKey("writer", IntakeWriter)
SPOOL = web.AppKey("spool", Spool)
DRAINER = web.AppKey("spool_drainer", SpoolDrainer)
METRICS = web.AppKey("metrics", ReceiverMetrics)
#: What GET /metrics renders: this process's registry, or the sum over `--processes N`.
SCRAPE = web.AppKey("scrape", CollectorRegistry)

#: Per-request facts for the canonical log line, filled in by the handler.
_FACTS = web.RequestKey("facts", dict[str, Any])

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


def canonical_middleware(metrics: ReceiverMetrics, request_log: FilteringBoundLogger) -> Any:
    """The middleware giving JSON errors for every failure and one log line per request (never
    the path: it holds the token), counting /hooks requests in `metrics`.

    `request_log` is a logger already bound (`structlog.get_logger().bind()`), made when the
    app is built, after logging is configured: a module-level logger is a proxy that looks up
    its bound logger on every call, about 1.5% of the receiver's instructions per request.
    """

    @web.middleware
    async def canonical(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        facts: dict[str, Any] = {}
        request[_FACTS] = facts
        try:
            response = await handler(request)
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
        if response.status >= 400:
            _refused(request, response, facts, metrics)
        elapsed = time.perf_counter() - started
        if "source" in request.match_info:  # a /hooks request: counted by source and status
            metrics.observe_request(facts.get("source", UNKNOWN_SOURCE), response.status, elapsed)
        request_log.info(
            "request",
            method=request.method,
            status=response.status,
            duration_ms=round(elapsed * 1000, 3),
            **facts,
        )
        return response

    return canonical


def _refused(
    request: web.Request,
    response: web.StreamResponse,
    facts: dict[str, Any],
    metrics: ReceiverMetrics,
) -> None:
    """After a refusal: close if the body was not read; count a refused compressed body."""
    unread = request.body_exists and not request.content.at_eof()
    if unread:
        # Refused before its body was read: the server does not drain it (SERVER_OPTIONS) but
        # closes the connection after this answer. Say so up front (Connection: close) so that
        # no client sends its next request into a closing socket.
        response.force_close()
    reason = facts.get("refused_body")
    if reason is None and unread:
        encoding = request.headers.get(hdrs.CONTENT_ENCODING)
        if encoding is not None and codings_named(encoding):
            reason = "refused_early"  # 401/404/405...: a bomb costs nothing, not even a read
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


def utf8_headers(headers: CIMultiDictProxy[str]) -> CIMultiDictProxy[str]:
    """The headers with bytes that are not UTF-8 replaced by U+FFFD.

    aiohttp decodes header bytes with surrogateescape. A lone surrogate can be neither stored
    (orjson, redis-py) nor answered, and it failed the whole group commit: every request
    batched with it got a 503.
    """
    if all(value.isascii() for value in headers.values()):
        return headers
    cleaned = CIMultiDict(
        (name, value.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        for name, value in headers.items()
    )
    return CIMultiDictProxy(cleaned)


def _find_source(request: web.Request) -> Source:
    """The source a request names, with its token checked; 404 and 401 otherwise."""
    match_info = request.match_info
    name = match_info["source"]
    source = request.app[ROUTES].table.sources.get(name)
    if source is None:
        raise NotFound(f"no source named '{name}'")
    request[_FACTS]["source"] = name
    token = match_info.get("token")
    if source.token is None:
        if token is not None:
            raise NotFound(f"no source named '{name}'")  # do not reveal that the name exists
    elif token is None:
        raise Unauthorized("this source needs its token in the path: /hooks/<source>/<token>")
    elif not source.token.matches(token):
        raise Unauthorized("the token in the path is wrong")
    return source


async def read_body(request: web.BaseRequest, limit: int) -> bytes:
    """The raw body, refusing (413) anything over `limit` before or while reading it."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"the body is {length} bytes; this source takes at most {limit}")
    if length is not None:
        body = await request.content.read(limit + 1) if length else b""
        if len(body) == length:
            return body
        chunks, size = [body], len(body)
    else:
        chunks, size = [], 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over {limit} bytes, the most this source takes")
        chunks.append(chunk)


async def hook(request: web.Request) -> web.StreamResponse:
    """Every method on /hooks/{source}[/{token}]: handshakes, then intake."""
    source = _find_source(request)
    allowed = (*source.methods, "GET") if source.kind == "aspnet" else source.methods
    if request.method == "GET" and source.kind == "aspnet":
        return _aspnet_echo(request)
    if request.method not in source.methods:
        return error_response(
            405,
            f"source '{source.name}' takes {', '.join(allowed)}, not {request.method}",
            {"Allow": ", ".join(allowed)},
        )
    if source.kind == "resthooks" and "X-Hook-Secret" in request.headers:
        return _resthooks_handshake(request)
    return await _intake(request, source)


def _aspnet_echo(request: web.Request) -> web.Response:
    """ASP.NET WebHooks registration: answer exactly the `echo` value, as plain text."""
    echo = request.query.get("echo")
    if echo is None:
        raise BadRequest("an ASP.NET WebHooks handshake needs ?echo=<value>")
    if len(echo) > MAX_ECHO:
        raise BadRequest(f"the echo value is longer than {MAX_ECHO} characters")
    request[_FACTS]["handshake"] = "aspnet"
    return web.Response(
        text=echo, content_type="text/plain", headers={"X-Content-Type-Options": "nosniff"}
    )


def _resthooks_handshake(request: web.Request) -> web.Response:
    """REST Hooks subscription: 200 with `X-Hook-Secret` echoed; no event is recorded."""
    secret = request.headers["X-Hook-Secret"]
    if not secret or len(secret) > MAX_HOOK_SECRET:
        raise BadRequest("the X-Hook-Secret header is empty or too long")
    request[_FACTS]["handshake"] = "resthooks"
    return web.json_response({"status": "subscribed"}, headers={"X-Hook-Secret": secret})


async def _intake(request: web.Request, source: Source) -> web.Response:
    facts = request[_FACTS]
    app = request.app  # a property that walks the match info: read once
    settings = app[SETTINGS]
    if source.secret is not None and "ms-signature" not in request.headers:
        # Known without the body: refused (400) before reading it.
        verify_ms_signature(source.secret.reveal(), b"", None)
    coding = None
    encoding = request.headers.get(hdrs.CONTENT_ENCODING)
    if encoding is not None:
        coding = _accepted_coding(facts, source, encoding)  # 415 before the body is read
    if coding is not None:
        sent, body = await _read_decoded(request, source, coding, settings.read_timeout)
    elif request.content.is_eof():
        # The whole body has arrived (the usual case): no read can wait, so no timer is needed
        # (arming one cost ~5% of the receiver's time).
        sent = body = await read_body(request, source.max_body)
    else:
        try:
            # A client trickling its body must not hold this handler (and its memory) for ever.
            async with asyncio.timeout(settings.read_timeout):
                sent = body = await read_body(request, source.max_body)
        except TimeoutError:
            message = f"the body did not arrive within {settings.read_timeout:g} s"
            raise RequestTimeout(message) from None
    facts["bytes"] = len(body)
    headers = utf8_headers(request.headers)
    if source.kind == "aspnet" and source.secret is not None:
        # The provider signed the bytes it sent: the encoded ones when it sent a coding.
        verify_ms_signature(source.secret.reveal(), sent, headers.get("ms-signature"))
    content_type = headers.get("Content-Type", "")
    parsed = parse_request(source, content_type, headers, body)
    table = app[ROUTES].table
    parent = new_event_id()
    now = time.time()
    stored = kept_headers(headers)
    if coding is not None:  # ms-signature is over the encoded bytes: it cannot verify downstream
        stored = tuple(h for h in stored if h[0] != "ms-signature")
    events = []
    for index, part in enumerate(parsed):
        event_headers = stored
        if not part.original_body:  # the provider's signature would not verify on a new body
            event_headers = tuple(h for h in stored if h[0] != "ms-signature")
        events.append(
            Event(
                id=parent if len(parsed) == 1 else derived_event_id(parent, index),
                source=source.name,
                type=part.type,
                received_at=now,
                content_type=content_type,
                method=request.method,
                headers=event_headers,
                body=part.body,
                targets=table.match(source.name, part.type),
                dedupe_key=(
                    keys.dedupe_key(source.name, part.dedupe_value)
                    if part.dedupe_value is not None
                    else ""
                ),
            )
        )
    facts["event_id"] = parent
    facts["type"] = events[0].type if len(events) == 1 else [e.type for e in events]
    # Every later line of this request carries its event id (the spool's, a crash's): aiohttp
    # runs each request in a task of its own, so the binding ends with the request.
    structlog.contextvars.bind_contextvars(event_id=parent)
    window = source.dedupe.window if source.dedupe else 0.0
    spooled = False
    try:
        committed = await app[WRITER].submit(
            events, dedupe_window=window, max_wait=settings.intake_timeout
        )
    except Unavailable:
        if not source.spool:
            raise
        # Redis cannot take it and this provider will not retry: keep the event on local disk
        # (fsynced before the 202); the drainer moves it into Redis once Redis is back.
        # SpoolFull is itself an Unavailable: a clear 503.
        await asyncio.to_thread(app[SPOOL].append_many, events, window)
        committed, spooled = Committed((None,) * len(events)), True
        facts["spooled"] = True
        app[METRICS].spooled.labels(source.name).inc()
    if committed.duplicate:
        facts["duplicate"] = True
    reply: dict[str, Any] = {
        "id": parent,
        "events": [
            {"id": e.id, "type": e.type, "targets": e.targets}
            | ({"duplicate_of": dup} if dup else {})
            for e, dup in zip(events, committed.duplicate_of, strict=True)
        ],
        "duplicate": committed.duplicate,
    }
    if spooled:
        reply["spooled"] = True
    return web.Response(status=202, body=orjson.dumps(reply), content_type="application/json")


def _accepted_coding(facts: dict[str, Any], source: Source, encoding: str) -> Coding | None:
    """The coding to decode (None: the body is sent as is); 415 for one the source refuses."""
    try:
        return accepted_coding(encoding, source.content_encodings)
    except UnsupportedMediaType:
        facts["refused_body"] = "encoding"
        raise


async def _read_decoded(
    request: web.Request, source: Source, coding: Coding, read_timeout: float
) -> tuple[bytes, bytes]:
    """(The body as sent, decoded), refused as soon as either passes the source's max_body.

    Fed to the decoder chunk by chunk as the socket gives them; the bytes as sent are kept only
    where a signature needs them (ms-signature).
    """
    limit = source.max_body
    decoder = BodyDecoder(coding, limit)
    kept: list[bytes] | None = [] if source.secret is not None else None
    try:
        length = request.content_length
        if length is not None and length > decoder.encoded_limit:
            raise PayloadTooLarge(f"the compressed body is {length} bytes; the most is {limit}")
        async with asyncio.timeout(read_timeout):
            while chunk := await request.content.readany():
                if kept is not None:
                    kept.append(chunk)
                decoder.feed(chunk)
        body = decoder.finish()
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {read_timeout:g} s") from None
    except HTTPError as exc:
        reason = "too_large" if isinstance(exc, PayloadTooLarge) else "corrupt"
        request[_FACTS]["refused_body"] = reason
        raise
    request[_FACTS]["encoded_bytes"] = decoder.encoded_size
    return (b"".join(kept) if kept is not None else b""), body


async def _route_reloading(app: web.Application) -> AsyncIterator[None]:
    """Reload routes.toml on SIGHUP and when the file changes (a background poll)."""
    holder = app[ROUTES]

    def apply(table: RouteTable) -> None:
        holder.table = table  # one assignment: requests under way keep the table they read

    reloader = RouteReloader(holder.table.path, apply)
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reloader.reload)
        on_signal = True
    except (RuntimeError, ValueError):  # not the main thread (relay dev's embedded mode)
        on_signal = False

    async def poll() -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            await asyncio.to_thread(reloader.poll)

    task = loop.create_task(poll(), name="relay-route-reload")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if on_signal:
        loop.remove_signal_handler(signal.SIGHUP)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; the Redis-backed gauges are read in a thread."""
    body = await asyncio.to_thread(render, request.app[SCRAPE])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when Redis answers PING and routes are loaded; 503 with the reason otherwise."""
    table = request.app[ROUTES].table  # loaded and validated before the app was built
    connection = request.app[REDIS]
    try:
        await asyncio.wait_for(asyncio.to_thread(connection.ping), READY_TIMEOUT)
    except (redis.RedisError, OSError, TimeoutError) as exc:
        reason = f"Redis does not answer PING: {type(exc).__name__}"
        return web.json_response({"status": "unready", "reason": reason}, status=503)
    return web.json_response(
        {"status": "ok", "sources": len(table.sources), "routes": len(table.routes)}
    )


def create_app(
    settings: Settings,
    routes: RouteTable,
    *,
    connection: redis.Redis | None = None,
    reload_routes: bool = False,
    metrics_dir: str | None = None,
) -> web.Application:
    """The receiver application; `connection` (sync, e.g. fakeredis) replaces REDIS_URL.

    With `reload_routes`, routes.toml (at `routes.path`) is reloaded on SIGHUP and when it
    changes, if it validates. With `metrics_dir` (one of `relay serve --processes N`), GET
    /metrics answers for all N processes (relay.metrics.use_multiprocess_values). Configure
    logging (relay.logs.configure_logging) first: the request log line's logger is bound here.
    """
    largest = max((s.max_body for s in routes.sources.values()), default=0)
    # The hook handler reads the stream with each source's own cap; this only bounds
    # request.read()/post() elsewhere and must not be below the largest source limit.
    registry = CollectorRegistry()
    receiver_metrics = ReceiverMetrics(registry)
    request_log = structlog.get_logger("relay.receiver").bind()
    app = web.Application(
        middlewares=[canonical_middleware(receiver_metrics, request_log)],
        client_max_size=max(largest, 1024 * 1024),
    )
    app[SETTINGS] = settings
    app[ROUTES] = RoutesHolder(routes)
    # Every configured target gets a relay_target_paused sample, even before its first delivery.
    redis_gauges = RedisCollector(
        lambda: app[REDIS], targets=lambda: tuple(app[ROUTES].table.targets)
    )
    registry.register(redis_gauges)
    app[METRICS] = receiver_metrics
    app[SCRAPE] = (
        multiprocess_registry(metrics_dir, redis_gauges) if metrics_dir is not None else registry
    )

    async def redis_and_writer(app: web.Application) -> AsyncIterator[None]:
        owned = connection is None
        client = sync_client(settings.redis_url, settings.intake_timeout) if owned else connection
        assert client is not None
        # The intake commits on the loop (redis.asyncio); the rest (readiness, status, metrics,
        # spool drain, RQ's queue) uses the sync client in threads.
        committer = intake_client(settings.redis_url, settings.intake_timeout) if owned else None
        writer = IntakeWriter(
            committer or client, queue_connection=client, retention=settings.retention
        )
        spool = Spool(settings.spool_dir, max_bytes=settings.spool_max)
        drainer = SpoolDrainer(spool, redis_commit(client, retention=settings.retention))
        app[REDIS] = client
        app[WRITER] = writer
        app[SPOOL] = spool
        app[DRAINER] = drainer
        writer.start()
        drainer.start()
        yield
        await writer.close()
        await drainer.close()
        spool.close()
        if committer is not None:
            await committer.aclose()
        if owned:
            client.close()

    app.cleanup_ctx.append(redis_and_writer)
    if reload_routes:
        app.cleanup_ctx.append(_route_reloading)
    for path in ("/hooks/{source}", "/hooks/{source}/{token}"):
        app.router.add_route("*", path, hook)
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    app.router.add_get("/metrics", metrics, allow_head=False)
    add_status_routes(  # GET /status (HTML) and /status.json, behind RELAY_STATUS_TOKEN
        app, settings.status_token, lambda: app[REDIS], lambda: tuple(app[ROUTES].table.targets)
    )
    return app
