"""The embedded fallback of `relay dev`, for machines without `redis-server`: one process.

fakeredis's TCP server cannot serve separate worker processes (it drops the connection after any
error reply, and RQ sends one on every dequeue), so everything shares one in-process
`fakeredis.FakeServer`: the receiver runs its aiohttp app on an event loop in a thread, and the RQ
worker runs in the main thread, because RQ wants the main thread for its signal handlers (Ctrl-C
becomes a warm shutdown) and for SIGALRM job timeouts. RQ's scheduler normally forks a process,
which would get a copy of the in-memory data rather than share it; here it runs in a thread.

fakeredis runs every command and script under one non-reentrant server lock, and Python runs
signal handlers on the main thread, between two bytecodes of whatever it was doing: a handler
that calls Redis can wait for a lock its own thread holds. The handlers here only record the stop
(as RelayWorker's do, worker.rq_worker); Redis is touched again from the work loop.

Everything lives in memory: stopping `relay dev` loses every queued event and retry.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import fakeredis
from rq.scheduler import RQScheduler

from relay.cli.dev.app_thread import THREAD_TIMEOUT, AppThread
from relay.cli.dev.banner import BannerInfo, admin_url, local_url, render_banner
from relay.cli.dev.echo import EchoTarget, start_echo_targets
from relay.cli.serve import receiver_app
from relay.config.model import RouteTable
from relay.config.settings import Settings
from relay.receiver.app import SERVER_OPTIONS
from relay.store.queue import OrjsonSerializer, make_queue
from worker.context import build_context, configure
from worker.process import drain_limit
from worker.rq_worker import DEFAULT_MAINTENANCE_INTERVAL, RelayWorker, worker_ttl
from worker.runtime import shutdown_runtime

__all__ = ["AppThread", "ThreadScheduler", "run_embedded", "thread_scheduler_worker"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


#: RQ ships type hints but leaves these methods unannotated; subclass through Any.
_RQScheduler: Any = RQScheduler


class ThreadScheduler(_RQScheduler):  # type: ignore[misc]
    """RQ's scheduler in a thread of this process, sharing the in-memory Redis."""

    def __init__(self, queues: Any, connection: Any, **kwargs: Any) -> None:
        super().__init__(queues, connection=connection, **kwargs)
        self._connection = connection  # RQ would rebuild a client from pool kwargs; keep ours
        self._halt = threading.Event()

    def start(self) -> threading.Thread:
        """Run the scheduling loop in a daemon thread (RQ forks a process here)."""
        self._status = self.Status.STARTED
        self._halt.clear()
        # RQ's worker checks `scheduler._process.is_alive()`, which a Thread answers too.
        thread = threading.Thread(target=self._loop, name="rq-scheduler", daemon=True)
        self._process = thread
        thread.start()
        return thread

    def _loop(self) -> None:
        # RQScheduler.work() without its signal handlers, which only the main thread may install.
        self.register_birth()
        while not self._halt.is_set():
            if self.should_reacquire_locks:
                self.acquire_locks()
            self.heartbeat()
            self.enqueue_scheduled_jobs()
            self._halt.wait(self.interval)
        self.stop()

    def halt(self) -> None:
        """Stop the loop and wait for it (bounded)."""
        self._halt.set()
        if isinstance(self._process, threading.Thread):
            self._process.join(THREAD_TIMEOUT)


def thread_scheduler_worker(
    base: type[Any], on_ready: Callable[[Any], None] | None = None
) -> type[Any]:
    """A subclass of the RQ worker class `base` whose scheduler is a ThreadScheduler.

    `on_ready(worker)` runs once RQ's signal handlers are in place: from then on Ctrl-C is a
    warm shutdown, so that is when `relay dev` may say it is running.
    """
    parent: Any = base

    class EmbeddedWorker(parent):  # type: ignore[misc]
        def _install_signal_handlers(self) -> None:
            super()._install_signal_handlers()
            if on_ready is not None:
                on_ready(self)

        def _start_scheduler(self, burst: bool = False, *args: Any, **kwargs: Any) -> None:
            scheduler = ThreadScheduler(
                self.queues, connection=self.connection, serializer=self.serializer
            )
            self.scheduler = scheduler
            scheduler.acquire_locks()
            if scheduler.acquired_locks:
                if burst:
                    scheduler.enqueue_scheduled_jobs()
                    scheduler.release_locks()
                else:
                    scheduler.start()

        def stop_scheduler(self) -> None:
            if isinstance(self.scheduler, ThreadScheduler):
                self.scheduler.halt()

    EmbeddedWorker.__name__ = EmbeddedWorker.__qualname__ = f"Embedded{base.__name__}"
    return EmbeddedWorker


def _banner_info(
    settings: Settings,
    routes: RouteTable,
    generated: Mapping[str, str],
    echoes: Sequence[EchoTarget],
    env_file: Path | None,
    admin_token: str = "",
) -> BannerInfo:
    return BannerInfo(
        redis_url="embedded (fakeredis, in this process)",
        redis_kind="in memory: everything queued is LOST when relay dev stops",
        base_url=local_url(settings),
        routes=routes,
        worker="RQ SimpleWorker in this process (scheduler in a thread)",
        generated=generated,
        echo_urls=tuple(e.url for e in echoes),
        processes=(("relay dev", os.getpid()),),
        env_file=env_file,
        admin_url=admin_url(settings),
        admin_token=admin_token,
    )


def run_embedded(
    settings: Settings,
    routes: RouteTable,
    generated: Mapping[str, str],
    *,
    echo_ports: Sequence[int] = (),
    env_file: Path | None = None,
    admin_token: str = "",
) -> int:
    """Receiver, worker and an in-memory Redis in this process, until Ctrl-C."""
    server = fakeredis.FakeServer()

    def client() -> fakeredis.FakeRedis:
        return fakeredis.FakeRedis(server=server)

    receiver = AppThread(
        "receiver",
        lambda: receiver_app(settings, routes, connection=client()),
        settings.host,
        settings.port,
        SERVER_OPTIONS,  # as `relay serve` builds it: relay decodes bodies itself
    )
    # If the receiver dies, stop the worker in the main thread the way Ctrl-C would.
    receiver.on_unexpected_exit = lambda: os.kill(os.getpid(), signal.SIGTERM)
    echoes: list[EchoTarget] = []
    # Until RQ installs its own handlers, a Ctrl-C is remembered and honoured at once after.
    pending: list[int] = []
    previous = {s: signal.signal(s, lambda n, _: pending.append(n)) for s in _STOP_SIGNALS}
    try:
        try:
            receiver.start()
            echoes = start_echo_targets(echo_ports)
        except (OSError, RuntimeError) as exc:
            print(f"relay dev: cannot start: {exc}", file=sys.stderr)
            return 1
        info = _banner_info(settings, routes, generated, echoes, env_file, admin_token)

        def ready(worker: RelayWorker) -> None:
            if pending:
                worker.stop_before_next_job()
            else:
                print(render_banner(info), flush=True)

        if not pending:
            _work(settings, routes, client(), ready)
    finally:
        receiver.stop()
        for echo in echoes:
            echo.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if receiver.failed:
        print("relay dev: the embedded receiver stopped unexpectedly", file=sys.stderr)
        return 1
    print("relay dev: stopped receiver, worker and the embedded Redis", flush=True)
    return 0


def _work(
    settings: Settings,
    routes: RouteTable,
    connection: Any,
    ready: Callable[[RelayWorker], None],
) -> None:
    """Run relay's delivery worker in this thread until SIGINT/SIGTERM (warm shutdown).

    As `relay worker` runs it (worker.process.run_worker), but with the scheduler in a thread.
    """
    configure(build_context(settings, routes, connection))
    worker = thread_scheduler_worker(RelayWorker, ready)(
        [make_queue(connection)],
        connection=connection,
        serializer=OrjsonSerializer,
        maintenance_interval=DEFAULT_MAINTENANCE_INTERVAL,
        # As `relay worker` does: RQ's default (420 s) would stretch each maintenance interval.
        worker_ttl=worker_ttl(DEFAULT_MAINTENANCE_INTERVAL),
    )
    worker.retention = settings.retention
    try:
        worker.work(with_scheduler=True, logging_level=settings.log_level.upper())
    finally:
        shutdown_runtime(drain_limit(routes))
        configure(None)
