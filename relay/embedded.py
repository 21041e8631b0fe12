"""The embedded fallback of `relay dev`, for machines without `redis-server`: one process.

fakeredis's TCP server cannot serve separate worker processes (it drops the connection after any
error reply, and RQ sends one on every dequeue), so everything shares one in-process
`fakeredis.FakeServer`: the receiver runs its aiohttp app on an event loop in a thread, and the RQ
worker runs in the main thread, because RQ wants the main thread for its signal handlers (Ctrl-C
becomes a warm shutdown) and for SIGALRM job timeouts. RQ's scheduler normally forks a process,
which would get a copy of the in-memory data rather than share it; here it runs in a thread.

Everything lives in memory: stopping `relay dev` loses every queued event and retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import fakeredis
import structlog
from aiohttp import web
from rq.scheduler import RQScheduler

from relay.queueing import OrjsonSerializer, make_queue
from relay.route_table import RouteTable
from relay.settings import Settings

log = structlog.get_logger("relay.embedded")

#: Bounds start-up and shutdown of an in-process server; both take milliseconds normally.
THREAD_TIMEOUT = 10.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: How much of a delivered body the echo target prints.
ECHO_BODY_CHARS = 500


class AppThread:
    """An aiohttp application served from its own event loop in a daemon thread."""

    def __init__(
        self,
        name: str,
        make_app: Callable[[], web.Application],
        host: str,
        port: int,
        server_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self._server_options = dict(server_options or {})
        self.host = host
        self.port = port
        self._make_app = make_app
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._requested = False
        #: Set when the server stopped without being asked to.
        self.failed = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        #: Called when the server stops without being asked (the embedded worker then stops too).
        self.on_unexpected_exit: Callable[[], None] | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Start serving; raise what start-up raised (e.g. the port is taken)."""
        self._thread.start()
        if not self._ready.wait(THREAD_TIMEOUT):
            raise RuntimeError(f"the {self.name} did not start within {THREAD_TIMEOUT:g} s")
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Stop serving and wait (bounded) for the app's cleanup to finish."""
        self._requested = True
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            # The loop may close between the check and the call.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(THREAD_TIMEOUT)

    @property
    def alive(self) -> bool:
        """Whether the server thread is still running."""
        return self._thread.is_alive()

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start() or logged; the thread must not die mute
            if not self._ready.is_set():
                self._error = exc
            else:
                log.error("dev_server_failed", server=self.name, error=repr(exc))
        finally:
            self.failed = not self._requested and self._error is None  # start() reports errors
            self._ready.set()
            if self.failed and self.on_unexpected_exit is not None:
                self.on_unexpected_exit()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        runner = web.AppRunner(
            self._make_app(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=2.0,
            **self._server_options,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
            self._ready.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()


def echo_app(out: Callable[[str], None] = print) -> web.Application:
    """A loopback target that prints each request it receives and answers 200."""

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {
            k.lower(): v
            for k, v in request.headers.items()
            if k.lower().startswith(("x-relay-", "webhook-id", "webhook-timestamp"))
        }
        text = body[:ECHO_BODY_CHARS].decode("utf-8", "replace")
        more = f" ... ({len(body)} bytes)" if len(body) > ECHO_BODY_CHARS else ""
        shown = " ".join(f"{k}={v}" for k, v in sorted(headers.items()))
        out(f"{request.method} {request.path_qs} {shown}\n      {text}{more}")
        return web.json_response({"echoed": len(body)})

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


class EchoTarget(AppThread):
    """The `--echo-target` of `relay dev`: prints what the relay delivers to it."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        def out(text: str) -> None:
            print(f"echo :{port} {text}", flush=True)

        super().__init__("echo target", lambda: echo_app(out), host, port)


def start_echo_targets(ports: Sequence[int]) -> list[EchoTarget]:
    """Start one echo target per port; if one cannot start, stop the others and raise."""
    started: list[EchoTarget] = []
    try:
        for port in ports:
            echo = EchoTarget(port)
            echo.start()
            started.append(echo)
    except BaseException:
        for echo in started:
            echo.stop()
        raise
    return started


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


def run_embedded(
    settings: Settings,
    routes: RouteTable,
    generated: Mapping[str, str],
    *,
    echo_ports: Sequence[int] = (),
    env_file: Path | None = None,
) -> int:
    """Receiver, worker and an in-memory Redis in this process, until Ctrl-C."""
    from relay.app import SERVER_OPTIONS, create_app
    from relay.dev import BannerInfo, local_url, render_banner

    server = fakeredis.FakeServer()

    def client() -> fakeredis.FakeRedis:
        return fakeredis.FakeRedis(server=server)

    receiver = AppThread(
        "receiver",
        lambda: create_app(settings, routes, connection=client()),
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
        info = BannerInfo(
            redis_url="embedded (fakeredis, in this process)",
            redis_kind="in memory: everything queued is LOST when relay dev stops",
            base_url=local_url(settings),
            routes=routes,
            worker="RQ SimpleWorker in this process (scheduler in a thread)",
            generated=generated,
            echo_urls=tuple(e.url for e in echoes),
            processes=(("relay dev", os.getpid()),),
            env_file=env_file,
        )

        def ready(worker: Any) -> None:
            if pending:
                worker._stop_requested = True  # RQ checks it before its first dequeue
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
    settings: Settings, routes: RouteTable, connection: Any, ready: Callable[[Any], None]
) -> None:
    """Run relay's delivery worker in this thread until SIGINT/SIGTERM (warm shutdown)."""
    # worker.process.run_worker without its forking scheduler; relay/ never imports worker/
    # statically, so the worker package is loaded by name like the `relay worker` command.
    process: Any = importlib.import_module("worker.process")
    context: Any = importlib.import_module("worker.context")
    runtime: Any = importlib.import_module("worker.runtime")
    context.configure(context.build_context(settings, routes, connection))
    worker = thread_scheduler_worker(process.RelayWorker, ready)(
        [make_queue(connection)],
        connection=connection,
        serializer=OrjsonSerializer,
        maintenance_interval=process.DEFAULT_MAINTENANCE_INTERVAL,
        # As `relay worker` does: RQ's default (420 s) would stretch each maintenance interval.
        worker_ttl=process.worker_ttl(process.DEFAULT_MAINTENANCE_INTERVAL),
    )
    worker.retention = settings.retention
    try:
        worker.work(with_scheduler=True, logging_level=settings.log_level.upper())
    finally:
        runtime.shutdown_runtime(process.drain_limit(routes))
        context.configure(None)
