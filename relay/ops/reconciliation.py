"""What `relay status` and the status page show of reconciliation: each source's last pass.

Read from the pass record and counters (relay.store.reconcile), written by whichever process ran
the pass. `note` is the one sentence both views print, and says plainly when the last pass
failed, of what kind (unexpected shape, 401, 429 storm, timeout, ...) and with what error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis

from relay.core.times import format_age
from relay.store import keys
from relay.store.reconcile import PassRecord, PassStats, record_of, stats_of
from relay.store.records import read_text

__all__ = ["ReconcileStatus", "collect_reconciliation"]


@dataclass(frozen=True)
class ReconcileStatus:
    """One reconciled source: its last pass and its counters."""

    name: str
    configured: bool  # has a `reconcile` table in routes.toml (False: seen only in Redis)
    record: PassRecord
    stats: PassStats

    @property
    def failed(self) -> bool:
        """Whether the last pass failed."""
        outcome = self.record.outcome
        return outcome is not None and not outcome.succeeded

    @property
    def missed_total(self) -> int:
        """Events synthesized since the first pass, all types."""
        return sum(self.stats.missed.values())

    def note(self, now: float) -> str:
        """One sentence for people: how the last pass went, and what failed if it did."""
        r = self.record
        if r.outcome is None or r.at <= 0:
            return f"{self.name}: no reconciliation pass yet"
        ago = format_age(now - r.at)
        if not self.failed:
            return (
                f"{self.name}: last pass {r.outcome.describe} {ago} ago, "
                f"{r.missed} missed event(s) synthesized"
            )
        success = f"last success {format_age(now - r.ok_at)} ago" if r.ok_at else "no success yet"
        return (
            f"{self.name}: last pass FAILED {ago} ago ({r.outcome.describe}): {r.error}. "
            f"{r.failures} failure(s) in a row, {success}; nothing was synthesized, and the "
            "pass is retried with backoff."
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        r = self.record
        return {
            "name": self.name,
            "configured": self.configured,
            "last_pass_at": r.at or None,
            "outcome": None if r.outcome is None else str(r.outcome),
            "failed": self.failed,
            "error": r.error or None,
            "failures": r.failures,
            "missed_last_pass": r.missed,
            "last_success_at": r.ok_at or None,
            "passes": {str(k): v for k, v in self.stats.passes.items()},
            "missed": dict(self.stats.missed),
        }


def _names_in_redis(conn: Redis) -> list[str]:
    """Sources that ever recorded a pass (one may have lost its `reconcile` table since)."""
    return sorted(read_text(n) for n in conn.smembers(keys.RECONCILED_SOURCES))


def collect_reconciliation(
    conn: Redis, configured: Sequence[str] = ()
) -> tuple[ReconcileStatus, ...]:
    """The configured reconciled sources in order, then any other with a pass record."""
    wanted = list(dict.fromkeys(configured))
    names = wanted + [n for n in _names_in_redis(conn) if n not in wanted]
    if not names:
        return ()
    with conn.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.reconcile_pass_key(name))
            pipe.hgetall(keys.reconcile_stats_key(name))
        rows = pipe.execute()
    return tuple(
        ReconcileStatus(name, name in wanted, record_of(rows[2 * i]), stats_of(rows[2 * i + 1]))
        for i, name in enumerate(names)
    )
