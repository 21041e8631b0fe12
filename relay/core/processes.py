"""Process lifetime helpers shared by every parent that starts children (dev, worker)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGKILL, parent: int | None = None) -> None:
    """Have Linux send `signum` to this process when its parent dies (a no-op elsewhere).

    A parent killed with SIGKILL cleans nothing up; this keeps its children from outliving it.
    With `parent` (the parent's pid, read before the fork), exit at once when that parent is
    already gone: it died before the request took effect. Safe between fork and exec: it
    neither allocates much nor starts a subprocess.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl in this libc: nothing to ask for
        return
    if parent is not None and os.getppid() != parent:
        os._exit(1)
