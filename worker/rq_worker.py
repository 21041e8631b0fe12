"""The RQ worker class relay runs, one per process.

- `RelayWorker` is a SimpleWorker (no fork per job: a fork per job costs most of the
  throughput and throws away keep-alive connections). Its jobs are kicks
  (worker.jobs.deliver_due) that hold it a few seconds at most. Beside RQ's loop it runs the
  due-work poller (worker.poller), which kicks when a retry's time has come or a dead worker's
  lease has ended. A SIGKILLed worker loses nothing: the deliveries it held are due again when
  their leases end, whatever RQ makes of its abandoned job (kicks carry no retries: a lost kick
  costs one poll interval).
- It listens to exactly one queue, so RQ uses its crash-safe LMOVE hand-off.
- On SIGTERM RQ finishes the job in hand (warm shutdown); then the background loop is drained.
  An idle worker is stopped only where no Redis reply can be left unread (worker.stopping).
  The stop handlers only record the stop: a Redis call from a handler can deadlock the
  embedded (fakeredis) Redis of `relay dev`, whose lock the interrupted thread may hold.
- Its scheduler is a RelayScheduler (worker.scheduler), and its maintenance pass trims relay's
  indexes to the retention period (worker.retention).
- Beside the poller runs the reconciliation loop (worker.fellow.schedule): the passes of the
  sources with a `reconcile` table, one at a time across the deployment.
"""

from __future__ import annotations

import time
from types import FrameType
from typing import Any

import structlog
from redis import Redis
from redis.exceptions import RedisError
from rq import SimpleWorker
from rq.exceptions import StopRequested
from rq.worker import WorkerStatus

from relay.core.errors import ConfigError
from relay.store.queue import OrjsonSerializer, make_queue
from worker.breaker import close_removed_breakers
from worker.context import current
from worker.fellow.schedule import ReconcileLoop
from worker.poller import DuePoller, kick_if_due
from worker.retention import trim_retention
from worker.scheduler import RelayScheduler
from worker.stopping import gate_dequeue, interrupted_redis_read

__all__ = [
    "DEFAULT_MAINTENANCE_INTERVAL",
    "HEARTBEAT_TTL",
    "RelayWorker",
    "relay_worker",
    "worker_ttl",
]

log = structlog.get_logger("relay.worker")

#: Seconds after which a job of a dead worker counts as abandoned: well above the longest a
#: relay kick runs (LOOP_BUDGET + INLINE_BUDGET + Redis round trips).
HEARTBEAT_TTL = 20
#: How often a worker looks for abandoned jobs (RQ's default is 600 s).
DEFAULT_MAINTENANCE_INTERVAL = 10


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
    #: RQ waits 1 s, 2 s, 4 s ... up to 60 s between dequeues that failed to reach Redis: a
    #: worker would stay idle for up to a minute after Redis (or a new primary) is back.
    max_connection_wait_time = 2.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stop_frame: FrameType | None = None
        self.queue_class = gate_dequeue(self.queue_class, lambda: self._stop_requested)

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """RQ's warm shutdown, remembering where the signal landed (see worker.stopping)."""
        self._stop_frame = frame
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    @property
    def stop_was_requested(self) -> bool:
        """Whether a signal (or stop_before_next_job) asked this worker to stop."""
        return bool(self._stop_requested or self._shutdown_requested_date is not None)

    def stop_before_next_job(self) -> None:
        """A warm stop asked for without a signal: RQ checks for it before every dequeue."""
        self._stop_requested = True

    def _shutdown(self) -> None:
        """Record the stop; raise StopRequested only where that is safe. Never touches Redis.

        This runs in the signal handler, on the main thread, wherever that thread was. RQ's own
        busy path writes `shutdown_requested_date` (an HSET) and stops the scheduler (a join)
        from here; with `relay dev`'s embedded Redis the main thread may be inside a fakeredis
        command holding the server's non-reentrant lock, and that HSET waits for its own thread
        forever. Both happen on the main thread's own time instead: the date after the job in
        hand (execute_job), the scheduler in RQ's teardown. RQ raises StopRequested whenever
        the worker is idle, which can leave a Redis reply unread (worker.stopping explains).
        """
        if self.get_state() != WorkerStatus.BUSY and interrupted_redis_read(self._stop_frame):
            raise StopRequested()
        self._stop_requested = True

    def execute_job(self, job: Any, queue: Any) -> None:
        """RQ's execute_job, then the record of a stop that came during it (see _shutdown)."""
        try:
            super().execute_job(job, queue)
        finally:
            if self._stop_requested and self._shutdown_requested_date is not None:
                self._record_stop_request()

    def _record_stop_request(self) -> None:
        """What RQ writes from its handler: when the warm stop was asked for (`rq info`)."""
        try:
            self.set_shutdown_requested_date()  # type: ignore[no-untyped-call]
        except (RedisError, OSError) as exc:
            # Only a record; the stop itself must go on.
            log.warning("recording the stop request failed", error=f"{type(exc).__name__}: {exc}")

    def run_maintenance_tasks(self) -> None:
        """RQ's maintenance, the retention trim (one process per TRIM_INTERVAL), and closing the
        breakers that routes.toml no longer has."""
        super().run_maintenance_tasks()  # type: ignore[no-untyped-call]
        retention = self.retention if self.retention is not None else current().settings.retention
        try:
            trim_retention(self.connection, retention, time.time())
        except (RedisError, OSError) as exc:
            # RQ quits its work loop on any exception here; a missed trim waits for the next pass.
            log.warning("retention trim failed", error=f"{type(exc).__name__}: {exc}")
        try:
            close_removed_breakers(self.connection, current().routes, time.time())
        except (RedisError, OSError, ConfigError) as exc:
            # ConfigError: no routes in force yet (a bare worker whose first job builds them).
            log.warning("breaker clean-up failed", error=f"{type(exc).__name__}: {exc}")

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
        reconciler = ReconcileLoop().start()
        try:
            return bool(super().work(burst=False, **kwargs))
        finally:
            reconciler.stop()
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


def relay_worker(conn: Redis, maintenance_interval: int) -> RelayWorker:
    """A RelayWorker on the relay queue, with relay's serializer and heartbeat."""
    return RelayWorker(
        [make_queue(conn)],
        connection=conn,
        serializer=OrjsonSerializer,
        maintenance_interval=maintenance_interval,
        worker_ttl=worker_ttl(maintenance_interval),
    )
