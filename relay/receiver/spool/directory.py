"""One spool directory, held under its flock: appends to segments, reads past the cursor.

Each segment is a sequence of records (relay.receiver.spool.records: length, CRC32, the event and
its dedupe window); a torn or damaged record is skipped on reading, never raised on. The files
themselves are relay.receiver.spool.files; who holds a directory, relay.receiver.spool.ownership.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import structlog

from relay.receiver.spool.errors import SpoolError, SpoolFull
from relay.receiver.spool.files import (
    LOCK_NAME,
    OPEN_FLAGS,
    Position,
    fsync_dir,
    read_cursor,
    segment_name,
    segment_sizes,
    write_all,
    write_cursor,
)
from relay.receiver.spool.records import SpooledEvent, read_records

__all__ = ["Batch", "SpoolDir"]

log = structlog.get_logger("relay.spool")


@dataclass(frozen=True)
class Batch:
    """Records read from one directory, in order, and where the cursor goes once they commit."""

    records: tuple[SpooledEvent, ...]
    end: Position
    skipped: int  # bytes of torn or damaged records passed over
    done: bool  # nothing more to read in the directory for now


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
        self.cursor = read_cursor(path)
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
                    write_all(self._fd, data)
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
            self.path / segment_name(number),
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | OPEN_FLAGS,
            0o600,
        )
        self._next_segment += 1
        self._fd, self._active, self._written, self._broken = fd, number, 0, False
        self._sizes[number] = 0
        try:
            fsync_dir(self.path)  # the new file's name must survive a crash as well as its bytes
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
                with open(self.path / segment_name(number), "rb") as f:
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
                write_cursor(self.path, end)
                self.cursor = end
            for number in [n for n in self._sizes if n < end.segment]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path / segment_name(number))
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
            fsync_dir(self.path.parent)
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
