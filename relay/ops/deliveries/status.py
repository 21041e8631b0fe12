"""What `relay status` and the status page show: per-target and per-source figures, queue depth.

Read-only: RQ registries are read without their cleanup, and live figures come from the
targets' due sets (exact) rather than from RQ jobs, since one kick job carries many deliveries.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from redis import Redis
from rq import Queue
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.worker import Worker

from relay.core import constants
from relay.ops.deliveries.dead_letters import dead_count_by_target
from relay.ops.reconciliation import ReconcileStatus, collect_reconciliation
from relay.store import keys
from relay.store.breakers import BreakerState, read_breakers
from relay.store.control import ControlView, read_views
from relay.store.deliveries import due_counts
from relay.store.pauses import Pause, paused
from relay.store.queue import make_queue
from relay.store.records import SourceStat, TargetStat, read_int, read_text


@dataclass(frozen=True)
class TargetStatus:
    """Delivery figures of one target: live ones from RQ and Redis, counters since the start."""

    name: str
    configured: bool  # named in routes.toml (False: seen only in Redis)
    pending: int  # deliveries queued or in flight
    scheduled: int  # deliveries waiting for a scheduled retry
    dead_letters: int  # deliveries in the dead-letter store now
    delivered: int = 0
    dead: int = 0
    gone: int = 0
    attempts: int = 0
    failures: int = 0
    replayed: int = 0
    paused: Pause | None = None  # deliveries are held (relay pause, or a 410 with pause_on_gone)
    breaker: BreakerState | None = None  # its circuit breaker's record: open, or failures counted
    control: ControlView | None = None  # rate, concurrency, order in force, and what they hold

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping; `paused` is null or {reason, since (ISO), at, event_id};
        `breaker` is null (closed, no failure since a success) or BreakerState.to_view's."""
        return asdict(self) | {
            "paused": None if self.paused is None else self.paused.to_view(),
            "breaker": None if self.breaker is None else self.breaker.to_view(),
            "control": None if self.control is None else self.control.to_view(),
        }


@dataclass(frozen=True)
class SourceStatus:
    """Counters of one source since the start."""

    name: str
    received: int = 0
    duplicates: int = 0
    unrouted: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return asdict(self)


@dataclass(frozen=True)
class QueueStatus:
    """Job counts of the RQ queue and its registries."""

    name: str
    queued: int
    started: int
    scheduled: int
    failed: int
    deferred: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return asdict(self)


@dataclass(frozen=True)
class Status:
    """Everything `relay status` shows."""

    at: float
    queue: QueueStatus
    workers: int
    targets: tuple[TargetStatus, ...]
    sources: tuple[SourceStatus, ...]
    reconciled: tuple[ReconcileStatus, ...] = ()  # sources with a `reconcile` table

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (each target's as TargetStatus.to_json has it)."""
        return asdict(self) | {
            "targets": [t.to_json() for t in self.targets],
            "reconciled": [r.to_json() for r in self.reconciled],
        }


def _counters(conn: Redis, pattern_prefix: str) -> dict[str, dict[str, int]]:
    names = sorted(
        read_text(k)[len(pattern_prefix) :] for k in conn.scan_iter(match=f"{pattern_prefix}*")
    )
    with conn.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(pattern_prefix + name)
        rows = pipe.execute()
    return {
        name: {read_text(k): read_int(v) for k, v in row.items()}
        for name, row in zip(names, rows, strict=True)
    }


def _queue_status(queue: Queue) -> QueueStatus:
    """Job counts of the queue and its registries, read without RQ's cleanup."""
    scheduled = ScheduledJobRegistry(queue=queue)  # type: ignore[no-untyped-call]
    return QueueStatus(
        name=queue.name,
        queued=queue.count,
        started=StartedJobRegistry(queue=queue).get_job_count(cleanup=False),
        scheduled=scheduled.get_job_count(cleanup=False),
        failed=FailedJobRegistry(queue=queue).get_job_count(cleanup=False),
        deferred=DeferredJobRegistry(queue=queue).get_job_count(cleanup=False),
    )


def _target_statuses(conn: Redis, configured_targets: Sequence[str]) -> tuple[TargetStatus, ...]:
    """Every target routes.toml names, then every other one Redis has figures for."""
    # Pending = due now; scheduled = due later (a retry time, or an attempt in flight whose
    # lease ends later). Exact: read from the targets' due sets.
    due_targets = sorted(read_text(t) for t in conn.smembers(keys.DUE_TARGETS))
    now = time.time()
    pending, waiting = due_counts(conn, due_targets, now)
    dead_now = dead_count_by_target(conn)
    counters = _counters(conn, keys.target_stats_key(""))
    configured = list(dict.fromkeys(configured_targets))
    seen = set(counters) | set(pending) | set(waiting) | set(dead_now)
    names = configured + sorted(seen - set(configured))
    pauses = paused(conn, names)
    breakers = read_breakers(conn, names)
    controls = read_views(conn, names, pending, now)
    return tuple(
        TargetStatus(
            name=name,
            configured=name in configured,
            pending=pending[name],
            scheduled=waiting[name],
            dead_letters=dead_now[name],
            **{k: counters.get(name, {}).get(k, 0) for k in TargetStat},
            paused=pauses.get(name),
            breaker=breakers.get(name),
            control=controls.get(name),
        )
        for name in names
    )


def source_statuses(conn: Redis) -> tuple[SourceStatus, ...]:
    """Every source's counters since the start (those Redis has figures for), by name."""
    return tuple(
        SourceStatus(name=name, **{k: counters.get(k, 0) for k in SourceStat})
        for name, counters in _counters(conn, keys.source_stats_key("")).items()
    )


def collect_status(
    conn: Redis,
    configured_targets: Sequence[str] = (),
    queue_name: str = constants.QUEUE_NAME,
    reconciled: Sequence[str] = (),
) -> Status:
    """Per-target figures, per-source counters, queue depth, worker count and each reconciled
    source's last pass (`reconciled`: the configured ones), read-only."""
    queue = make_queue(conn, queue_name)
    queue_status = _queue_status(queue)
    targets = _target_statuses(conn, configured_targets)
    return Status(
        at=time.time(),
        queue=queue_status,
        workers=Worker.count(queue=queue),
        targets=targets,
        sources=source_statuses(conn),
        reconciled=collect_reconciliation(conn, reconciled),
    )
