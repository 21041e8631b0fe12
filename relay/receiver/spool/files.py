"""The files of one spool directory: their names, the segments' sizes, the cursor, durable writes.

One directory per receiver process, so concurrent receivers never share a file:

    {spool_dir}/
      20261122T130929123456Z-web1-4242/   start time (UTC), host, pid: names sort oldest first
        lock               flock'ed (LOCK_EX) by the process writing or draining the directory
        cursor             "segment offset": where draining resumes (replaced atomically)
        seg-00000001.log   records, appended; a new segment starts past `segment_bytes`
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import NamedTuple

import structlog

__all__ = [
    "CURSOR_NAME",
    "LOCK_NAME",
    "OPEN_FLAGS",
    "SEGMENT_BYTES",
    "Position",
    "fsync_dir",
    "read_cursor",
    "segment_name",
    "segment_sizes",
    "write_all",
    "write_cursor",
]

log = structlog.get_logger("relay.spool")

#: Drained space comes back a segment at a time; 8 MiB keeps that prompt without many files.
SEGMENT_BYTES = 8 * 1024 * 1024
LOCK_NAME = "lock"
CURSOR_NAME = "cursor"
_SEGMENT = re.compile(r"^seg-(\d{8,})\.log$")
OPEN_FLAGS = os.O_CLOEXEC


class Position(NamedTuple):
    """A place in a spool directory: segment number and byte offset (ordered)."""

    segment: int
    offset: int


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (created, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY | OPEN_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd` (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def segment_name(number: int) -> str:
    """The file name of segment `number` (names sort in segment order)."""
    return f"seg-{number:08d}.log"


def segment_sizes(path: Path) -> dict[int, int]:
    """The size in bytes of each segment file in `path`, by segment number."""
    sizes: dict[int, int] = {}
    with os.scandir(path) as entries:
        for entry in entries:
            match = _SEGMENT.match(entry.name)
            if match:
                with contextlib.suppress(FileNotFoundError):
                    sizes[int(match.group(1))] = entry.stat().st_size
    return sizes


def read_cursor(path: Path) -> Position:
    """Where draining resumes in the directory at `path` (its start if no cursor was written)."""
    try:
        segment, offset = (path / CURSOR_NAME).read_text().split()
        return Position(int(segment), int(offset))
    except FileNotFoundError:
        return Position(0, 0)
    except ValueError:
        # A cursor is replaced atomically, so this means outside damage: start over; the
        # drain skips events already in Redis, so re-reading costs time, never duplicates.
        log.error("spool_cursor_unreadable", directory=path.name)
        return Position(0, 0)


def write_cursor(path: Path, position: Position) -> None:
    """Replace the cursor of `path` with `position`, atomically and durably."""
    tmp = path / f".{CURSOR_NAME}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | OPEN_FLAGS, 0o600)
    try:
        write_all(fd, f"{position.segment} {position.offset}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path / CURSOR_NAME)
    fsync_dir(path)
