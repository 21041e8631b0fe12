"""The SIGHUP handler of a worker never waits for a lock its own thread may hold."""

from __future__ import annotations

import threading
from pathlib import Path

from worker.reloading import RouteWatcher


def test_a_reload_request_while_stopping_takes_no_lock(tmp_path: Path) -> None:
    # stop() sets `_requested` on the main thread: a SIGHUP handler running inside that
    # Event.set (same thread, lock held) must not set it again, or it waits for itself.
    watcher = RouteWatcher(tmp_path / "routes.toml", lambda table: None)
    watcher._stopping = True
    condition = watcher._requested._cond  # type: ignore[attr-defined]
    with condition:  # where stop() is when the signal lands
        caller = threading.Thread(target=watcher.request_reload, daemon=True)
        caller.start()
        caller.join(5)  # a hang detector only: the call takes microseconds when right
        returned = not caller.is_alive()
    caller.join()
    assert returned, "request_reload waited for the Event's lock while stopping"


def test_a_reload_request_before_stopping_wakes_the_watch(tmp_path: Path) -> None:
    watcher = RouteWatcher(tmp_path / "routes.toml", lambda table: None)
    watcher.request_reload()
    assert watcher._requested.is_set()
