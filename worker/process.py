"""The RQ worker class relay runs, one worker per process, and `--processes N` supervision.

- `RelayWorker` is a SimpleWorker (no fork per job: forking costs ~4x throughput and throws away
  keep-alive connections). Its jobs are kicks (worker.jobs.deliver_due) that hold it a few
  seconds at most. Beside RQ's loop it runs the due-work poller (worker.poller), which kicks
  when a retry's time has come or a dead worker's lease has ended. A SIGKILLed worker loses
  nothing: the deliveries it held are due again when their leases end, whatever RQ makes of its
  abandoned job (kicks carry no retries: a lost kick costs one poll interval).
- It listens to exactly one queue, so RQ uses its crash-safe LMOVE hand-off.
- On SIGTERM RQ finishes the job in hand (warm shutdown); then the background loop is drained.
  An idle worker is stopped only where no Redis reply can be left unread (worker.stopping).
- RQ forks its scheduler from the worker. A forked child inherits the worker's Redis sockets, so
  after a SIGKILL of the worker an orphaned scheduler would keep the dead worker's blocking
  `BLMOVE` open, and Redis would hand the next job to a client nobody reads (it waits in the
  intermediate queue for RQ's one-minute clean-up). `RelayScheduler` asks Linux to kill the
  scheduler with its parent (PR_SET_PDEATHSIG), which closes those sockets at once.
- Each process can serve its own Prometheus metrics (worker.exporter; process i of
  `--processes N` on port + i), reloads routes.toml on SIGHUP and when it changes
  (worker.reloading; the parent of N processes forwards SIGHUP), and its maintenance pass
  trims relay's indexes to the retention period (worker.retention).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

import structlog
from redis import Redis
from redis.exceptions import RedisError
from rq import SimpleWorker
from rq import scheduler as rq_scheduler
from rq.worker import WorkerStatus

from relay import constants
from relay.queueing import OrjsonSerializer, make_queue
from relay.route_table import RouteTable
from relay.settings import Settings
from relay.supervisor import supervise
from worker import jobs
from worker.context import build_context, configure, current, swap_routes
from worker.exporter import (
    MetricsServer,
    build_registry,
    close_inherited_servers,
    process_port,
    serve_metrics,
)
from worker.poller import DuePoller, kick_if_due
from worker.reloading import RouteWatcher, install_sighup
from worker.retention import trim_retention
from worker.runtime import shutdown_runtime
from worker.stopping import gate_dequeue, interrupted_redis_read

log = structlog.get_logger("relay.worker")

#: Seconds after which a job of a dead worker counts as abandoned: well above the longest a
#: relay kick runs (LOOP_BUDGET + INLINE_BUDGET + Redis round trips).
HEARTBEAT_TTL = 20
#: How often a worker looks for abandoned jobs (RQ's default is 600 s).
DEFAULT_MAINTENANCE_INTERVAL = 10
#: Longest the shutdown waits for deliveries still in flight on the background loop.
DRAIN_LIMIT = 30.0
#: TTL of the scheduler lock (RQ: 61 s). The scheduler refreshes it every second; when its
#: worker dies, another worker takes the scheduler over this much sooner, so retries and
#: watchdogs stall for seconds instead of a minute. A brief overlap of two schedulers only
#: risks a duplicate job, which relay's jobs tolerate.
SCHEDULER_LOCK_TTL = 15

_SHORTEN_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Make the calling process receive SIGKILL when its parent dies (Linux; no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _run_scheduler(scheduler: Any, parent: int) -> None:  # pragma: no cover - forked child
    die_with_parent(parent)
    close_inherited_servers()  # the metrics port must be free again as soon as the worker exits
    rq_scheduler.run(scheduler)  # type: ignore[no-untyped-call]


class RelayScheduler(rq_scheduler.RQScheduler):
    """RQ's scheduler, forked so that it dies with its worker, with a shorter lock TTL."""

    def _shorten_locks(self) -> None:
        for name in self._acquired_locks:
            key = self.get_locking_key(name)
            self.connection.eval(_SHORTEN_LOCK, 1, key, self.name, SCHEDULER_LOCK_TTL)

    def acquire_locks(self, auto_start: bool = False) -> Any:
        """RQ's lock acquisition, then the lock's TTL cut to SCHEDULER_LOCK_TTL."""
        locks = super().acquire_locks(auto_start=auto_start)  # type: ignore[no-untyped-call]
        self._shorten_locks()
        return locks

    def heartbeat(self) -> None:
        """RQ's heartbeat, then the lock's TTL cut to SCHEDULER_LOCK_TTL."""
        super().heartbeat()  # type: ignore[no-untyped-call]
        self._shorten_locks()

    def start(self) -> Any:
        """Fork the scheduler process (as RQ does) with the parent-death signal set."""
        self._status = self.Status.STARTED
        self._connection = None  # a Redis client cannot cross the fork
        context = multiprocessing.get_context("fork")
        process = context.Process(
            target=_run_scheduler, args=(self, os.getpid()), name="Scheduler", daemon=False
        )
        process.start()
        self._process = process  # type: ignore[assignment]
        return process


def worker_ttl(maintenance_interval: int) -> int:
    """RQ's worker_ttl for a maintenance interval.

    An idle worker blocks in BLMOVE for worker_ttl - 15 s and runs maintenance only between
    dequeues: with RQ's default (420 s) every maintenance interval (abandoned jobs, taking over
    a dead worker's scheduler, retention) would stretch to 405 s.
    """
    return maintenance_interval + 15


class RelayWorker(SimpleWorker):
    """A SimpleWorker with a heartbeat TTL sized to relay's short jobs and a safer scheduler."""

    #: Retention period enforced by maintenance; None: the jobs' context settings (embedded).
    retention: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stop_frame: FrameType | None = None
        self.queue_class = gate_dequeue(self.queue_class, lambda: self._stop_requested)

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """RQ's warm shutdown, remembering where the signal landed (see worker.stopping)."""
        self._stop_frame = frame
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def _shutdown(self) -> None:
        """Stop at once only where raising is safe; otherwise before the next blocking dequeue.

        RQ raises StopRequested from the handler whenever the worker is not busy, which can
        leave a Redis reply unread on a pooled connection (worker.stopping explains).
        """
        if self.get_state() == WorkerStatus.BUSY or interrupted_redis_read(self._stop_frame):
            super()._shutdown()  # type: ignore[no-untyped-call]
            return
        self._stop_requested = True

    def run_maintenance_tasks(self) -> None:
        """RQ's maintenance, then the retention trim (one process per TRIM_INTERVAL)."""
        super().run_maintenance_tasks()  # type: ignore[no-untyped-call]
        retention = self.retention if self.retention is not None else current().settings.retention
        try:
            trim_retention(self.connection, retention, time.time())
        except (RedisError, OSError) as exc:
            # RQ quits its work loop on any exception here; a missed trim waits for the next pass.
            log.warning("retention trim failed", error=f"{type(exc).__name__}: {exc}")

    def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
        """TTL of the started-job entry: short, since relay jobs never run long."""
        timeout = job.timeout if job.timeout and job.timeout > 0 else HEARTBEAT_TTL
        return int(min(timeout, HEARTBEAT_TTL)) + 5

    def work(self, burst: bool = False, **kwargs: Any) -> bool:  # type: ignore[override]
        """RQ's work loop, with the due-work poller beside it (or one kick first, in burst mode).

        A burst worker delivers what is due when it starts and exits when the queue is empty;
        retries due later wait for a running worker.
        """
        if burst:
            kick_if_due()
            return bool(super().work(burst=True, **kwargs))
        poller = DuePoller().start()
        try:
            return bool(super().work(burst=False, **kwargs))
        finally:
            poller.stop()

    @property
    def dequeue_timeout(self) -> int:
        """Block on the queue at most one maintenance interval (RQ: worker_ttl - 15 = 405 s).

        RQ runs maintenance (abandoned-job recovery) only between dequeues, so an idle worker
        blocked in BLMOVE would leave a killed worker's jobs unrecovered for minutes.
        """
        return max(1, min(int(super().dequeue_timeout), int(self.maintenance_interval)))

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = "%H:%M:%S",
        log_format: str = "%(asctime)s %(message)s",
    ) -> None:
        """RQ's own logic (rq/worker/base.py), with RelayScheduler."""
        scheduler: Any = RelayScheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
        )
        self.scheduler = scheduler
        scheduler.acquire_locks()
        if scheduler.acquired_locks:
            if burst:
                try:
                    scheduler.register_birth()
                    scheduler.enqueue_scheduled_jobs()
                finally:
                    scheduler.release_locks()
                    scheduler.register_death()
            else:
                scheduler.start()


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


def relay_worker(conn: Redis, maintenance_interval: int) -> RelayWorker:
    """A RelayWorker on the relay queue, with relay's serializer and heartbeat."""
    return RelayWorker(
        [make_queue(conn)],
        connection=conn,
        serializer=OrjsonSerializer,
        maintenance_interval=maintenance_interval,
        worker_ttl=worker_ttl(maintenance_interval),
    )


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
    conn = connection if connection is not None else Redis.from_url(settings.redis_url)
    server: MetricsServer | None = None
    metrics = None
    if ops.metrics_port is not None:
        registry, metrics = build_registry(lambda: conn, lambda: tuple(current().routes.targets))
        port = process_port(ops.metrics_port, index)
        try:
            server = serve_metrics(registry, ops.metrics_host, port)
        except OSError as exc:
            log.error(
                "worker metrics cannot be served", host=ops.metrics_host, port=port, error=str(exc)
            )
            return 1
    configure(build_context(settings, routes, conn, metrics))
    watcher: RouteWatcher | None = None
    restore_sighup = None
    if ops.reload_routes:
        watcher = RouteWatcher(routes.path, swap_routes).start()
        if threading.current_thread() is threading.main_thread():
            restore_sighup = install_sighup(watcher)
    if threading.current_thread() is threading.main_thread():
        # `--processes` blocks SIGHUP around the fork so none lands before the handler exists.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
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
        worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level.upper())
    finally:
        if watcher is not None:
            watcher.stop()
        if restore_sighup is not None:
            restore_sighup()
        cut = shutdown_runtime(drain_limit(current().routes))
        configure(None)
        if server is not None:
            server.close()
        log.info("worker stopped", deliveries_cut_short=cut)
    return 0


def busy_ports(host: str, base: int, count: int) -> list[int]:
    """Ports among base .. base + count - 1 that cannot be bound on `host` right now."""
    busy = []
    for port in (process_port(base, i) for i in range(count)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                busy.append(port)
    return busy


def run_processes(
    settings: Settings,
    routes: RouteTable,
    processes: int,
    *,
    burst: bool = False,
    maintenance_interval: int = DEFAULT_MAINTENANCE_INTERVAL,
    ops: Operations | None = None,
) -> int:
    """Run N worker processes; forward SIGTERM, SIGINT, SIGHUP; restart crashed ones (not burst)."""
    ops = ops if ops is not None else Operations()
    if ops.metrics_port is not None:
        busy = busy_ports(ops.metrics_host, ops.metrics_port, processes)
        if busy:
            # Checked here: a child failing to bind would be restarted in a loop.
            log.error("worker metrics ports in use", host=ops.metrics_host, ports=busy)
            return 1

    def child(index: int, latest: RouteTable) -> int:  # pragma: no cover - a child process
        return run_worker(
            settings,
            latest,
            burst=burst,
            maintenance_interval=maintenance_interval,
            ops=ops,
            index=index,
        )

    ports = (
        [process_port(ops.metrics_port, i) for i in range(processes)]
        if ops.metrics_port is not None
        else None
    )
    stopped = supervise(
        child,
        processes,
        routes,
        name="worker",
        restart=not burst,
        reload_routes=ops.reload_routes,
        started={"metrics_ports": ports},
    )
    return 0 if stopped.clean else 1
