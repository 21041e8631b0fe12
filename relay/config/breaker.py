"""A target's circuit breaker in routes.toml: `breaker = { failures = 20, probe = "30s" }`.

After `failures` failed attempts in a row (counted across every worker, relay.store.breakers)
the breaker opens: the target's deliveries are held, with their attempts untouched, and one probe
delivery is tried every `probe` until one succeeds. `breaker = true` takes both defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relay.config.fields import Collector
from relay.core.units import format_duration, parse_duration

BREAKER_KEYS = ("failures", "probe")
#: Defaults: the issue's example. 20 in a row is well past a flaky target's bad patch (at a 30%
#: failure rate, 20 in a row happens about once in 3.5 * 10^10 attempts).
DEFAULT_FAILURES = 20
DEFAULT_PROBE = 30.0
MAX_FAILURES = 10_000
#: A probe more often than every second is load, not a test; more rarely than a day is no probe.
MIN_PROBE = 1.0
MAX_PROBE = 24 * 3600.0
EXAMPLE = 'breaker = { failures = 20, probe = "30s" }'


@dataclass(frozen=True)
class Breaker:
    """When a target's breaker opens (failed attempts in a row) and how often it probes (s)."""

    failures: int = DEFAULT_FAILURES
    probe: float = DEFAULT_PROBE

    def probe_interval(self, timeout: float) -> float:
        """Seconds between probes: `probe`, or the target's timeout when that is longer, so
        that a probe still waiting for its answer is never joined by a second one."""
        return max(self.probe, timeout)

    def describe(self) -> str:
        """`opens after 20 failed attempts in a row; probes every 30s` (for relay check)."""
        return (
            f"opens after {self.failures} failed attempts in a row; "
            f"probes every {format_duration(self.probe)}"
        )


def load_breaker(c: Collector, table: str, value: Any) -> Breaker | None:
    """The `breaker` key of a target: a table, `true` (the defaults) or `false` (none)."""
    if value is True:
        return Breaker()
    if value is False:
        return None
    if not isinstance(value, Mapping):
        c.add(table, "breaker", f"must be a table like {EXAMPLE} (or true for those defaults)")
        return None
    where = f"{table}.breaker"
    ok = len(c.problems)
    c.unknown_keys(where, value, BREAKER_KEYS)
    failures = value.get("failures", DEFAULT_FAILURES)
    if isinstance(failures, bool) or not isinstance(failures, int):
        c.add(where, "failures", "must be a whole number of failed attempts in a row, like 20")
    elif not 1 <= failures <= MAX_FAILURES:
        c.add(where, "failures", f"must be from 1 to {MAX_FAILURES}; got {failures}")
    probe = DEFAULT_PROBE
    try:
        probe = parse_duration(value.get("probe", DEFAULT_PROBE))
    except ValueError as exc:
        c.add(where, "probe", str(exc))
    else:
        if not MIN_PROBE <= probe <= MAX_PROBE:
            c.add(where, "probe", f"must be from 1s to 24h; got {format_duration(probe)}")
    if len(c.problems) != ok:
        return None
    return Breaker(failures=int(failures), probe=probe)
