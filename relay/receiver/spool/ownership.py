"""Who owns a spool directory: the flock on its `lock` file, taken when it is made or adopted.

A receiver holds the flock of its own directory for its whole life and the kernel drops it when
the process dies, however it dies. A directory whose flock can be taken is an orphan; whoever
takes it adopts it, drains it, then deletes it. Two holders can never exist at once (flock
belongs to the open file description, so this holds within one process as well).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
from datetime import UTC, datetime
from pathlib import Path

from relay.receiver.spool.directory import SpoolDir
from relay.receiver.spool.errors import SpoolError
from relay.receiver.spool.files import LOCK_NAME, OPEN_FLAGS, SEGMENT_BYTES, fsync_dir, write_all

__all__ = ["STALE_NEW_DIR", "adopt_dir", "create_dir"]

#: A `.new-*` directory this old is a leftover of a crash inside create_dir, not one being made.
STALE_NEW_DIR = 60.0


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"


def create_dir(root: Path, *, segment_bytes: int = SEGMENT_BYTES) -> SpoolDir:
    """A new directory for this process, locked before anyone can see it."""
    if not root.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        fsync_dir(root.parent)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    base = f"{stamp}-{_host()}-{os.getpid()}"
    for attempt in range(100):
        name = base if attempt == 0 else f"{base}-{attempt}"
        tmp = root / f".new-{name}"  # dot names are never adopted
        try:
            tmp.mkdir(mode=0o700)
        except FileExistsError:
            continue
        fd = os.open(tmp / LOCK_NAME, os.O_RDWR | os.O_CREAT | OPEN_FLAGS, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        write_all(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        final = root / name
        if final.exists():
            os.close(fd)
            os.unlink(tmp / LOCK_NAME)
            tmp.rmdir()
            continue
        tmp.rename(final)
        fsync_dir(root)
        return SpoolDir(final, fd, owned=True, segment_bytes=segment_bytes)
    raise SpoolError("no free name for a spool directory")


def adopt_dir(path: Path, *, segment_bytes: int = SEGMENT_BYTES) -> SpoolDir | None:
    """The directory at `path` if no live process holds it (its owner died), else None."""
    try:
        fd = os.open(path / LOCK_NAME, os.O_RDWR | OPEN_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # It may have been drained and removed between our open and our flock.
        if os.stat(path / LOCK_NAME).st_ino != os.fstat(fd).st_ino:
            raise FileNotFoundError(path)
        return SpoolDir(path, fd, owned=False, segment_bytes=segment_bytes)
    except OSError as exc:
        os.close(fd)
        if isinstance(exc, FileNotFoundError) or exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
