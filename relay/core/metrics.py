"""Prometheus metrics of the receiver and the workers, built with prometheus-client.

Names follow Prometheus conventions (`relay_..._total` counters, `_seconds` histograms) and
labels stay low-cardinality: source and target names come from routes.toml, status codes and
outcomes from small fixed sets; event ids never become labels.

Each process has its own `CollectorRegistry` (no global state, so tests and the embedded dev
mode can run several in one process). Figures that live in Redis (queue depth, dead letters
stored) are read at scrape time by `RedisCollector`, so every process reports the same truth.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from relay.core import constants
from relay.store import keys
from relay.store.pauses import paused
from relay.store.queue import make_queue

log = structlog.get_logger("relay.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Acknowledgements take milliseconds; the top buckets show Redis trouble (intake timeout 3 s).
ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Attempts are bounded by target timeouts (default 10 s).
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Receipt to delivery spans the happy path (ms) to the end of the retry schedule (about a day).
END_TO_END_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
    3600.0, 4 * 3600.0, 12 * 3600.0, 24 * 3600.0,
)  # fmt: skip

#: Label value for requests naming no configured source (keeps cardinality bounded).
UNKNOWN_SOURCE = "_unknown"


class ReceiverMetrics:
    """What `relay serve` counts."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events_received = Counter(
            "relay_events_received",
            "Requests to /hooks by source and the HTTP status relay answered.",
            ["source", "status"],
            registry=registry,
        )
        self.ack_seconds = Histogram(
            "relay_ack_duration_seconds",
            "Time from a request's arrival to relay's answer, by source.",
            ["source"],
            buckets=ACK_BUCKETS,
            registry=registry,
        )
        self.spooled = Counter(
            "relay_events_spooled",
            "Events kept on local disk because Redis could not take them, by source.",
            ["source"],
            registry=registry,
        )
        self.refused_bodies = Counter(
            "relay_refused_bodies",
            "Compressed request bodies refused, by source and reason: encoding (a coding the "
            "source does not take), too_large (over max_body, compressed or decoded), corrupt "
            "(does not decode, or cut short), refused_early (refused before it was read).",
            ["source", "reason"],
            registry=registry,
        )
        # The labelled children by (source, status): `labels()` takes a lock and builds a key
        # each time, and this runs for every request. Bounded: sources are configured ones (or
        # UNKNOWN_SOURCE) and statuses are relay's own.
        self._request_children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def refuse_body(self, source: str, reason: str) -> None:
        """Count one compressed body refused (rare: `labels()` each time is fine)."""
        self.refused_bodies.labels(source, reason).inc()

    def observe_request(self, source: str, status: int, seconds: float) -> None:
        """Count one /hooks request and its acknowledgement latency."""
        children = self._request_children.get((source, status))
        if children is None:
            children = (
                self.events_received.labels(source, str(status)),
                self.ack_seconds.labels(source),
            )
            self._request_children[(source, status)] = children
        counter, histogram = children
        counter.inc()
        histogram.observe(seconds)


class WorkerMetrics:
    """What `relay worker` counts."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.deliveries = Counter(
            "relay_delivery_attempts",
            "Delivery attempts by target and outcome (delivered, retry, gone, dead).",
            ["target", "outcome"],
            registry=registry,
        )
        self.attempt_seconds = Histogram(
            "relay_delivery_attempt_duration_seconds",
            "Duration of one delivery attempt (request to response or error), by target.",
            ["target"],
            buckets=ATTEMPT_BUCKETS,
            registry=registry,
        )
        self.retries_scheduled = Counter(
            "relay_retries_scheduled",
            "Retries scheduled after a failed attempt, by target.",
            ["target"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "relay_dead_letters",
            "Deliveries moved to the dead-letter store, by target and reason (dead, gone).",
            ["target", "reason"],
            registry=registry,
        )
        self.end_to_end_seconds = Histogram(
            "relay_delivery_latency_seconds",
            "Time from the provider's request reaching relay to the target's 2xx, by target.",
            ["target"],
            buckets=END_TO_END_BUCKETS,
            registry=registry,
        )

    def observe_attempt(
        self, target: str, outcome: str, seconds: float, since_receipt: float | None
    ) -> None:
        """Count one attempt; `since_receipt` is set for a successful delivery."""
        self.deliveries.labels(target, outcome).inc()
        self.attempt_seconds.labels(target).observe(seconds)
        if outcome == "retry":
            self.retries_scheduled.labels(target).inc()
        elif outcome in ("dead", "gone"):
            self.dead_letters.labels(target, outcome).inc()
        if since_receipt is not None:
            self.end_to_end_seconds.labels(target).observe(max(0.0, since_receipt))


class RedisCollector(Collector):
    """Gauges read from Redis at scrape time: queue depth, dead letters, due and paused targets.

    `targets` names the configured targets, so that each has a `relay_target_paused` sample (0
    when running) before it ever had a delivery; without it, the targets Redis knows (those with
    a due set: every target that ever had a delivery) are reported.
    """

    def __init__(
        self,
        connection: Callable[[], redis.Redis],
        queue: str = constants.QUEUE_NAME,
        targets: Callable[[], Iterable[str]] | None = None,
    ):
        self._connection = connection
        self._queue = queue
        self._targets = targets

    def collect(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily(
            "relay_queue_jobs",
            "RQ jobs of the relay queue by state (queued, scheduled, started, failed).",
            labels=["state"],
        )
        dead = GaugeMetricFamily(
            "relay_dead_letters_stored", "Deliveries currently in the dead-letter store."
        )
        due = GaugeMetricFamily(
            "relay_deliveries_due",
            "Open deliveries by target: due now (waiting for a worker), or later (waiting for a"
            " retry time, or in flight until their lease ends).",
            labels=["target", "when"],
        )
        held = GaugeMetricFamily(
            "relay_target_paused",
            "1 when deliveries to the target are held (410 with pause_on_gone, or relay pause).",
            labels=["target"],
        )
        held_since = GaugeMetricFamily(
            "relay_target_pause_start_time_seconds",
            "Unix time at which a paused target was paused (paused targets only).",
            labels=["target"],
        )
        up = GaugeMetricFamily("relay_redis_up", "1 when Redis answered the scrape's queries.")
        try:
            conn = self._connection()
            # Key names from RQ's own objects, not spelled out here: they are RQ's business.
            queue = make_queue(conn, self._queue)
            pipe = conn.pipeline(transaction=False)
            pipe.llen(queue.key)
            pipe.zcard(queue.scheduled_job_registry.key)
            pipe.zcard(queue.started_job_registry.key)
            pipe.zcard(queue.failed_job_registry.key)
            pipe.zcard(keys.DEAD)
            pipe.smembers(keys.DUE_TARGETS)
            queued, scheduled, started, failed, stored, names = pipe.execute()
            targets = sorted(n.decode() for n in names)
            now = time.time()
            pipe = conn.pipeline(transaction=False)
            for target in targets:
                pipe.zcount(keys.due_key(target), "-inf", now)
                pipe.zcount(keys.due_key(target), f"({now!r}", "+inf")
            counts = pipe.execute()
            configured = tuple(self._targets()) if self._targets is not None else ()
            names = sorted(set(configured) | set(targets))
            pauses = paused(conn, names)
        except (redis.RedisError, OSError) as exc:
            log.warning("metrics_redis_unavailable", error=type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        for state, value in (
            ("queued", queued),
            ("scheduled", scheduled),
            ("started", started),
            ("failed", failed),
        ):
            depth.add_metric([state], float(value))
        dead.add_metric([], float(stored))
        for i, target in enumerate(targets):
            due.add_metric([target, "now"], float(counts[2 * i]))
            due.add_metric([target, "later"], float(counts[2 * i + 1]))
        for name in names:
            pause = pauses.get(name)
            held.add_metric([name], 0.0 if pause is None else 1.0)
            if pause is not None and pause.since is not None:
                held_since.add_metric([name], pause.since)
        up.add_metric([], 1)
        yield depth
        yield dead
        yield due
        yield held
        yield held_since
        yield up


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of a registry."""
    return generate_latest(registry)


def use_multiprocess_values(directory: str) -> None:
    """Make every metric created from now on keep its values in `directory` (mmap files).

    For `relay serve --processes N`: the children share one port, so a scrape reaches any one
    of them, and each must answer with the sum over all (`multiprocess_registry`). This is
    prometheus-client's multi-process mode, which it selects from PROMETHEUS_MULTIPROC_DIR when
    it is imported; relay sets it later (after parsing --processes), so the value class is
    chosen again here, in the parent, before the children fork and create their metrics.
    """
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def multiprocess_registry(directory: str, redis_collector: Collector) -> CollectorRegistry:
    """A registry that sums every process's metrics files, plus the Redis-backed gauges."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    registry.register(redis_collector)
    return registry
