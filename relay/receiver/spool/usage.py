"""What the spool holds, measured on disk at scrape time: `relay_spool_pending_bytes`.

Every receiver process writes its own directory under one spool_dir, and the drain's cursor is
a file in each, so any process (or a scrape of any one of `relay serve --processes N`) measures
the same truth: the bytes past each directory's cursor, i.e. events not yet moved into Redis.
Drained bytes still on disk (a segment is deleted only once the drain is past all of it) do not
count.
A few stat calls per directory: cheap enough for every scrape.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.receiver.spool.files import read_cursor, segment_sizes

__all__ = ["SpoolCollector", "pending_bytes"]


def _directories(root: Path) -> list[Path]:
    try:
        with os.scandir(root) as entries:
            # `.new-*` directories are half-made and never hold records.
            return [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")]
    except FileNotFoundError:
        return []


def pending_bytes(root: str | Path) -> int:
    """Bytes of spooled records not yet drained into Redis, every directory under `root`."""
    total = 0
    for path in _directories(Path(root)):
        try:
            cursor, sizes = read_cursor(path), segment_sizes(path)
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed since it was listed: drained
        for number, size in sizes.items():
            if number > cursor.segment:
                total += size
            elif number == cursor.segment:
                total += max(0, size - cursor.offset)
    return total


class SpoolCollector(Collector):
    """`relay_spool_pending_bytes` of a spool directory, measured at scrape time."""

    def __init__(self, root: str | Path) -> None:
        self._root = root

    def collect(self) -> Iterable[Metric]:
        """The gauge (0 when the spool directory does not exist or holds nothing)."""
        gauge = GaugeMetricFamily(
            "relay_spool_pending_bytes",
            "Bytes of events kept on local disk while Redis could not take them, not yet "
            "moved into Redis (every receiver process's directory under RELAY_SPOOL_DIR).",
        )
        try:
            gauge.add_metric([], float(pending_bytes(self._root)))
        except OSError:
            gauge.add_metric([], float("nan"))  # the disk itself is in trouble: say "unknown"
        yield gauge
