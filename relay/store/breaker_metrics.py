"""The circuit breakers' gauges, read from Redis at scrape time beside the pause gauges.

Every reported target has a `relay_target_breaker_open` sample (0 while closed, and for targets
without a breaker), so an alert can tell "closed" from "not scraped". The opens and closes
counters are the workers' own (relay.core.metrics.WorkerMetrics).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from relay.store.breakers import BreakerState


def breaker_gauges(states: Iterable[tuple[str, BreakerState | None]]) -> tuple[Metric, ...]:
    """Per target: open or not, since when (open ones only), failed attempts in a row."""
    is_open = GaugeMetricFamily(
        "relay_target_breaker_open",
        "1 while the target's circuit breaker is open: deliveries held but for one probe per"
        " interval.",
        labels=["target"],
    )
    since = GaugeMetricFamily(
        "relay_target_breaker_open_start_time_seconds",
        "Unix time at which an open circuit breaker opened (open breakers only).",
        labels=["target"],
    )
    failures = GaugeMetricFamily(
        "relay_target_breaker_failures",
        "Failed attempts in a row to the target, as its circuit breaker counts them.",
        labels=["target"],
    )
    for name, state in states:
        opened_at = None if state is None else state.opened_at
        is_open.add_metric([name], 0.0 if opened_at is None else 1.0)
        if opened_at is not None:
            since.add_metric([name], opened_at)
        failures.add_metric([name], 0.0 if state is None else float(state.failures))
    return (is_open, since, failures)
