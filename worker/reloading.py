"""Live route reloads in a worker process: SIGHUP and a file watch, in one small thread.

The thread polls routes.toml every POLL_INTERVAL (relay.config.reload.RouteReloader: only a valid
file is applied, an invalid edit is logged and changes nothing) and reloads at once when SIGHUP
arrives. The signal handler only sets an Event, so it is safe whatever the main thread (RQ's work
loop, blocked on Redis) was doing. Applying new routes swaps the jobs' context
(worker.context.swap_routes): deliveries already started keep the Target they started with.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from relay.config.model import RouteTable
from relay.config.reload import POLL_INTERVAL, RouteReloader

log = structlog.get_logger("relay.worker")


class RouteWatcher:
    """Reloads routes.toml on request (SIGHUP) and when the file changes."""

    def __init__(
        self,
        path: str | Path,
        apply: Callable[[RouteTable], Any],
        interval: float = POLL_INTERVAL,
    ) -> None:
        self.reloader = RouteReloader(path, apply)
        self.interval = interval
        self._requested = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="relay-route-watch", daemon=True)

    def start(self) -> RouteWatcher:
        """Start watching in a daemon thread."""
        self._thread.start()
        return self

    def request_reload(self) -> None:
        """Ask for a reload now (safe to call from a signal handler: it only sets an Event).

        Once stopping it does nothing: `stop()` sets the same Event on the main thread, and
        Event.set holds a non-reentrant lock; a SIGHUP landing there would wait for itself.
        """
        if not self._stopping:
            self._requested.set()

    def stop(self) -> None:
        """Stop the thread (it finishes a reload in progress first)."""
        self._stopping = True
        self._requested.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            asked = self._requested.wait(self.interval)
            if self._stopping:
                return
            self._requested.clear()
            try:
                if asked:
                    self.reloader.reload(reason="SIGHUP")
                else:
                    self.reloader.poll()
            except Exception:
                # The watch must outlive one bad pass (say a half-written file on a flaky disk):
                # a silently dead thread would leave every later edit unapplied.
                log.exception("routes_reload_failed", path=str(self.reloader.path))


def install_sighup(watcher: RouteWatcher) -> Callable[[], None]:
    """Make SIGHUP reload routes (main thread only); return a function restoring the old handler."""

    def on_sighup(signum: int, frame: FrameType | None) -> None:
        watcher.request_reload()

    previous = signal.signal(signal.SIGHUP, on_sighup)

    def restore() -> None:
        # None: the old handler was not set from Python; the default is the best guess.
        signal.signal(signal.SIGHUP, previous if previous is not None else signal.SIG_DFL)

    return restore
