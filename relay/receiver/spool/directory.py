"""One spool directory: segments of records, a cursor, and the flock that says who owns it.

One directory per receiver process, so concurrent receivers never share a file:

    {spool_dir}/
      20261122T130929123456Z-web1-4242/   start time (UTC), host, pid: names sort oldest first
        lock               flock'ed (LOCK_EX) by the process writing or draining the directory
        cursor             "segment offset": where draining resumes (replaced atomically)
        seg-00000001.log   records, appended; a new segment starts past `segment_bytes`

Each segment is a sequence of records (relay.receiver.spool.records: length, CRC32, the event and
its dedupe window); a torn or damaged record is skipped on reading, never raised on.

Ownership: a receiver holds the flock of its own directory for its whole life and the kernel
drops it when the process dies, however it dies. A directory whose flock can be taken is an
orphan; whoever takes it adopts it, drains it, then deletes it. Two holders can never exist at
once (flock belongs to the open file description, so this holds within one process as well).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import structlog

from relay.core.errors import Unavailable
from relay.receiver.spool.records import SpooledEvent, read_records

log = structlog.get_logger("relay.spool")


#: Drained space comes back a segment at a time; 8 MiB keeps that prompt without many files.
SEGMENT_BYTES = 8 * 1024 * 1024
LOCK_NAME = "lock"
CURSOR_NAME = "cursor"
_SEGMENT = re.compile(r"^seg-(\d{8,})\.log$")
_OPEN_FLAGS = os.O_CLOEXEC
#: A `.new-*` directory this old is a leftover of a crash inside create_dir, not one being made.
STALE_NEW_DIR = 60.0


class SpoolError(Unavailable):
    """The spool cannot take the event (a disk error): the receiver answers 503."""


class SpoolFull(SpoolError):
    """The spool holds its maximum size: the receiver answers 503."""


class Position(NamedTuple):
    """A place in a spool directory: segment number and byte offset (ordered)."""

    segment: int
    offset: int


@dataclass(frozen=True)
class Batch:
    """Records read from one directory, in order, and where the cursor goes once they commit."""

    records: tuple[SpooledEvent, ...]
    end: Position
    skipped: int  # bytes of torn or damaged records passed over
    done: bool  # nothing more to read in the directory for now


def _fsync_dir(path: Path) -> None:
    """Make a directory's entries (created, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _segment_name(number: int) -> str:
    return f"seg-{number:08d}.log"


def segment_sizes(path: Path) -> dict[int, int]:
    sizes: dict[int, int] = {}
    with os.scandir(path) as entries:
        for entry in entries:
            match = _SEGMENT.match(entry.name)
            if match:
                with contextlib.suppress(FileNotFoundError):
                    sizes[int(match.group(1))] = entry.stat().st_size
    return sizes


def _read_cursor(path: Path) -> Position:
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


def _write_cursor(path: Path, position: Position) -> None:
    tmp = path / f".{CURSOR_NAME}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _OPEN_FLAGS, 0o600)
    try:
        _write_all(fd, f"{position.segment} {position.offset}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path / CURSOR_NAME)
    _fsync_dir(path)


# ---------------------------------------------------------------------------------------------
# One directory


class SpoolDir:
    """One receiver's spool directory, held under its flock by this process."""

    def __init__(self, path: Path, lock_fd: int, *, owned: bool, segment_bytes: int) -> None:
        self.path = path
        self.name = path.name
        self.owned = owned  # True: this process writes it; False: adopted from a dead process
        self._lock_fd = lock_fd
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()  # writer state and segment bookkeeping
        self._sync_lock = threading.Lock()  # one fsync at a time; waiting writers share the next
        self.cursor = _read_cursor(path)
        self._sizes = segment_sizes(path)  # bytes on disk per live segment
        self._fd: int | None = None  # the segment taking appends (owned directories only)
        self._active = 0
        self._written = 0
        self._broken = False  # a failed write or fsync: start a new segment before the next
        self._doubtful: set[int] = set()  # segments whose fsync failed: no 202 may rest on them
        self._synced = Position(0, 0)
        self._retired: list[int] = []  # descriptors of sealed segments, closed under _sync_lock
        self._next_segment = max(max(self._sizes, default=0), self.cursor.segment) + 1
        self._closed = False

    @property
    def size(self) -> int:
        """Segment bytes on disk, drained or not."""
        with self._lock:
            return sum(self._sizes.values())

    def pending(self) -> bool:
        """Whether any byte lies past the cursor."""
        with self._lock:
            cursor = self.cursor
            return any(
                n > cursor.segment or (n == cursor.segment and size > cursor.offset)
                for n, size in self._sizes.items()
            )

    # -- writing (owned directories) ---------------------------------------------------------

    def append(self, data: bytes, *, room: int, limit: int) -> None:
        """Append encoded records and return once they are fsynced; SpoolFull past `room`."""
        with self._lock:
            if self._closed or not self.owned:
                raise SpoolError("the spool is closed; retry later")
            if sum(self._sizes.values()) + len(data) > room:
                raise SpoolFull(
                    f"Redis cannot take the event and the local spool is full ({limit} bytes); "
                    "retry later"
                )
            try:
                if self._fd is None or self._broken or self._written >= self._segment_bytes:
                    self._start_segment()
                assert self._fd is not None
                before = self._written
                try:
                    _write_all(self._fd, data)
                except OSError:
                    self._undo(before)
                    raise
            except OSError as exc:
                log.error("spool_write_failed", directory=self.name, error=str(exc))
                raise SpoolError(f"the local spool cannot be written ({exc.strerror})") from exc
            self._written += len(data)
            self._sizes[self._active] = self._written
            target = Position(self._active, self._written)
        self._sync(target)

    def _start_segment(self) -> None:
        """Seal the current segment (fsynced) and open the next (caller holds _lock)."""
        if self._fd is not None:
            # Sealed segments are durable, so _sync never needs their descriptor again.
            if self._active not in self._doubtful:
                try:
                    os.fsync(self._fd)
                except OSError:
                    self._doubtful.add(self._active)
                    self._broken = True
                    raise
            self._retired.append(self._fd)
            self._fd = None
        number = self._next_segment
        fd = os.open(
            self.path / _segment_name(number),
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | _OPEN_FLAGS,
            0o600,
        )
        self._next_segment += 1
        self._fd, self._active, self._written, self._broken = fd, number, 0, False
        self._sizes[number] = 0
        try:
            _fsync_dir(self.path)  # the new file's name must survive a crash as well as its bytes
        except OSError:
            self._broken = True  # its name may not be durable: nothing acknowledged goes in it
            raise

    def _undo(self, before: int) -> None:
        """Cut a failed write back off; if even that fails, seal the segment (readers resync)."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, before)
        except OSError:
            self._broken = True

    def _sync(self, target: Position) -> None:
        """fsync up to `target`; one caller syncs for every write made before it began."""
        with self._sync_lock:
            if self._synced >= target:
                return
            with self._lock:
                retired, self._retired = self._retired, []
                doubtful = target.segment in self._doubtful
                fd = self._fd if self._active == target.segment else None
                upto = Position(self._active, self._written)
            for old in retired:
                os.close(old)
            if doubtful:
                raise SpoolError("the local spool cannot be synced; retry later")
            if fd is None:
                return  # sealed (fsynced when sealed) or drained into Redis and retired
            try:
                os.fsync(fd)
            except OSError as exc:
                # After a failed fsync the page cache cannot be trusted: no later write to this
                # segment may be acknowledged, and the next append starts a new one.
                with self._lock:
                    self._doubtful.add(target.segment)
                    self._broken = True
                log.error("spool_fsync_failed", directory=self.name, error=str(exc))
                raise SpoolError(f"the local spool cannot be synced ({exc.strerror})") from exc
            self._synced = upto

    # -- reading and draining ----------------------------------------------------------------

    def read_batch(self, max_records: int, max_bytes: int) -> Batch:
        """The next records past the cursor, oldest first (at least one when any is there)."""
        pos = self.cursor
        records: list[SpooledEvent] = []
        skipped = size = 0
        while len(records) < max_records and size < max_bytes:
            with self._lock:
                later = sorted(n for n in self._sizes if n >= pos.segment)
                if not later:
                    return Batch(tuple(records), pos, skipped, True)
                number = later[0]
                if number > pos.segment:
                    pos = Position(number, 0)
                active = self.owned and self._fd is not None and number == self._active
                # A live segment is read only up to what its writer has finished writing.
                end: int | None = self._written if active else None
            try:
                with open(self.path / _segment_name(number), "rb") as f:
                    stop_at = os.fstat(f.fileno()).st_size if end is None else end
                    got, stop, skip = read_records(
                        f, pos.offset, stop_at, max_records - len(records), max_bytes - size
                    )
            except FileNotFoundError:
                got, stop, skip, stop_at = [], pos.offset, 0, pos.offset
            records.extend(got)
            size += stop - pos.offset - skip
            skipped += skip
            pos = Position(number, stop)
            if stop < stop_at:
                break  # a batch limit was reached inside this segment
            if active:
                return Batch(tuple(records), pos, skipped, True)
            pos = Position(number + 1, 0)  # sealed and read to its end
        return Batch(tuple(records), pos, skipped, False)

    def advance(self, end: Position) -> None:
        """Move the cursor to `end` (durably) and delete the segments wholly behind it."""
        with self._sync_lock, self._lock:
            if self.owned and self._fd is not None and end == (self._active, self._written):
                # Drained up to the last write: retire the live segment so its space comes back;
                # the next append starts a new one.
                self._retired.append(self._fd)
                self._fd = None
                end = Position(self._active + 1, 0)
            for fd in self._retired:
                os.close(fd)
            self._retired = []
            if end != self.cursor:
                _write_cursor(self.path, end)
                self.cursor = end
            for number in [n for n in self._sizes if n < end.segment]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path / _segment_name(number))
                del self._sizes[number]

    def remove(self) -> None:
        """Delete the whole directory (drained), then let go of its lock."""
        with self._sync_lock, self._lock:
            self._close_files()
            for name in os.listdir(self.path):
                if name != LOCK_NAME:
                    os.unlink(self.path / name)
            # The lock file goes last: an adopter that opened it before sees a different
            # (or no) file at the path once it gets the flock, and backs off.
            os.unlink(self.path / LOCK_NAME)
            os.rmdir(self.path)
            _fsync_dir(self.path.parent)
            self._release()

    def close(self) -> None:
        """Close files and let go of the lock, leaving the directory for a later adopter."""
        with self._sync_lock, self._lock:
            self._close_files()
            self._release()

    def _close_files(self) -> None:
        self._closed = True
        for fd in [*self._retired, *([self._fd] if self._fd is not None else [])]:
            os.close(fd)
        self._retired, self._fd = [], None

    def _release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the last descriptor drops the flock
            self._lock_fd = -1


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"


def create_dir(root: Path, *, segment_bytes: int = SEGMENT_BYTES) -> SpoolDir:
    """A new directory for this process, locked before anyone can see it."""
    if not root.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        _fsync_dir(root.parent)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    base = f"{stamp}-{_host()}-{os.getpid()}"
    for attempt in range(100):
        name = base if attempt == 0 else f"{base}-{attempt}"
        tmp = root / f".new-{name}"  # dot names are never adopted
        try:
            tmp.mkdir(mode=0o700)
        except FileExistsError:
            continue
        fd = os.open(tmp / LOCK_NAME, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _write_all(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        final = root / name
        if final.exists():
            os.close(fd)
            os.unlink(tmp / LOCK_NAME)
            tmp.rmdir()
            continue
        tmp.rename(final)
        _fsync_dir(root)
        return SpoolDir(final, fd, owned=True, segment_bytes=segment_bytes)
    raise SpoolError("no free name for a spool directory")


def adopt_dir(path: Path, *, segment_bytes: int = SEGMENT_BYTES) -> SpoolDir | None:
    """The directory at `path` if no live process holds it (its owner died), else None."""
    try:
        fd = os.open(path / LOCK_NAME, os.O_RDWR | _OPEN_FLAGS)
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
