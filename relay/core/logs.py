"""structlog set-up: JSON lines (orjson) off a terminal, readable colour on one.

relay's own lines take structlog's native path (a filtering bound logger writing orjson bytes
straight to stderr): it is the production chain of structlog's performance guide, and the
receiver writes one line per request, so the stdlib `logging` detour would cost about a tenth of
its throughput. The standard library's loggers (aiohttp, rq) are rendered by the same processors
through a `ProcessorFormatter`, so every line of a process has one format.

Secrets are never passed to a logger: they live in `Secret` objects whose repr hides them.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import logging
import sys
import threading
import time
from typing import Any, BinaryIO

import orjson
import structlog


class LoopBatchedLogger:
    """A structlog logger writing bytes lines to a binary file, one write per event-loop turn.

    The receiver logs one line per request, and a write system call per line is a large part of
    what a request costs. A line logged on a running event loop is buffered and
    written with the others of the same loop turn (`call_soon`); a line logged anywhere else
    first writes what is buffered, then itself, at once, as does the exit of the process. What
    a SIGKILL can take is the lines of the loop turn it interrupts.
    """

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self._scheduled = False
        atexit.register(self.flush)

    def msg(self, message: bytes) -> None:
        """Write (or buffer until the end of this loop turn) one line."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._pending.append(message)
            if loop is not None:
                if not self._scheduled:
                    self._scheduled = True
                    loop.call_soon(self.flush)
                return
        self.flush()

    def flush(self) -> None:
        """Write every buffered line."""
        with self._lock:
            self._scheduled = False
            if not self._pending:
                return
            lines, self._pending = self._pending, []
            with contextlib.suppress(ValueError, OSError):  # closed or broken at exit
                self._file.write(b"\n".join(lines) + b"\n")
                self._file.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class UtcStamp:
    """ISO 8601 UTC timestamps with microseconds (`2026-11-22T12:00:00.000123Z`), made cheaply.

    structlog's `TimeStamper(fmt="iso", utc=True)` builds a datetime for every line; the date
    and time part changes once a second, so it is formatted once a second here.
    """

    def __init__(self) -> None:
        # (second, its formatted date and time) as one value: threads log too, and one
        # assignment cannot be seen half done.
        self._cached: tuple[int, str] = (-1, "")

    def __call__(self, now: float | None = None) -> str:
        """The timestamp of `now` (default: the current time)."""
        if now is None:
            now = time.time()
        second = int(now)
        cached = self._cached
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._cached = cached
        # %06d truncates as int() does, at half of what the f-string's format spec costs.
        return "%s.%06dZ" % (cached[1], (now - second) * 1_000_000)  # noqa: UP031


#: What structlog's add_log_level writes for the method names that are aliases.
_LEVEL_OF = {"warn": "warning", "exception": "error", "failure": "error", "err": "error"}
_format_exc_info = structlog.processors.format_exc_info
_stack_info = structlog.processors.StackInfoRenderer()


def timestamper(stamp: UtcStamp) -> Any:
    """A processor adding `timestamp` (for the chains that keep structlog's own steps)."""

    def add_timestamp(logger: Any, method_name: str, event_dict: Any) -> Any:
        event_dict["timestamp"] = stamp()
        return event_dict

    return add_timestamp


def json_line(stamp: UtcStamp) -> Any:
    """One processor doing what the JSON chain's last five did: level, timestamp, exception or
    stack (only when the line carries one), orjson bytes.

    The receiver logs a line per request; five processor calls (and a datetime) per line were
    about half of its logging time.
    """
    # The bound method: a call of it is one Python call, a call of the instance is not.
    timestamp = stamp.__call__

    def render(logger: Any, method_name: str, event_dict: Any) -> bytes:
        event_dict["level"] = _LEVEL_OF.get(method_name, method_name)
        event_dict["timestamp"] = timestamp()
        if "exc_info" in event_dict:
            event_dict = _format_exc_info(logger, method_name, event_dict)
        if "stack_info" in event_dict:
            event_dict = _stack_info(logger, method_name, event_dict)
        return orjson.dumps(event_dict, default=repr)

    return render


#: What a renderer may return that the logger takes as one argument; a tuple, since a union
#: written in the call (`str | bytes | bytearray`) is built again on every line.
_TEXT = (str, bytes, bytearray)


class LineLogger:
    """What `structlog.get_logger(name).bind().info(event, **fields)` logs, in fewer steps, for
    the receiver's one line per request.

    A bound logger's call goes through three of structlog's own calls and two copies of its
    arguments before the processors run, which cost more than relay's two processors do. This
    runs the configured processors on `fields` (used as the line's dict: the caller gives it
    up) and hands what they return to the configured logger, as structlog's `_process_event`
    and `_proxy_to_logger` do for a logger with an empty context. Like any bound logger it
    keeps the configuration of when it was made: make it after `configure_logging`. structlog's
    `capture_logs`, which edits the processor list in place, sees its lines.
    """

    def __init__(self, name: str) -> None:
        config = structlog.get_config()
        bound = structlog.get_logger(name).bind()
        self._enabled = bool(bound.is_enabled_for(logging.INFO))
        self._processors: list[Any] = config["processors"]  # the list the bound logger has
        self._logger = config["logger_factory"](name)

    def info(self, event: str, fields: dict[str, Any]) -> None:
        """Log `event` with `fields` at INFO (if that level is enabled)."""
        if not self._enabled:
            return
        logger = self._logger
        fields["event"] = event
        line: Any = fields
        try:
            for processor in self._processors:
                line = processor(logger, "info", line)
        except structlog.DropEvent:
            return
        if isinstance(line, _TEXT):
            logger.info(line)
        elif isinstance(line, tuple):
            args, kwargs = line
            logger.info(*args, **kwargs)
        else:
            logger.info(**line)


class ContextBinding:
    """`structlog.contextvars.bind_contextvars(name=value)` for one name, in one step.

    structlog keeps one context variable per name; the first binding finds it (its token's
    `var`), and later ones set it directly, without building the variable's name and a dict of
    tokens each time (the receiver binds each request's event id).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._var: contextvars.ContextVar[Any] | None = None

    def __call__(self, value: Any) -> None:
        """Bind `value` to the name in the current context."""
        var = self._var
        if var is None:
            tokens = structlog.contextvars.bind_contextvars(**{self._name: value})
            self._var = tokens[self._name].var
        else:
            var.set(value)


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default).decode()


def _level_number(level: str) -> int:
    numeric = logging.getLevelName(level.upper())
    return numeric if isinstance(numeric, int) else logging.INFO


_stderr_logger: LoopBatchedLogger | None = None


#: The INFO lines RQ (3.x) writes for every job: dequeued, done, how long its result is kept.
#: relay's kicks are jobs, so at info these drowned the lines a person watches; relay logs each
#: delivery attempt itself. RQ's other lines (start, stop, scheduler, warnings) are kept as is.
RQ_PER_JOB_LINES = frozenset(
    {
        "Worker %s: %s: %s",
        "Worker %s: %s: %s (%s)",
        "Successfully completed job %s in %ss on worker %s",
        "Successfully completed %s job in %ss on worker %s",
        "Worker %s: job %s result discarded immediately",
        "Worker %s: job %s result is kept for %s seconds",
        "Worker %s: job %s result will never expire, clean up result key manually",
    }
)


class RqJobLinesAtDebug(logging.Filter):
    """Logs RQ's per-job INFO lines at DEBUG: shown only when relay's level is debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.msg in RQ_PER_JOB_LINES:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


_RQ_JOB_LINES = RqJobLinesAtDebug()


def _batched_stderr(*args: Any) -> LoopBatchedLogger:
    """The one LoopBatchedLogger on stderr (a logger factory: every bound logger shares it)."""
    global _stderr_logger
    if _stderr_logger is None or _stderr_logger._file is not sys.stderr.buffer:
        _stderr_logger = LoopBatchedLogger(sys.stderr.buffer)
    return _stderr_logger


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog and the stdlib root logger for this process."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    numeric = _level_number(level)
    # RELAY_LOG_FORMAT=console into a file or a pipe: readable text without colour codes.
    colors = sys.stderr.isatty()
    stamp = UtcStamp()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        timestamper(stamp),
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
            processors=[structlog.contextvars.merge_contextvars, json_line(stamp)],
            logger_factory=_batched_stderr,
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
    logging.getLogger("rq.worker").addFilter(_RQ_JOB_LINES)  # the same filter once, however often
