"""A process-wide asyncio loop in a background thread, with one aiohttp ClientSession.

RQ runs `async def` jobs in a new event loop per job, which throws away keep-alive connections,
so relay's jobs are plain functions that submit coroutines here. The runtime is created lazily
on first use (jobs also run under a plain `rq worker`), re-created after a fork, and drained and
closed on shutdown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import ssl
import threading
import time
from collections.abc import Coroutine
from functools import partial
from typing import Any, TypeVar

import aiohttp
import structlog

from relay.core import constants
from worker.fellow.enrich import Enricher
from worker.outbound import OutboundRequest
from worker.outcome import AttemptResult

log = structlog.get_logger("relay.worker")

T = TypeVar("T")

#: Deliveries one process keeps in flight at most; beyond it a job waits for a slot.
MAX_IN_FLIGHT = 256
#: Connections per target host (keep-alive reuses them).
PER_HOST_LIMIT = 32
#: After the snippet, at most this much of a response is drained so its connection can be reused.
DRAIN_LIMIT = 64 * 1024
#: Deliveries one target may have in flight per process: a hanging target cannot take every slot.
PER_TARGET_IN_FLIGHT = 64
#: A target whose attempt outlived a job's inline budget is not waited for during this long.
SLOW_MEMORY = 60.0


class Runtime:
    """The background loop, its HTTP session, and a bound on deliveries in flight."""

    def __init__(self, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.pid = os.getpid()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="relay-delivery-loop", daemon=True)
        self._session: aiohttp.ClientSession | None = None
        self._max_in_flight = max_in_flight
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._lock = threading.Lock()
        self._in_flight: set[concurrent.futures.Future[Any]] = set()
        self._per_target: dict[str, int] = {}
        self._slow_until: dict[str, float] = {}
        #: Late outcomes are recorded here: sync Redis calls must not block the event loop.
        self.recorder = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="relay-record")
        #: Fetches the records of enriched deliveries (worker.fellow.enrich), on this loop.
        self.enricher = Enricher()
        self._closed = False
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                ssl=ssl.create_default_context(),  # verification on, system CAs
                limit=MAX_IN_FLIGHT,
                limit_per_host=PER_HOST_LIMIT,
                keepalive_timeout=30,
            )
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self._session

    def warm(self, timeout: float = 10.0) -> None:
        """Create the HTTP session now: a new worker process's first deliveries then go out as
        they are claimed, not all together once it exists (which would bunch a rate's starts)."""

        async def create() -> None:
            self._get_session()

        self.run(create(), timeout)

    @property
    def in_flight(self) -> int:
        """Deliveries submitted and not finished yet."""
        with self._lock:
            return len(self._in_flight)

    def free_slots(self, key: str) -> int:
        """How many more deliveries to one target (and to all) may start now."""
        with self._lock:
            if self._closed:
                return 0
            per_target = PER_TARGET_IN_FLIGHT - self._per_target.get(key, 0)
            return max(0, min(per_target, self._max_in_flight - len(self._in_flight)))

    def submit(
        self, coro: Coroutine[Any, Any, T], wait: float, key: str = ""
    ) -> concurrent.futures.Future[T] | None:
        """Run a coroutine on the loop; None (coroutine closed) when no slot is free.

        A process-wide slot is waited for at most `wait` seconds (backpressure); the slots of
        one `key` (a target) are never waited for: a full target is not allowed to block others.
        """
        with self._lock:
            if self._closed or self._per_target.get(key, 0) >= PER_TARGET_IN_FLIGHT:
                coro.close()
                return None
            self._per_target[key] = self._per_target.get(key, 0) + 1
        if not self._slots.acquire(timeout=wait):
            with self._lock:
                self._per_target[key] -= 1
            coro.close()
            return None
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        with self._lock:
            self._in_flight.add(future)
        future.add_done_callback(partial(self._release, key))
        return future

    def _release(self, key: str, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._in_flight.discard(future)
            self._per_target[key] -= 1
        self._slots.release()

    def mark_slow(self, key: str) -> None:
        """Remember that a target outlived a job's inline budget: jobs stop waiting for it."""
        with self._lock:
            self._slow_until[key] = time.monotonic() + SLOW_MEMORY

    def is_slow(self, key: str) -> bool:
        """Whether a target outlived an inline budget recently."""
        with self._lock:
            until = self._slow_until.get(key)
            if until is not None and until < time.monotonic():
                del self._slow_until[key]
                until = None
            return until is not None

    async def post(self, request: OutboundRequest, limit: float) -> AttemptResult:
        """POST one request; never raises for network trouble: it is an AttemptResult."""
        started = time.time()
        clock = time.monotonic()
        try:
            async with self._get_session().post(
                request.url,
                data=request.body,
                headers=list(request.headers),
                timeout=aiohttp.ClientTimeout(total=limit),
                allow_redirects=False,
            ) as response:
                snippet = await response.content.read(constants.RESPONSE_SNIPPET)
                drained = 0
                while drained < DRAIN_LIMIT and not response.content.at_eof():
                    chunk = await response.content.readany()
                    if not chunk:
                        break
                    drained += len(chunk)
                return AttemptResult(
                    started_at=started,
                    duration=time.monotonic() - clock,
                    status=response.status,
                    response=snippet.decode("utf-8", "replace"),
                    retry_after=response.headers.get("Retry-After"),
                )
        except TimeoutError:
            error = f"timeout after {limit:g}s"
        except aiohttp.ClientConnectorCertificateError as exc:
            error = f"TLS certificate error: {exc.certificate_error}"
        except aiohttp.ClientConnectorError as exc:
            error = f"connection failed: {exc.os_error.strerror or exc.os_error}"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        return AttemptResult(started_at=started, duration=time.monotonic() - clock, error=error)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the loop and wait for its result (for set-up and tests)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def close(self, drain: float) -> int:
        """Wait up to `drain` s for deliveries in flight, then stop; return how many were cut."""
        self._closed = True
        with self._lock:
            pending = set(self._in_flight)
        if pending:
            log.info("draining deliveries in flight", count=len(pending), limit_s=drain)
            concurrent.futures.wait(pending, timeout=drain)
        with self._lock:
            cut = len(self._in_flight)

        async def _finish() -> None:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            if self._session is not None:
                await self._session.close()
            await self.enricher.close()

        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            self.run(_finish(), timeout=5)
        # Outcomes of finished deliveries are recorded by the recorder threads: let them finish.
        self.recorder.shutdown(wait=True, cancel_futures=False)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()
        return cut


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process's runtime, created on first use (and again in a forked child)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None or _runtime.pid != os.getpid():
            _runtime = Runtime()
        return _runtime


def shutdown_runtime(drain: float) -> int:
    """Drain and close the process's runtime if one was started; return deliveries cut short."""
    global _runtime
    with _runtime_lock:
        runtime, _runtime = _runtime, None
    if runtime is None or runtime.pid != os.getpid():
        return 0
    return runtime.close(drain)
