"""Reconciliation's metrics, read from Redis at scrape time (relay.store.metrics.RedisCollector).

The pass record and counters live in Redis (relay.store.reconcile), written by whichever process
ran the pass (a worker, or `relay reconcile`), so every process's /metrics shows the same values:
use max(), not sum(), across processes. Every configured source has every outcome and event type
(0 until counted), so rate() and alert rules see a series from the start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from relay.store.reconcile import PassOutcome, PassRecord, PassStats

__all__ = ["ReconciledSource", "reconcile_families"]


@dataclass(frozen=True)
class ReconciledSource:
    """What one scrape read of a reconciled source: its configured `every`, record, counters."""

    name: str
    every: float
    record: PassRecord
    stats: PassStats


def _families() -> Mapping[str, GaugeMetricFamily | CounterMetricFamily]:
    source, outcome = ["source"], ["source", "outcome"]
    return {
        "passes": CounterMetricFamily(
            "relay_reconcile_passes",
            "Reconciliation passes by source and outcome (ok, baseline, shape, auth, "
            "rate_limited, timeout, api_error).",
            labels=outcome,
        ),
        "missed": CounterMetricFamily(
            "relay_reconcile_missed_events",
            "Events a reconciliation pass found missed and synthesized, by source and type.",
            labels=["source", "type"],
        ),
        "last": GaugeMetricFamily(
            "relay_reconcile_last_pass_timestamp_seconds",
            "Unix time at which the source's last reconciliation pass ended.",
            labels=source,
        ),
        "outcome": GaugeMetricFamily(
            "relay_reconcile_last_pass_outcome",
            "1 for the outcome of the source's last reconciliation pass, 0 for the others.",
            labels=outcome,
        ),
        "success": GaugeMetricFamily(
            "relay_reconcile_last_success_timestamp_seconds",
            "Unix time of the source's last successful pass (before any: of its first pass).",
            labels=source,
        ),
        "failures": GaugeMetricFamily(
            "relay_reconcile_consecutive_failures",
            "Reconciliation passes of the source that failed in a row (0 after a success).",
            labels=source,
        ),
        "every": GaugeMetricFamily(
            "relay_reconcile_interval_seconds",
            "The source's configured time between passes (`every` in routes.toml).",
            labels=source,
        ),
    }


def reconcile_families(sources: Sequence[ReconciledSource]) -> Iterable[Metric]:
    """The reconciliation metrics of the configured sources (empty families when none)."""
    f = _families()
    for src in sources:
        name, record = src.name, src.record
        f["every"].add_metric([name], src.every)
        for outcome, count in src.stats.passes.items():
            f["passes"].add_metric([name, str(outcome)], float(count))
        for event_type, count in src.stats.missed.items():
            f["missed"].add_metric([name, event_type], float(count))
        if record.at <= 0 or record.outcome is None:
            continue  # no pass yet: no time to report
        f["last"].add_metric([name], record.at)
        f["success"].add_metric([name], record.last_success)
        f["failures"].add_metric([name], float(record.failures))
        for outcome in PassOutcome:
            f["outcome"].add_metric([name, str(outcome)], float(outcome == record.outcome))
    return f.values()
