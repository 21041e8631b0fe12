"""The delivery control gauges, read from Redis at scrape time beside the pause and breaker ones.

Only targets with a rate, a concurrency or an order in force (or a FIFO queue still draining)
are reported: a target without them has no sample, so these series cost nothing for it.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from relay.store.control import ControlView


def control_gauges(views: Iterable[tuple[str, ControlView]]) -> tuple[Metric, ...]:
    """Per target: deliveries held by rate, concurrency and order; attempts in flight; limits."""
    held = GaugeMetricFamily(
        "relay_deliveries_held",
        "Deliveries due but held back, by what holds them: rate (waiting for the rate to allow"
        " a start), concurrency (every slot taken), order (waiting behind an earlier delivery"
        " of their FIFO key).",
        labels=["target", "by"],
    )
    in_flight = GaugeMetricFamily(
        "relay_target_in_flight",
        "Attempts in flight to a target with a concurrency limit, across every worker.",
        labels=["target"],
    )
    concurrency = GaugeMetricFamily(
        "relay_target_concurrency_limit",
        "The concurrency in force for the target: attempts allowed in flight at once.",
        labels=["target"],
    )
    rate = GaugeMetricFamily(
        "relay_target_rate_limit_per_second",
        "The rate in force for the target, in deliveries started per second.",
        labels=["target"],
    )
    keys = GaugeMetricFamily(
        "relay_target_order_keys",
        "FIFO keys of an ordered target that have a delivery due or under way.",
        labels=["target"],
    )
    for name, view in views:
        for by, count in view.held.items():
            held.add_metric([name, by], float(count))
        settings = view.settings
        if settings.concurrency:
            in_flight.add_metric([name], float(view.reading.in_flight))
            concurrency.add_metric([name], float(settings.concurrency))
        if settings.interval:
            rate.add_metric([name], 1.0 / settings.interval)
        if settings.order or view.reading.keys:
            keys.add_metric([name], float(view.reading.keys))
    return (held, in_flight, concurrency, rate, keys)
