"""The receiver's aiohttp application: `/hooks/{source}[/{token}]`, `/healthz`, `/readyz`,
`/metrics`, built by `create_app`.

The parts: relay.receiver.accept decides (pure), relay.receiver.hook is the adapter around it,
relay.receiver.middleware gives the JSON errors and the log line, relay.receiver.dispatch sends
/hooks requests to the hook past the router, relay.receiver.handlers the other endpoints;
durability is relay.receiver.intake.IntakeWriter (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Mapping
from types import MappingProxyType
from typing import Any

import redis
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from relay.config.model import RouteTable
from relay.config.reconcile import reconciled_sources
from relay.config.reload import POLL_INTERVAL, RouteReloader
from relay.config.settings import Settings
from relay.core.logs import LineLogger
from relay.core.metrics import ReceiverMetrics, multiprocess_registry
from relay.receiver.dispatch import install as install_dispatch
from relay.receiver.handlers import healthz, metrics, readyz
from relay.receiver.hook import hook
from relay.receiver.intake import IntakeWriter
from relay.receiver.middleware import Canonical, error_response
from relay.receiver.spool.drain import SpoolDrainer, redis_commit
from relay.receiver.spool.spool import Spool
from relay.receiver.spool.usage import SpoolCollector
from relay.receiver.state import (
    DRAINER,
    METRICS,
    REDIS,
    ROUTES,
    SCRAPE,
    SETTINGS,
    SPOOL,
    WRITER,
    RoutesHolder,
)
from relay.store import clients
from relay.store.metrics import RedisCollector
from relay.store.replication import read_facts, startup_warnings

__all__ = ["SERVER_OPTIONS", "create_app", "error_response"]

#: How every server of this app must be built (`relay serve`, its `--processes` children,
#: `relay dev`'s embedded receiver, the tests): aiohttp's `auto_decompress` inflates a body in
#: the protocol before any handler runs, refused requests included, so relay decodes instead
#: (relay.receiver.decoding, bounded by the source's max_body); and with no lingering, the unread
#: body of a refused request is not drained for up to 10 s after the answer: the connection closes.
SERVER_OPTIONS: Mapping[str, Any] = MappingProxyType(
    {"auto_decompress": False, "lingering_time": 0.0}
)


async def _route_reloading(app: web.Application) -> AsyncIterator[None]:
    """Reload routes.toml on SIGHUP and when the file changes (a background poll)."""
    holder = app[ROUTES]

    def apply(table: RouteTable) -> None:
        holder.table = table  # one assignment: requests under way keep the table they read

    reloader = RouteReloader(holder.table.path, apply)
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reloader.reload)
        on_signal = True
    except (RuntimeError, ValueError):  # not the main thread (relay dev's embedded mode)
        on_signal = False

    async def poll() -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            await asyncio.to_thread(reloader.poll)

    task = loop.create_task(poll(), name="relay-route-reload")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if on_signal:
        loop.remove_signal_handler(signal.SIGHUP)


def warn_at_start(client: redis.Redis, settings: Settings) -> None:
    """Log what the primary says that weakens the promise of a 202 (relay.store.replication)."""
    log = structlog.get_logger("relay.serve")
    try:
        facts = read_facts(client)
    except (redis.RedisError, OSError) as exc:
        log.info("replication_check_skipped", error=str(exc), error_type=type(exc).__name__)
        return
    for warning in startup_warnings(facts, settings.ack_replicas):
        log.warning("redis_setup_warning", warning=warning, ack_replicas=str(settings.ack_replicas))


def _redis_and_writer(settings: Settings, connection: redis.Redis | None) -> Any:
    """The cleanup context owning the Redis clients, the intake writer, the spool and its
    drainer; `connection` (sync, e.g. fakeredis) replaces REDIS_URL."""

    async def redis_and_writer(app: web.Application) -> AsyncIterator[None]:
        owned = connection is None
        bounds = clients.intake(settings.intake_timeout)
        client = clients.sync_client(settings.redis_url, bounds) if owned else connection
        assert client is not None
        # The intake commits on the loop (redis.asyncio); the rest (readiness, status, metrics,
        # spool drain, RQ's queue) uses the sync client in threads.
        committer = clients.async_client(settings.redis_url, bounds) if owned else None
        spool = Spool(settings.spool_dir, max_bytes=settings.spool_max)
        drain_commit = redis_commit(
            client,
            retention=settings.retention,
            ack_replicas=settings.ack_replicas,
            ack_timeout=settings.intake_timeout,
        )
        drainer = SpoolDrainer(spool, drain_commit)
        writer = IntakeWriter(
            committer or client,
            queue_connection=client,
            retention=settings.retention,
            ack_replicas=settings.ack_replicas,
            on_recovered=drainer.wake,  # a spool waiting for Redis drains at once
        )
        # Not for a given connection (relay dev's embedded, in-memory Redis has nothing to check).
        checks = (
            asyncio.create_task(asyncio.to_thread(warn_at_start, client, settings))
            if owned
            else None
        )
        app[REDIS] = client
        app[WRITER] = writer
        app[SPOOL] = spool
        app[DRAINER] = drainer
        writer.start()
        drainer.start()
        yield
        if checks is not None:
            await checks
        await writer.close()
        await drainer.close()
        spool.close()
        if committer is not None:
            await committer.aclose()
        if owned:
            client.close()

    return redis_and_writer


def create_app(
    settings: Settings,
    routes: RouteTable,
    *,
    connection: redis.Redis | None = None,
    reload_routes: bool = False,
    metrics_dir: str | None = None,
) -> web.Application:
    """The receiver application; `connection` (sync, e.g. fakeredis) replaces REDIS_URL.

    With `reload_routes`, routes.toml (at `routes.path`) is reloaded on SIGHUP and when it
    changes, if it validates. With `metrics_dir` (one of `relay serve --processes N`), GET
    /metrics answers for all N processes (relay.core.metrics.use_multiprocess_values). Configure
    logging (relay.core.logs.configure_logging) first: the request log line's logger is bound here.
    """
    largest = max((s.max_body for s in routes.sources.values()), default=0)
    # The hook handler reads the stream with each source's own cap; this only bounds
    # request.read()/post() elsewhere and must not be below the largest source limit.
    registry = CollectorRegistry()
    receiver_metrics = ReceiverMetrics(registry)
    canonical = Canonical(receiver_metrics, LineLogger("relay.receiver"))
    app = web.Application(
        middlewares=[canonical.middleware()],
        client_max_size=max(largest, 1024 * 1024),
    )
    install_dispatch(app, canonical)  # /hooks requests past the router (relay.receiver.dispatch)
    app[SETTINGS] = settings
    app[ROUTES] = RoutesHolder(routes)
    # Every configured target gets a relay_target_paused sample, even before its first delivery.
    redis_gauges = RedisCollector(
        lambda: app[REDIS],
        targets=lambda: tuple(app[ROUTES].table.targets),
        reconciled=lambda: reconciled_sources(app[ROUTES].table),
    )
    registry.register(redis_gauges)
    spool_gauge = SpoolCollector(settings.spool_dir)
    registry.register(spool_gauge)
    app[METRICS] = receiver_metrics
    app[SCRAPE] = (
        multiprocess_registry(metrics_dir, redis_gauges, spool_gauge)
        if metrics_dir is not None
        else registry
    )
    app.cleanup_ctx.append(_redis_and_writer(settings, connection))
    if reload_routes:
        app.cleanup_ctx.append(_route_reloading)
    for path in ("/hooks/{source}", "/hooks/{source}/{token}"):
        app.router.add_route("*", path, hook)
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    app.router.add_get("/metrics", metrics, allow_head=False)
    return app
