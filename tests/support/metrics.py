"""Prometheus text read back in tests: every sample of an exposition, one sample, a live scrape."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

#: {(sample name, sorted labels): value}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition as {(name, sorted labels): value}."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape(port: int) -> Samples:
    """The samples a process serves on 127.0.0.1:`port`/metrics."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return samples(response.read().decode())


def value(found: Samples, name: str, **labels: str) -> float | None:
    """One sample's value, or None when there is no such sample."""
    return found.get((name, tuple(sorted(labels.items()))))
