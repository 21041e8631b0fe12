"""The worker's Prometheus endpoint: its own registry, served on a port of its own.

Each worker process counts its own deliveries (relay.core.metrics.WorkerMetrics) and serves them
with prometheus-client's threaded HTTP server, bound to 127.0.0.1 unless told otherwise. With
`--processes N`, process i serves on port + i: Prometheus scrapes each and `sum()` adds them up
(multiprocess mode, with its shared files directory, is far heavier than N scrape targets). Figures
that live in Redis are read at scrape time, so every process reports the same values.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIServer

import redis
import structlog
from prometheus_client import CollectorRegistry, start_http_server

from relay.core.metrics import WorkerMetrics
from relay.store.metrics import RedisCollector

log = structlog.get_logger("relay.worker")


def build_registry(
    connection: Callable[[], redis.Redis],
    targets: Callable[[], Iterable[str]],
    reconciled: Callable[[], Iterable[tuple[str, float]]] | None = None,
) -> tuple[CollectorRegistry, WorkerMetrics]:
    """A registry with the worker's counters and the gauges read from Redis at scrape time.

    The Redis gauges (relay_target_paused among them) are the receiver's own collector, given
    the configured targets so that each has a sample, and the reconciled sources with their
    `every`.
    """
    registry = CollectorRegistry(auto_describe=True)
    metrics = WorkerMetrics(registry)
    registry.register(RedisCollector(connection, targets=targets, reconciled=reconciled))
    return registry, metrics


def process_port(base: int, index: int) -> int:
    """The metrics port of worker process `index` (0-based) when the first one serves on `base`."""
    return base + index


class MetricsServer:
    """A running metrics endpoint; `close()` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        """Stop serving and release the port."""
        _serving.discard(self)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def close_in_child(self) -> None:
        """Close this process's copy of the listening socket (in a forked child)."""
        self._server.socket.close()


#: Servers of this process, so that a forked child (RQ's scheduler) can close its copies.
_serving: set[MetricsServer] = set()


def close_inherited_servers() -> None:
    """In a forked child: close the listening sockets of the parent's metrics servers."""
    for server in list(_serving):
        server.close_in_child()
    _serving.clear()


#: How long a restarted worker waits for its metrics port to be released (seconds).
BIND_WAIT = 5.0


def serve_metrics(
    registry: CollectorRegistry, host: str, port: int, wait: float = BIND_WAIT
) -> MetricsServer:
    """Serve a registry at http://host:port/metrics in a daemon thread.

    A port still held is tried again for up to `wait` seconds: a worker process restarted after
    a crash may find its predecessor's socket not yet released (its forked scheduler dies with it,
    a moment later). Raises OSError when the port stays taken.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            server, thread = start_http_server(port, addr=host, registry=registry)
            break
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                raise
            time.sleep(0.1)
    running = MetricsServer(server, thread)
    _serving.add(running)
    log.info("worker metrics served", host=host, port=running.address[1], path="/metrics")
    return running
