"""Prometheus metrics of the receiver and the workers, built with prometheus-client.

Names follow Prometheus conventions (`relay_..._total` counters, `_seconds` histograms) and
labels stay low-cardinality: source and target names come from routes.toml, status codes and
outcomes from small fixed sets; event ids never become labels.

Each process has its own `CollectorRegistry` (no global state, so tests and the embedded dev
mode can run several in one process). Figures that live in Redis (queue depth, dead letters
stored) are read at scrape time by `RedisCollector`, so every process reports the same truth.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from relay.core.states import Outcome

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
        # What one /hooks request updates, by (source, status): `labels()` takes a lock and
        # builds a key each time, and this runs for every request. Bounded: sources are
        # configured ones (or UNKNOWN_SOURCE) and statuses are relay's own.
        self._request_values: dict[tuple[str, int], _RequestValues] = {}

    def refuse_body(self, source: str, reason: str) -> None:
        """Count one compressed body refused (rare: `labels()` each time is fine)."""
        self.refused_bodies.labels(source, reason).inc()

    def observe_request(self, source: str, status: int, seconds: float) -> None:
        """Count one /hooks request and its acknowledgement latency."""
        values = self._request_values.get((source, status))
        if values is None:
            values = _request_values(
                self.events_received.labels(source, str(status)), self.ack_seconds.labels(source)
            )
            self._request_values[(source, status)] = values
        received, add, buckets, bounds, plain = values
        if plain is not None:
            # In-process values: added to without their inc() and its lock, which guards
            # against another thread adding to the same value; only this method adds to these,
            # on the event loop's thread. A third of what counting a request cost.
            count, total, bucket_values = plain
            count._value += 1
            total._value += seconds
            bucket_values[bisect.bisect_left(bounds, seconds)]._value += 1
            return
        # What Counter.inc(1) and Histogram.observe(seconds) do (without an exemplar), less
        # their checks and calls: about half of what counting a request cost.
        received(1)
        add(seconds)
        buckets[bisect.bisect_left(bounds, seconds)](1)


class _RequestValues(NamedTuple):
    """The `inc` of each value a /hooks request adds to (prometheus-client's own value objects,
    in-process or multi-process files alike), and the histogram's bucket bounds."""

    received: Callable[[float], None]  # relay_events_received_total{source, status}
    add: Callable[[float], None]  # relay_ack_duration_seconds_sum{source}
    buckets: list[Callable[[float], None]]  # per bucket (not cumulative), +Inf last
    bounds: Sequence[float]
    #: The counter's, sum's and buckets' value objects when they are in-process ones
    #: (`values.MutexValue`, a float under a lock); None in multi-process mode (mmap files).
    plain: tuple[Any, Any, list[Any]] | None


def _request_values(counter: Counter, histogram: Histogram) -> _RequestValues:
    # Private attributes of prometheus-client (0.2x): tests/test_metrics.py checks the samples
    # against the public inc() and observe(), so an upgrade that moves them fails there.
    objects = (counter._value, histogram._sum, list(histogram._buckets))
    in_process = all(type(v) is values.MutexValue for v in (*objects[:2], *objects[2]))
    return _RequestValues(
        counter._value.inc,
        histogram._sum.inc,
        [bucket.inc for bucket in histogram._buckets],
        histogram._upper_bounds,
        objects if in_process else None,
    )


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
        # Counted by the worker whose attempt opened or closed it: sum() over workers.
        self.breaker_opens = Counter(
            "relay_target_breaker_opens",
            "Times a target's circuit breaker opened (failed attempts in a row), by target.",
            ["target"],
            registry=registry,
        )
        self.breaker_closes = Counter(
            "relay_target_breaker_closes",
            "Times a target's open circuit breaker closed (an attempt succeeded), by target.",
            ["target"],
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
        if outcome == Outcome.RETRY:
            self.retries_scheduled.labels(target).inc()
        elif outcome in (Outcome.DEAD, Outcome.GONE):
            self.dead_letters.labels(target, outcome).inc()
        if since_receipt is not None:
            self.end_to_end_seconds.labels(target).observe(max(0.0, since_receipt))


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


def multiprocess_registry(directory: str, *collectors: Collector) -> CollectorRegistry:
    """A registry that sums every process's metrics files, plus the collectors that read the
    same truth from any process (the Redis-backed gauges, the spool on disk)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    for collector in collectors:
        registry.register(collector)
    return registry
