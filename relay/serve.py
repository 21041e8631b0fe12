"""`relay serve`: the receiver process (aiohttp on HOST:PORT, Redis at REDIS_URL)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import os
import sys

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from relay.app import create_app
from relay.errors import ConfigError
from relay.logs import configure_logging
from relay.routes import load_routes
from relay.settings import Settings

#: Seconds beyond the intake timeout that SIGTERM leaves in-flight requests to get their answer
#: (aiohttp stops accepting at once, then waits for handlers; then the writer commits the rest).
SHUTDOWN_GRACE = 2.0

#: The intake commit runs in a thread (RQ has no async API). With CPython's default 5 ms GIL
#: switch interval, a thread waiting for the GIL behind the busy event loop waits up to 5 ms per
#: hand-off, several times per commit: measured p99 at 1,000 req/s fell from ~170 ms to ~14 ms
#: with 0.5 ms (README.md, "What happens per request"). The loop does short, I/O-bound steps,
#: so it loses nothing.
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


def _use_uvloop_if_installed() -> bool:
    # uvloop is not a dependency; where an operator has installed it, it is 10-25% faster.
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
        for problem in exc.problems:
            print(f"relay serve: {problem}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    routes_path = args.routes or settings.routes_path
    try:
        routes = load_routes(routes_path, os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"relay serve: {problem}", file=sys.stderr)
        return 2
    sys.setswitchinterval(SWITCH_INTERVAL)
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestFilter())
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    log = structlog.get_logger("relay.serve")
    log.info(
        "receiver_starting",
        host=host,
        port=port,
        routes=routes.path,
        sources=sorted(routes.sources),
        uvloop=_use_uvloop_if_installed(),
    )
    web.run_app(
        create_app(settings, routes, reload_routes=True),
        host=host,
        port=port,
        access_log=None,  # one canonical line per request instead (see relay.app)
        shutdown_timeout=settings.intake_timeout + SHUTDOWN_GRACE,
        print=None,
        keepalive_timeout=settings.keepalive_timeout,  # also cuts unfinished headers
        max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_FIELD_SIZE,
        max_headers=MAX_HEADERS,
    )
    log.info("receiver_stopped")
    return 0
