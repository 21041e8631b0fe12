"""The due-work poller: one small thread per worker process.

Deliveries wait in per-target due sets; RQ kicks make workers take them. The receiver kicks for
fresh events and a replay kicks for itself, but a retry whose time has come, or a delivery whose
worker died (its lease ended), has nobody to kick for it. So every worker process looks, every
POLL_INTERVAL, whether something it could take is due, and enqueues a kick when none is waiting.
A lost or skipped kick therefore delays a delivery by at most one interval, never loses it.
"""

from __future__ import annotations

import threading

import structlog
from redis.exceptions import RedisError

from relay.store.queue import kick
from worker import jobs
from worker.context import current
from worker.runtime import get_runtime

log = structlog.get_logger("relay.worker")

#: How often a worker looks for due work nobody kicked for (seconds): the retry-time precision.
POLL_INTERVAL = 0.5


def kick_if_due() -> bool:
    """Enqueue a kick when something is due and no kick is waiting; True when it did."""
    ctx = current()
    if ctx.queue.count > 0 or not jobs.anything_due(ctx, get_runtime()):
        return False
    kick(ctx.queue)
    return True


class DuePoller:
    """Runs `kick_if_due` every POLL_INTERVAL in a daemon thread until stopped."""

    def __init__(self, interval: float = POLL_INTERVAL) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay-due-poller", daemon=True)
        self._failing = False

    def start(self) -> DuePoller:
        """Start polling."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling (returns within one interval)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                kick_if_due()
                if self._failing:
                    log.info("due poller: Redis answers again")
                    self._failing = False
            except (RedisError, OSError) as exc:
                if not self._failing:  # one line per outage, not one per interval
                    log.warning("due poller: Redis unavailable", error=type(exc).__name__)
                    self._failing = True
            except Exception:
                log.exception("due poller failed; it keeps polling")
