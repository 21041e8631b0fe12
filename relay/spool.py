"""The Redis-outage spool: events kept on local disk while Redis cannot take them.

When the intake cannot commit to Redis, a source with `spool = true` has its events appended
here, and the 202 goes out only after the append is fsynced. This module is pure storage (no
Redis, no aiohttp); `relay.spool_drain` moves the records into Redis once Redis is back.

One directory per receiver process, so concurrent receivers never share a file:

    {spool_dir}/
      20261122T130929123456Z-web1-4242/   start time (UTC), host, pid: names sort oldest first
        lock               flock'ed (LOCK_EX) by the process writing or draining the directory
        cursor             "segment offset": where draining resumes (replaced atomically)
        seg-00000001.log   records, appended; a new segment starts past `segment_bytes`

A record is  b"RSP1" | u32 length | u32 CRC32(payload) | payload,  with payload
u32 meta length | orjson meta (every Event field but the body, plus the dedupe window) | body.
Raw body bytes keep the round trip byte-exact without base64. A record cut short by a crash, or
damaged, fails its length or CRC check: the reader skips to the next magic whose record checks
out and reports the bytes it passed over; it never raises on bad data.

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
import struct
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, NamedTuple

import orjson
import structlog

from relay import constants
from relay.envelope import Event
from relay.errors import Unavailable

log = structlog.get_logger("relay.spool")

MAGIC = b"RSP1"
_HEADER = struct.Struct(">4sII")  # magic, payload length, CRC32 of the payload
_META_LEN = struct.Struct(">I")
#: Drained space comes back a segment at a time; 8 MiB keeps that prompt without many files.
SEGMENT_BYTES = 8 * 1024 * 1024
LOCK_NAME = "lock"
CURSOR_NAME = "cursor"
_SEGMENT = re.compile(r"^seg-(\d{8,})\.log$")
_SCAN_CHUNK = 1024 * 1024
_OPEN_FLAGS = os.O_CLOEXEC
#: A `.new-*` directory this old is a leftover of a crash inside create_dir, not one being made.
STALE_NEW_DIR = 60.0


class SpoolError(Unavailable):
    """The spool cannot take the event (a disk error): the receiver answers 503."""


class SpoolFull(SpoolError):
    """The spool holds its maximum size: the receiver answers 503."""


@dataclass(frozen=True)
class SpooledEvent:
    """One spooled event and the dedupe window its source asked for at intake."""

    event: Event
    dedupe_window: float = 0.0


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


@dataclass(frozen=True)
class SpoolStats:
    """What the spool holds, for logs and metrics."""

    bytes: int  # segment bytes on disk under spool_dir, every directory
    directories: int  # directories this process writes or drains
    appended: int  # events this process has spooled


# ---------------------------------------------------------------------------------------------
# Records: pure encoding and decoding


def encode_record(record: SpooledEvent) -> bytes:
    """The bytes of one record: header, metadata and the body unchanged."""
    event = record.event
    meta = orjson.dumps(
        {
            "id": event.id,
            "source": event.source,
            "type": event.type,
            "received_at": event.received_at,
            "content_type": event.content_type,
            "method": event.method,
            "headers": event.headers,
            "targets": event.targets,
            "dedupe_key": event.dedupe_key,
            "dedupe_window": record.dedupe_window,
        }
    )
    payload = b"".join((_META_LEN.pack(len(meta)), meta, event.body))
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode_payload(payload: bytes) -> SpooledEvent:
    """The record a checked payload holds; ValueError when it is not one."""
    try:
        (meta_len,) = _META_LEN.unpack_from(payload)
        start = _META_LEN.size
        if start + meta_len > len(payload):
            raise ValueError("metadata longer than the record")
        meta = orjson.loads(payload[start : start + meta_len])
        event_type = meta["type"]
        event = Event(
            id=str(meta["id"]),
            source=str(meta["source"]),
            type=None if event_type is None else str(event_type),
            received_at=float(meta["received_at"]),
            content_type=str(meta["content_type"]),
            method=str(meta["method"]),
            headers=tuple((str(k), str(v)) for k, v in meta["headers"]),
            body=payload[start + meta_len :],
            targets=tuple(str(t) for t in meta["targets"]),
            dedupe_key=str(meta["dedupe_key"]),
        )
        return SpooledEvent(event, float(meta["dedupe_window"]))
    except (struct.error, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a spool record: {exc}") from exc


def _record_at(f: BinaryIO, pos: int, end: int) -> tuple[SpooledEvent, int] | None:
    """The record starting at `pos` and where it ends, or None when none checks out there."""
    f.seek(pos)
    header = f.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    magic, length, crc = _HEADER.unpack(header)
    stop = pos + _HEADER.size + length
    if magic != MAGIC or stop > end:
        return None
    payload = f.read(length)
    if len(payload) != length or zlib.crc32(payload) != crc:
        return None
    try:
        return decode_payload(payload), stop
    except ValueError:
        return None


def _next_magic(f: BinaryIO, pos: int, end: int) -> int:
    """Offset of the next MAGIC at or after `pos` (before `end`), or `end`."""
    overlap = len(MAGIC) - 1
    while pos < end:
        f.seek(pos)
        chunk = f.read(min(_SCAN_CHUNK, end - pos))
        if not chunk:
            break
        found = chunk.find(MAGIC)
        if found >= 0:
            return pos + found
        if len(chunk) <= overlap:
            break
        pos += len(chunk) - overlap
    return end


def read_records(
    f: BinaryIO, start: int, end: int, max_records: int, max_bytes: int
) -> tuple[list[SpooledEvent], int, int]:
    """Records of `f` from `start` up to `end`: (records, where reading stopped, bytes skipped)."""
    records: list[SpooledEvent] = []
    pos, skipped, size = start, 0, 0
    while pos < end and len(records) < max_records and size < max_bytes:
        found = _record_at(f, pos, end)
        if found is not None:
            record, stop = found
            records.append(record)
            size += stop - pos
            pos = stop
            continue
        # Torn or damaged: resume at the next record that checks out (CRC), if any.
        resume = _next_magic(f, pos + 1, end)
        skipped += resume - pos
        pos = resume
    return records, pos, skipped


# ---------------------------------------------------------------------------------------------
# Small durable-file helpers


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


def _segment_sizes(path: Path) -> dict[int, int]:
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
        self._sizes = _segment_sizes(path)  # bytes on disk per live segment
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


# ---------------------------------------------------------------------------------------------
# The spool of one receiver process


class Spool:
    """This process's spool: its own directory (made on first append) and adopted orphans."""

    def __init__(
        self,
        root: str | Path,
        *,
        max_bytes: int = constants.DEFAULT_SPOOL_MAX,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._own: SpoolDir | None = None
        self._adopted: dict[str, SpoolDir] = {}
        self._others = 0  # bytes in directories this process does not write (see refresh_usage)
        self._closed = False
        self.appended = 0

    def append(self, event: Event, dedupe_window: float = 0.0) -> None:
        """Spool one event; returns once it is on disk and fsynced."""
        self.append_many([event], dedupe_window)

    def append_many(self, events: Sequence[Event], dedupe_window: float = 0.0) -> None:
        """Spool a request's events together; SpoolFull or SpoolError when they cannot be."""
        data = b"".join(encode_record(SpooledEvent(e, dedupe_window)) for e in events)
        own = self._own_dir()
        own.append(data, room=self.max_bytes - self._others, limit=self.max_bytes)
        with self._lock:
            self.appended += len(events)

    def _own_dir(self) -> SpoolDir:
        with self._lock:
            if self._closed:
                raise SpoolError("the receiver is shutting down; retry later")
            if self._own is None:
                try:
                    self._own = create_dir(self.root, segment_bytes=self.segment_bytes)
                except OSError as exc:
                    log.error("spool_create_failed", root=str(self.root), error=str(exc))
                    raise SpoolError(f"the local spool cannot be created ({exc.strerror})") from exc
                self._others = self._measure_others()
                log.warning("spool_started", directory=self._own.name, root=str(self.root))
            return self._own

    def adopt_orphans(self) -> list[SpoolDir]:
        """Take every directory whose owner is gone; returns the newly adopted ones."""
        # Only the drain task adopts, so the flock attempts need not hold the lock (and must
        # not: appends wait on it).
        with self._lock:
            if self._closed:
                return []
            held = set(self._adopted) | ({self._own.name} if self._own else set())
        found = []
        for name in self._directory_names():
            if name not in held:
                adopted = adopt_dir(self.root / name, segment_bytes=self.segment_bytes)
                if adopted is not None:
                    found.append(adopted)
                    log.warning("spool_adopted", directory=name, bytes=adopted.size)
        self._remove_stale_new_dirs()
        with self._lock:
            for directory in found:
                self._adopted[directory.name] = directory
        return found

    def _remove_stale_new_dirs(self) -> None:
        """Remove half-made directories (a crash inside create_dir); they never hold records."""
        try:
            with os.scandir(self.root) as entries:
                names = [e.name for e in entries if e.name.startswith(".new-") and e.is_dir()]
        except FileNotFoundError:
            return
        for name in names:
            path = self.root / name
            try:
                if time.time() - path.stat().st_mtime < STALE_NEW_DIR:
                    continue  # possibly being made right now
                directory = adopt_dir(path, segment_bytes=self.segment_bytes)
                if directory is not None:
                    directory.remove()
            except OSError as exc:
                log.warning("spool_stale_dir_left", directory=name, error=str(exc))

    def directories(self) -> list[SpoolDir]:
        """Directories to drain, oldest first: adopted orphans and this process's own."""
        with self._lock:
            held = list(self._adopted.values()) + ([self._own] if self._own else [])
        return sorted(held, key=lambda d: d.name)

    def release(self, directory: SpoolDir) -> None:
        """Delete an adopted directory that has been drained."""
        with self._lock:
            if self._adopted.get(directory.name) is directory:
                del self._adopted[directory.name]
                directory.remove()
                log.info("spool_directory_removed", directory=directory.name)

    def refresh_usage(self) -> int:
        """Re-measure the bytes held by other directories (they count against max_bytes)."""
        with self._lock:
            self._others = self._measure_others()
            return self._others

    def stats(self) -> SpoolStats:
        """Bytes on disk, directories held and events appended."""
        with self._lock:
            own = self._own.size if self._own else 0
            held = len(self._adopted) + (1 if self._own else 0)
            return SpoolStats(own + self._others, held, self.appended)

    def close(self) -> None:
        """Let go of every directory; this process's own is deleted when fully drained."""
        with self._lock:
            self._closed = True
            adopted, self._adopted = list(self._adopted.values()), {}
            own, self._own = self._own, None
        for directory in adopted:
            directory.close()
        if own is not None:
            if own.pending():
                own.close()
                log.warning("spool_left_for_adoption", directory=own.name, bytes=own.size)
            else:
                own.remove()

    def _directory_names(self) -> list[str]:
        try:
            with os.scandir(self.root) as entries:
                return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
        except FileNotFoundError:
            return []

    def _measure_others(self) -> int:
        own = self._own.name if self._own else None
        total = 0
        for name in self._directory_names():
            if name != own:
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    total += sum(_segment_sizes(self.root / name).values())
        return total
