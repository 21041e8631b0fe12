"""relay.core.supervisor: forked children, signal forwarding, restarts."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import cast

from relay.config.model import RouteTable
from relay.core.supervisor import supervise

NO_ROUTES = cast(RouteTable, None)  # passed through to the children only


def test_a_restarted_child_starts_with_default_signal_handlers(tmp_path: Path) -> None:
    """It must not inherit the parent's forwarding handler (a SIGTERM then exited it with 1)."""
    runs = tmp_path / "runs"
    seen = tmp_path / "seen"

    def child(index: int, routes: RouteTable) -> int:  # runs in the forked child
        if not runs.exists():
            runs.touch()
            return 5  # the first run dies at once: the parent restarts it, `forward` installed
        handler = signal.getsignal(signal.SIGTERM)
        seen.write_text("default" if handler is signal.SIG_DFL else repr(handler))
        os.kill(os.getppid(), signal.SIGTERM)  # the parent forwards it back here
        time.sleep(20)
        return 0

    # The parent's handler before supervise, whatever earlier tests left in this process.
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        stopped = supervise(child, 1, NO_ROUTES, name="test")
    finally:
        signal.signal(signal.SIGTERM, before)
    assert seen.read_text() == "default"
    assert stopped.restarts == 1
    assert stopped.codes == [-signal.SIGTERM]
    assert stopped.stopping
    assert stopped.clean


def test_children_that_finish_are_not_restarted_without_restart(tmp_path: Path) -> None:
    def child(index: int, routes: RouteTable) -> int:
        (tmp_path / str(index)).touch()
        return 0 if index == 0 else 3

    stopped = supervise(child, 2, NO_ROUTES, name="test", restart=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1"]
    assert stopped.codes == [0, 3]
    assert not stopped.stopping
    assert not stopped.clean
