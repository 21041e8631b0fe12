"""`relay serve`: the receiver process (aiohttp on HOST:PORT, Redis at REDIS_URL)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import os
import shutil
import socket
import sys
import tempfile

import redis
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from relay.admin import make_admin_app, parse_tokens
from relay.admin.listener import AdminListenError, add_admin_listener
from relay.cli.common import config_error, positive_int
from relay.config.loading import load_routes
from relay.config.model import RouteTable
from relay.config.reconcile import reconciled_sources
from relay.config.reload import route_updates
from relay.config.settings import Settings
from relay.core.errors import ConfigError
from relay.core.logs import configure_logging
from relay.core.metrics import use_multiprocess_values
from relay.core.supervisor import supervise
from relay.ops.status_page import add_status_routes
from relay.receiver.app import SERVER_OPTIONS, create_app
from relay.receiver.state import REDIS, ROUTES

#: Seconds beyond the intake timeout that SIGTERM leaves in-flight requests to get their answer
#: (aiohttp stops accepting at once, then waits for handlers; then the writer commits the rest).
SHUTDOWN_GRACE = 2.0

#: Some work runs in threads (readiness PINGs, spool appends, /metrics, the spool drain, the
#: whole commit on a sync client). With CPython's default 5 ms GIL switch interval, a thread
#: waiting for the GIL behind the busy event loop waits up to 5 ms per hand-off, which shows in
#: the tail latency of every request that waits for it. The loop does short, I/O-bound steps, so
#: a shorter interval costs it nothing.
SWITCH_INTERVAL = 0.0005

#: aiohttp's own header limits, stated here so that an upgrade cannot change them unseen: a
#: request line or header line over 8190 bytes, or over 128 headers, is answered 400 by the
#: parser before relay sees it (at most ~1 MiB of headers per request).
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 128


class MalformedRequestFilter(logging.Filter):
    """Log aiohttp's malformed-request errors without their bytes.

    aiohttp logs them at ERROR with the exception, whose message quotes the offending line: for
    an over-long request line that is the path with its secret token. (RequestPayloadError: an
    undecodable body met again while draining it after the 400.) The client already got its
    400; the log keeps the error class only.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite records carrying an HttpProcessingError; pass every other record."""
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError | web.RequestPayloadError):
            record.msg, record.args = f"malformed_request: {type(exc).__name__}", None
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `relay serve`; each overrides its environment variable."""
    parser.add_argument("--host", help="address to bind (env HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (env PORT, default 8000)")
    parser.add_argument("--routes", help="path of routes.toml (env RELAY_ROUTES)")
    parser.add_argument(
        "--processes",
        type=positive_int,
        metavar="N",
        help="receiver processes sharing the port (env WEB_CONCURRENCY, default 1)",
    )


def _use_uvloop_if_installed() -> bool:
    # uvloop is not a dependency; where an operator has installed it, it is the faster loop.
    if importlib.util.find_spec("uvloop") is None:
        return False
    uvloop = importlib.import_module("uvloop")
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def run(args: argparse.Namespace) -> int:
    """Load settings and routes, then serve until SIGINT/SIGTERM; 2 on a configuration error."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        return config_error("relay serve", exc)
    configure_logging(settings.log_level, settings.log_format)
    routes_path = args.routes or settings.routes_path
    try:
        parse_tokens(settings.admin_tokens)  # a bad entry is a start-up error, named here
        routes = load_routes(routes_path, os.environ)
    except ConfigError as exc:
        return config_error("relay serve", exc)
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    processes = args.processes or _web_concurrency()
    if processes is None:
        return 2
    if processes == 1:
        return serve(settings, routes, host, port)
    return serve_processes(settings, routes, host, port, processes)


def _web_concurrency() -> int | None:
    """WEB_CONCURRENCY (the process count convention of gunicorn and uvicorn), default 1."""
    text = os.environ.get("WEB_CONCURRENCY", "").strip()
    if not text:
        return 1
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        print(f"relay serve: WEB_CONCURRENCY={text!r} is not a positive integer", file=sys.stderr)
        return None


def serve(
    settings: Settings,
    routes: RouteTable,
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    metrics_dir: str | None = None,
) -> int:
    """Serve in this process until SIGINT/SIGTERM."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestFilter())
    log = structlog.get_logger("relay.serve")
    log.info(
        "receiver_starting",
        host=host,
        port=port,
        routes=routes.path,
        sources=sorted(routes.sources),
        uvloop=_use_uvloop_if_installed(),
        admin=f"{settings.admin_host}:{settings.admin_port}" if settings.admin_tokens else None,
    )
    if not settings.admin_tokens:
        log.info("admin_disabled", reason="RELAY_ADMIN_TOKENS is not set")
    try:
        _run(settings, routes, host, port, reuse_port=reuse_port, metrics_dir=metrics_dir)
    except AdminListenError as exc:
        log.error("admin_listener_failed", error=str(exc))
        print(f"relay serve: {exc}; set RELAY_ADMIN_PORT to a free port", file=sys.stderr)
        return 1
    log.info("receiver_stopped")
    return 0


def _run(
    settings: Settings,
    routes: RouteTable,
    host: str,
    port: int,
    *,
    reuse_port: bool,
    metrics_dir: str | None,
) -> None:
    """web.run_app of the receiver (with the admin listener beside it), until a signal."""
    web.run_app(
        receiver_app(
            settings, routes, reload_routes=True, metrics_dir=metrics_dir, reuse_port=reuse_port
        ),
        host=host,
        port=port,
        reuse_port=reuse_port,
        access_log=None,  # one canonical line per request instead (see relay.receiver.app)
        shutdown_timeout=settings.intake_timeout + SHUTDOWN_GRACE,
        print=None,
        keepalive_timeout=settings.keepalive_timeout,  # also cuts unfinished headers
        max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_FIELD_SIZE,
        max_headers=MAX_HEADERS,
        **SERVER_OPTIONS,  # relay decodes bodies itself, and never drains a refused one
    )


def receiver_app(
    settings: Settings,
    routes: RouteTable,
    *,
    connection: redis.Redis | None = None,
    reload_routes: bool = False,
    metrics_dir: str | None = None,
    reuse_port: bool = False,
) -> web.Application:
    """The receiver with the status page on it, and the admin listener beside it when
    RELAY_ADMIN_TOKENS is set: what `relay serve` and `relay dev` run."""
    app = create_app(
        settings,
        routes,
        connection=connection,
        reload_routes=reload_routes,
        metrics_dir=metrics_dir,
    )
    add_status_routes(  # GET /status (HTML) and /status.json, behind RELAY_STATUS_TOKEN
        app,
        settings.status_token,
        lambda: app[REDIS],
        lambda: tuple(app[ROUTES].table.targets),
        lambda: tuple(name for name, _ in reconciled_sources(app[ROUTES].table)),
    )
    if settings.admin_tokens:
        tokens = parse_tokens(settings.admin_tokens)
        add_admin_listener(
            app,
            # The receiver's table: a reload of routes.toml shows in the API at once.
            lambda: make_admin_app(
                settings, tokens, lambda: app[ROUTES].table, connection=connection
            ),
            settings.admin_host,
            settings.admin_port,
            reuse_port=reuse_port,
        )
    return app


def serve_processes(
    settings: Settings, routes: RouteTable, host: str, port: int, processes: int
) -> int:
    """N receiver processes on one port (SO_REUSEPORT: the kernel spreads the connections).

    Each child is a whole receiver: its own event loop, Redis clients, intake writer and spool
    directory. The parent forwards signals and restarts a child that dies (relay.core.supervisor).
    /metrics answers for all of them from prometheus-client's multi-process files.
    """
    log = structlog.get_logger("relay.serve")
    problem = _port_problem(host, port)
    if problem is None and settings.admin_tokens:
        problem = _port_problem(settings.admin_host, settings.admin_port)
    if problem is not None:
        # Checked here: a child failing to bind would be restarted in a loop.
        log.error("receiver cannot listen", host=host, port=port, error=problem)
        return 1
    metrics_dir = tempfile.mkdtemp(prefix="relay-metrics-")
    try:
        use_multiprocess_values(metrics_dir)

        def child(index: int, latest: RouteTable) -> int:  # pragma: no cover - a child process
            return serve(settings, latest, host, port, reuse_port=True, metrics_dir=metrics_dir)

        started = {"host": host, "port": port, "metrics_dir": metrics_dir}
        stopped = supervise(
            child,
            processes,
            routes,
            name="receiver",
            updates=route_updates(routes.path),
            started=started,
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0 if stopped.clean else 1


def _port_problem(host: str, port: int) -> str | None:
    """Why N processes cannot share host:port (None if they can): taken, or port 0."""
    if port == 0:
        return "--processes needs a fixed port (with port 0 each process would get its own)"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return str(exc)
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return str(exc)
    return None
