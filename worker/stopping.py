"""When a warm-shutdown signal may interrupt the worker, and when it must wait.

RQ answers SIGTERM/SIGINT on an idle worker by raising StopRequested from the signal handler,
wherever the main thread happens to be. Raised between a Redis command being sent and its reply
being read (RQ's start-up registry cleaning, a heartbeat, a maintenance pass), it leaves the
reply unread on a pooled connection; the next command on that connection (RQ's
`register_death` pipeline in teardown) reads the stale reply and fails with "Wrong number of
response items", and the worker exits 1. A stop is therefore raised at once only where it is
safe: inside redis-py's `read_response`, which disconnects the connection on any exception.
Anywhere else the request is recorded and honoured before the next blocking dequeue.
"""

from __future__ import annotations

from collections.abc import Callable
from types import FrameType
from typing import Any

import redis.connection
from rq import Queue
from rq.exceptions import StopRequested

_REDIS_CONNECTION_FILE = redis.connection.__file__


def interrupted_redis_read(frame: FrameType | None) -> bool:
    """True if `frame` (a signal handler's) is inside a redis-py read that disconnects on error.

    redis-py's `read_response(..., disconnect_on_error=True)` closes its connection on any
    BaseException, so an exception raised there cannot leave a half-read reply behind.
    """
    while frame is not None:
        code = frame.f_code
        if code.co_name == "read_response" and code.co_filename == _REDIS_CONNECTION_FILE:
            return frame.f_locals.get("disconnect_on_error") is True
        frame = frame.f_back
    return False


def gate_dequeue(queue_class: type[Queue], stop_requested: Callable[[], bool]) -> type[Queue]:
    """`queue_class` whose `dequeue_any` raises StopRequested once `stop_requested()` is true.

    RQ's idle loop (heartbeat, maintenance, BLMOVE, again on each timeout) never looks at the
    stop flag; this is the one point before each blocking dequeue where a deferred stop is
    honoured, synchronously, with no reply in flight.
    """

    class GatedQueue(queue_class):  # type: ignore[valid-type,misc]
        @classmethod
        def dequeue_any(cls, *args: Any, **kwargs: Any) -> Any:
            if stop_requested():
                raise StopRequested()
            return super().dequeue_any(*args, **kwargs)

    GatedQueue.__name__ = GatedQueue.__qualname__ = f"Gated{queue_class.__name__}"
    return GatedQueue
