"""What jobs need from their process: settings, routes, Redis, the queue and the store.

`relay worker` installs one with `configure`; under a plain `rq worker` the first job builds it
from the environment (REDIS_URL, RELAY_ROUTES) and the current job's connection.

A route reload installs a new context with `swap_routes` (one assignment under the lock). A job
reads the context once when it starts, so deliveries already under way keep the routes, and the
Target, they started with.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace

from redis import Redis
from rq import Queue, get_current_job

from relay.config.loading import load_routes
from relay.config.model import RouteTable
from relay.config.settings import Settings
from relay.core.metrics import WorkerMetrics
from relay.store.clients import WORKER, sync_client
from relay.store.deliveries import Store
from relay.store.queue import make_queue


@dataclass(frozen=True)
class WorkerContext:
    """Process-wide dependencies of the delivery jobs."""

    settings: Settings
    routes: RouteTable
    connection: Redis
    queue: Queue
    store: Store
    metrics: WorkerMetrics | None = None  # None: this process serves no metrics


def build_context(
    settings: Settings,
    routes: RouteTable,
    connection: Redis,
    metrics: WorkerMetrics | None = None,
) -> WorkerContext:
    """A context on a connection (the queue and store share it; redis-py is thread-safe)."""
    return WorkerContext(
        settings=settings,
        routes=routes,
        connection=connection,
        queue=make_queue(connection),
        store=Store(connection, settings.retention),
        metrics=metrics,
    )


_context: WorkerContext | None = None
_lock = threading.Lock()


def configure(context: WorkerContext | None) -> None:
    """Install (or with None, forget) the process's context."""
    global _context
    with _lock:
        _context = context


def swap_routes(routes: RouteTable) -> bool:
    """Put new routes in force for jobs that start from now on; False when no context is set."""
    global _context
    with _lock:
        if _context is None:
            return False
        _context = replace(_context, routes=routes)
        return True


def current() -> WorkerContext:
    """The process's context, built from the environment on first use when none was installed."""
    global _context
    with _lock:
        if _context is None:
            settings = Settings.from_env()
            routes = load_routes(settings.routes_path, os.environ)
            job = get_current_job()
            connection = job.connection if job is not None else None
            if connection is None:
                connection = sync_client(settings.redis_url, WORKER)
            _context = build_context(settings, routes, connection)
        return _context
