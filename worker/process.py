"""One worker process's life: metrics, route reloads, the RQ worker, and the drain at shutdown.

Each process can serve its own Prometheus metrics (worker.exporter; process i of
`--processes N` on port + i) and reloads routes.toml on SIGHUP and when it changes
(worker.reloading; the parent of N processes forwards SIGHUP). The worker itself is
worker.rq_worker; `--processes N` is worker.processes.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from redis import Redis
from redis.exceptions import RedisError

from relay.config.model import RouteTable
from relay.config.reconcile import reconciled_sources
from relay.config.settings import Settings
from relay.core import constants
from relay.core.metrics import WorkerMetrics
from relay.store.clients import WORKER, sync_client
from worker import jobs
from worker.context import build_context, configure, current, swap_routes
from worker.control import publish_controls
from worker.exporter import MetricsServer, build_registry, process_port, serve_metrics
from worker.reloading import RouteWatcher, install_sighup
from worker.rq_worker import DEFAULT_MAINTENANCE_INTERVAL, RelayWorker, relay_worker
from worker.runtime import get_runtime, shutdown_runtime

__all__ = ["DRAIN_LIMIT", "Operations", "drain_limit", "run_worker"]

log = structlog.get_logger("relay.worker")

#: Longest the shutdown waits for deliveries still in flight on the background loop.
DRAIN_LIMIT = 30.0
#: Backoff before a fresh RQ worker replaces one whose loop ended on a Redis error (seconds).
RESTART_FIRST = 0.5
RESTART_CAP = 5.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def drain_limit(routes: RouteTable) -> float:
    """How long to wait for in-flight deliveries at shutdown: the longest target timeout."""
    longest = max((t.timeout for t in routes.targets.values()), default=constants.DEFAULT_TIMEOUT)
    return min(DRAIN_LIMIT, longest + 1.0)


@dataclass(frozen=True)
class Operations:
    """What each worker process runs beside RQ: a metrics endpoint and live route reloads."""

    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # None: no metrics endpoint; process i serves on port + i
    reload_routes: bool = True


def _serve_metrics(
    ops: Operations, conn: Redis, index: int
) -> tuple[MetricsServer, WorkerMetrics] | None:
    """Serve process `index`'s metrics on its port; None (logged) when it cannot be bound."""
    assert ops.metrics_port is not None
    registry, metrics = build_registry(
        lambda: conn,
        lambda: tuple(current().routes.targets),
        lambda: reconciled_sources(current().routes),
    )
    port = process_port(ops.metrics_port, index)
    try:
        return serve_metrics(registry, ops.metrics_host, port), metrics
    except OSError as exc:
        log.error(
            "worker metrics cannot be served", host=ops.metrics_host, port=port, error=str(exc)
        )
        return None


def _reload_routes(routes: RouteTable, enabled: bool, conn: Redis) -> Callable[[], None]:
    """Start route reloads if `enabled` (a file watch; SIGHUP too in the main thread).

    Returns what stops them and restores SIGHUP's old handler.
    """

    def apply(table: RouteTable) -> bool:
        swapped = swap_routes(table)
        publish_controls(conn, table)  # the rate, concurrency and order now in force
        return swapped

    watcher = RouteWatcher(routes.path, apply).start() if enabled else None
    main = threading.current_thread() is threading.main_thread()
    restore_sighup = install_sighup(watcher) if watcher is not None and main else None
    if main:
        # `--processes` blocks SIGHUP around the fork so none lands before the handler exists.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})

    def stop() -> None:
        if watcher is not None:
            watcher.stop()
        if restore_sighup is not None:
            restore_sighup()

    return stop


def _work(worker: RelayWorker, settings: Settings, maintenance_interval: int, burst: bool) -> None:
    """Run RQ's work loop; when it ends by itself (RQ quits it on a Redis error outside its
    dequeue wait, e.g. a failover longer than the client's re-sends), start a fresh RQ worker
    in this process after a backoff, instead of leaving the process idle or exiting."""
    delay = RESTART_FIRST
    level = settings.log_level.upper()
    while True:
        try:
            worker.work(burst=burst, with_scheduler=True, logging_level=level)
            error = None
        except (RedisError, OSError) as exc:
            # RQ's teardown (registering the worker's death) meets the same outage that ended
            # its loop, and raises out of work().
            error = f"{type(exc).__name__}: {exc}"
        if burst or worker.stop_was_requested:
            return
        log.warning(
            "rq work loop ended on its own; starting a new worker", after_s=delay, error=error
        )
        if not _pause(delay):
            return
        delay = min(RESTART_CAP, delay * 2)
        conn = worker.connection
        worker = relay_worker(conn, maintenance_interval)
        worker.retention = settings.retention


def _pause(seconds: float) -> bool:
    """Sleep, unless SIGTERM or SIGINT arrives meanwhile (False then: stop)."""
    if threading.current_thread() is not threading.main_thread():
        time.sleep(seconds)
        return True
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _STOP_SIGNALS}
    try:
        return not stop.wait(seconds)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def run_worker(
    settings: Settings,
    routes: RouteTable,
    *,
    connection: Redis | None = None,
    burst: bool = False,
    maintenance_interval: int = DEFAULT_MAINTENANCE_INTERVAL,
    ops: Operations | None = None,
    index: int = 0,
) -> int:
    """Run one RQ worker with the scheduler in this process until stopped (or drained: burst)."""
    ops = ops if ops is not None else Operations()
    conn = connection if connection is not None else sync_client(settings.redis_url, WORKER)
    server: MetricsServer | None = None
    metrics: WorkerMetrics | None = None
    if ops.metrics_port is not None:
        served = _serve_metrics(ops, conn, index)
        if served is None:
            return 1
        server, metrics = served
    configure(build_context(settings, routes, conn, metrics))
    publish_controls(conn, routes)
    get_runtime().warm()
    stop_reloads = _reload_routes(routes, ops.reload_routes, conn)
    worker = relay_worker(conn, maintenance_interval)
    worker.retention = settings.retention
    log.info(
        "worker starting",
        queue=worker.queues[0].name,
        burst=burst,
        maintenance_interval_s=maintenance_interval,
        inline_budget_s=jobs.INLINE_BUDGET,
        targets=len(routes.targets),
        metrics_port=server.address[1] if server is not None else None,
        reload_routes=ops.reload_routes,
    )
    try:
        _work(worker, settings, maintenance_interval, burst)
    finally:
        stop_reloads()
        cut = shutdown_runtime(drain_limit(current().routes))
        configure(None)
        if server is not None:
            server.close()
        log.info("worker stopped", deliveries_cut_short=cut)
    return 0
