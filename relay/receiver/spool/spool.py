"""The Redis-outage spool: events kept on local disk while Redis cannot take them.

When the intake cannot commit to Redis, a source with `spool = true` has its events appended
here, and the 202 goes out only after the append is fsynced. This module is pure storage (no
Redis, no aiohttp); `relay.receiver.spool.drain` moves the records into Redis once Redis is back.

Each receiver process writes a directory of its own (relay.receiver.spool.directory) and adopts the
directories of processes that died, so that their events are drained too.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from relay.core import constants
from relay.receiver.spool.directory import SpoolDir
from relay.receiver.spool.errors import SpoolError
from relay.receiver.spool.files import SEGMENT_BYTES, segment_sizes
from relay.receiver.spool.ownership import STALE_NEW_DIR, adopt_dir, create_dir
from relay.receiver.spool.records import SpooledEvent, encode_record
from relay.store.records import Event

log = structlog.get_logger("relay.spool")


@dataclass(frozen=True)
class SpoolStats:
    """What the spool holds, for logs and metrics."""

    bytes: int  # segment bytes on disk under spool_dir, every directory
    directories: int  # directories this process writes or drains
    appended: int  # events this process has spooled


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
                    total += sum(segment_sizes(self.root / name).values())
        return total
