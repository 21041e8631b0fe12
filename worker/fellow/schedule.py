"""Reconciliation run by the workers: a daemon thread per worker process, like the due poller.

Every tick (RELAY_RECONCILE_TICK, default TICK seconds) each worker looks at each reconciled
source's last pass record (relay:rc:{source}:pass) and runs a pass when one is due: `every`
after the last one, or after a failed pass, sooner, with exponential backoff (FIRST_RETRY
doubling, never beyond `every`). The pass lock (worker.fellow.lock) makes one process in the
whole deployment run it, and the due check is repeated under the lock, so two workers never run
the same pass back to back. A pass runs in this thread, not in RQ's loop: it may take minutes,
deliveries go on meanwhile.
"""

from __future__ import annotations

import threading
import time

import structlog
from redis.exceptions import RedisError

from relay.config.model import Reconcile
from relay.store.reconcile import PassRecord
from worker.context import current

__all__ = ["FIRST_RETRY", "TICK", "ReconcileLoop", "is_due", "next_due", "reconcile_due"]

log = structlog.get_logger("relay.reconcile")

#: How often a worker looks whether a pass is due (seconds): passes start within this of due.
TICK = 15.0
#: The wait after a first failed pass (seconds); it doubles with each failure in a row.
FIRST_RETRY = 30.0


def next_due(record: PassRecord, config: Reconcile) -> float:
    """When the next pass is due: `every` after a good pass, backoff after failures."""
    if record.at <= 0:
        return 0.0
    if record.failures <= 0:
        return record.at + config.every
    backoff = FIRST_RETRY * float(2 ** min(record.failures - 1, 20))
    return record.at + min(config.every, backoff)


def is_due(record: PassRecord, config: Reconcile, now: float) -> bool:
    """Whether a pass is due now."""
    return now >= next_due(record, config)


def reconcile_due(now: float | None = None) -> int:
    """Run the passes that are due for this process's route table; how many ran."""
    # Imported here: the pass pulls in aiohttp's client, which a worker without reconciled
    # sources never needs.
    from worker.fellow.reconcile import PassBusy, run_pass

    ctx = current()
    ran = 0
    for source in ctx.routes.sources.values():
        config = source.reconcile
        if config is None:
            continue

        def due(record: PassRecord, config: Reconcile = config) -> bool:
            return is_due(record, config, time.time() if now is None else now)

        try:
            run_pass(
                ctx.connection, ctx.routes, source, retention=ctx.settings.retention, when_due=due
            )
            ran += 1
        except PassBusy:
            continue
    return ran


class ReconcileLoop:
    """Runs `reconcile_due` every `interval` in a daemon thread until stopped (None: the
    context's RELAY_RECONCILE_TICK, read when the thread starts)."""

    def __init__(self, interval: float | None = None) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay-reconcile", daemon=True)

    def start(self) -> ReconcileLoop:
        """Start looking."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop (a pass under way is left to finish: the thread is a daemon)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1)

    def _run(self) -> None:
        interval = self.interval if self.interval is not None else current().settings.reconcile_tick
        while not self._stop.wait(interval):
            try:
                reconcile_due()
            except (RedisError, OSError) as exc:
                log.warning("reconcile: Redis unavailable; next look in a tick", error=str(exc))
            except Exception:
                log.exception("reconcile: the pass loop failed; it keeps looking")
