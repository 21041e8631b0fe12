"""The status page's values and the pure summary: each target's health, the newest failures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from relay.core.states import Outcome
from relay.ops import deliveries as ops
from relay.store.attempts import AttemptRecord

#: The page reloads itself this often (seconds): fresh enough to watch, cheap for Redis.
REFRESH_SECONDS = 10
#: Attempts older than this say nothing about a target's health now (seconds).
HEALTH_WINDOW = 3600.0
#: A target's health is decided by at most its newest this many attempts in the window.
HEALTH_SAMPLE = 10
#: Rows of the "recent failures" table.
FAILURES_SHOWN = 20
#: A response or error longer than this is cut on the page (and in the JSON twin).
TEXT_MAX = 120

OK, DEGRADED, FAILING, IDLE = "ok", "degraded", "failing", "idle"
#: A paused target's deliveries are held whatever its recent attempts say: that comes first.
PAUSED = "paused"
#: Next: an open circuit breaker holds them too, but for one probe per interval.
BREAKER_OPEN = "breaker-open"


@dataclass(frozen=True)
class RecentAttempt:
    """One attempt record with the event it belongs to."""

    event_id: str
    attempt: AttemptRecord

    @property
    def failed(self) -> bool:
        """Whether the attempt did not deliver (by its outcome, else by its HTTP status)."""
        if self.attempt.outcome:
            return self.attempt.outcome != Outcome.DELIVERED
        status = self.attempt.status
        return status is None or not 200 <= status < 300


@dataclass(frozen=True)
class TargetRow:
    """One target's figures from `relay status` plus its health from recent attempts."""

    figures: ops.TargetStatus
    health: str  # paused | breaker-open | ok | degraded | failing | idle
    recent_attempts: int  # attempts that decided the health
    recent_failures: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping: the ops figures and the health."""
        return self.figures.to_json() | {
            "health": self.health,
            "recent_attempts": self.recent_attempts,
            "recent_failures": self.recent_failures,
        }


@dataclass(frozen=True)
class Failure:
    """One failed attempt as the page lists it."""

    at: float | None
    event_id: str
    target: str
    attempt: int
    status: int | None
    error: str
    outcome: str
    response: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return asdict(self)


@dataclass(frozen=True)
class StatusPage:
    """Everything the status page shows (and `/status.json` returns)."""

    status: ops.Status
    targets: tuple[TargetRow, ...]
    failures: tuple[Failure, ...]
    dead_letters: tuple[ops.DeadLetter, ...]  # the newest few

    @property
    def dead_letters_total(self) -> int:
        """Deliveries in the dead-letter store now, all targets."""
        return sum(t.dead_letters for t in self.status.targets)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping of exactly the figures the HTML shows."""
        s = self.status
        return {
            "generated_at": s.at,
            "refresh_seconds": REFRESH_SECONDS,
            "queue": s.queue.to_json(),
            "workers": s.workers,
            "targets": [t.to_json() for t in self.targets],
            "sources": [src.to_json() for src in s.sources],
            "reconciled": [r.to_json() for r in s.reconciled],
            "recent_failures": [f.to_json() for f in self.failures],
            "dead_letters": {
                "total": self.dead_letters_total,
                "newest": [d.to_json() for d in self.dead_letters],
            },
        }


def health_of(attempts: Sequence[RecentAttempt]) -> str:
    """ok when all delivered, failing when none did, degraded in between, idle without any."""
    if not attempts:
        return IDLE
    failed = sum(a.failed for a in attempts)
    if failed == 0:
        return OK
    return FAILING if failed == len(attempts) else DEGRADED


def cut(text: str) -> str:
    """`text` on one line, cut to TEXT_MAX characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= TEXT_MAX else text[: TEXT_MAX - 1] + "…"


def _newest_first(attempts: Sequence[RecentAttempt]) -> list[RecentAttempt]:
    # Records without a time sort last: they cannot be placed, and are rare (older workers).
    return sorted(attempts, key=lambda a: a.attempt.at or 0.0, reverse=True)


def _target_row(
    figures: ops.TargetStatus, ordered: Sequence[RecentAttempt], now: float
) -> TargetRow:
    sample = [
        a
        for a in ordered
        if a.attempt.target == figures.name
        and a.attempt.at is not None
        and now - a.attempt.at <= HEALTH_WINDOW
    ][:HEALTH_SAMPLE]
    return TargetRow(
        figures=figures,
        health=_held(figures) or health_of(sample),
        recent_attempts=len(sample),
        recent_failures=sum(a.failed for a in sample),
    )


def _held(figures: ops.TargetStatus) -> str | None:
    """PAUSED or BREAKER_OPEN when the target's deliveries are held, whatever its attempts say."""
    if figures.paused is not None:
        return PAUSED
    if figures.breaker is not None and figures.breaker.is_open:
        return BREAKER_OPEN
    return None


def _failure(recent: RecentAttempt) -> Failure:
    a = recent.attempt
    return Failure(
        at=a.at,
        event_id=recent.event_id,
        target=a.target,
        attempt=a.attempt,
        status=a.status,
        error=cut(a.error),
        outcome=a.outcome,
        response=cut(a.response),
    )


def summarize(
    status: ops.Status,
    recent: Sequence[RecentAttempt],
    dead_letters: Sequence[ops.DeadLetter],
    now: float,
) -> StatusPage:
    """The page's values: each target's health (paused, else breaker-open, else from its
    newest attempts), and the newest failures."""
    ordered = _newest_first(recent)
    failures = [_failure(a) for a in ordered if a.failed][:FAILURES_SHOWN]
    return StatusPage(
        status=status,
        targets=tuple(_target_row(figures, ordered, now) for figures in status.targets),
        failures=tuple(failures),
        dead_letters=tuple(dead_letters),
    )
