"""structlog set-up: JSON lines (orjson) off a terminal, readable colour on one.

relay's own lines take structlog's native path (a filtering bound logger writing orjson bytes
straight to stderr): it is the production chain of structlog's performance guide, and the
receiver writes one line per request, so the stdlib `logging` detour would cost about a tenth of
its throughput. The standard library's loggers (aiohttp, rq) are rendered by the same processors
through a `ProcessorFormatter`, so every line of a process has one format.

Secrets are never passed to a logger: they live in `Secret` objects whose repr hides them.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default).decode()


def _level_number(level: str) -> int:
    numeric = logging.getLevelName(level.upper())
    return numeric if isinstance(numeric, int) else logging.INFO


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog and the stdlib root logger for this process."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    numeric = _level_number(level)
    # RELAY_LOG_FORMAT=console into a file or a pipe: readable text without colour codes.
    colors = sys.stderr.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "console":
        structlog.configure(
            processors=[
                *shared,
                structlog.processors.StackInfoRenderer(),
                structlog.dev.ConsoleRenderer(colors=colors),
            ],
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
            wrapper_class=structlog.make_filtering_bound_logger(numeric),
            cache_logger_on_first_use=True,
        )
        renderer: Any = structlog.dev.ConsoleRenderer(colors=colors)
    else:
        structlog.configure(
            processors=[
                *shared,
                structlog.processors.StackInfoRenderer(),
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=orjson.dumps),
            ],
            logger_factory=structlog.BytesLoggerFactory(sys.stderr.buffer),
            wrapper_class=structlog.make_filtering_bound_logger(numeric),
            cache_logger_on_first_use=True,
        )
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # aiohttp's access log costs most of the receiver's throughput; the app logs one canonical
    # line per request instead.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
