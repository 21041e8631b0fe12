"""RQ's scheduler as relay runs it: forked so that it dies with its worker, with a shorter lock.

RQ forks its scheduler from the worker. A forked child inherits the worker's Redis sockets, so
after a SIGKILL of the worker an orphaned scheduler would keep the dead worker's blocking
`BLMOVE` open, and Redis would hand the next job to a client nobody reads (it waits in the
intermediate queue for RQ's one-minute clean-up). `RelayScheduler` asks Linux to kill the
scheduler with its parent (PR_SET_PDEATHSIG), which closes those sockets at once.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from typing import Any

from rq import scheduler as rq_scheduler

from relay.core.processes import die_with_parent
from worker.exporter import close_inherited_servers

__all__ = ["SCHEDULER_LOCK_TTL", "RelayScheduler"]

#: TTL of the scheduler lock (RQ: 61 s). The scheduler refreshes it every second; when its
#: worker dies, another worker takes the scheduler over this much sooner, so retries and
#: watchdogs stall for seconds instead of a minute. A brief overlap of two schedulers only
#: risks a duplicate job, which relay's jobs tolerate.
SCHEDULER_LOCK_TTL = 15

_SHORTEN_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def _run_scheduler(scheduler: Any, parent: int) -> None:  # pragma: no cover - forked child
    die_with_parent(signal.SIGKILL, parent)
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
