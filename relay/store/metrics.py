"""Gauges read from the store at scrape time: queue depth, dead letters, due and paused targets,
the oldest due delivery, live workers, and reconciliation (relay.store.reconcile_metrics)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import redis
import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from relay.core import constants
from relay.store import keys
from relay.store.breaker_metrics import breaker_gauges
from relay.store.breakers import BreakerState, read_breakers
from relay.store.control import ControlView, read_views
from relay.store.control_metrics import control_gauges
from relay.store.deliveries import due_counts
from relay.store.pauses import Pause, paused
from relay.store.queue import make_queue
from relay.store.reconcile import record_of, stats_of
from relay.store.reconcile_metrics import ReconciledSource, reconcile_families

log = structlog.get_logger("relay.metrics")


class RedisCollector(Collector):
    """Gauges read from Redis at scrape time: queue depth, dead letters, due and paused targets.

    `targets` names the configured targets, so that each has a `relay_target_paused` sample (0
    when running) before it ever had a delivery; without it, the targets Redis knows (those with
    a due set: every target that ever had a delivery) are reported. `reconciled` names the
    sources with a `reconcile` table and their `every` (seconds).
    """

    def __init__(
        self,
        connection: Callable[[], redis.Redis],
        queue: str = constants.QUEUE_NAME,
        targets: Callable[[], Iterable[str]] | None = None,
        reconciled: Callable[[], Iterable[tuple[str, float]]] | None = None,
    ):
        self._connection = connection
        self._queue = queue
        self._targets = targets
        self._reconciled = reconciled

    def collect(self) -> Iterable[Metric]:
        """The gauges, or only `relay_redis_up` 0 when Redis did not answer."""
        up = GaugeMetricFamily("relay_redis_up", "1 when Redis answered the scrape's queries.")
        try:
            reading = self._read()
        except (redis.RedisError, OSError) as exc:
            log.warning("metrics_redis_unavailable", error=type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        yield from _gauges(reading)
        yield from reconcile_families(reading.reconciled)
        up.add_metric([], 1)
        yield up

    def _read(self) -> _Reading:
        """Every figure of one scrape, in seven pipelined round trips."""
        conn = self._connection()
        now = time.time()
        # Key names from RQ's own objects, not spelled out here: they are RQ's business.
        queue = make_queue(conn, self._queue)
        pipe = conn.pipeline(transaction=False)
        pipe.llen(queue.key)
        pipe.zcard(queue.scheduled_job_registry.key)
        pipe.zcard(queue.started_job_registry.key)
        pipe.zcard(queue.failed_job_registry.key)
        pipe.zcard(keys.DEAD)
        pipe.smembers(keys.DUE_TARGETS)
        pipe.smembers(WORKERS_BY_QUEUE_KEY % queue.name)
        queued, scheduled, started, failed, stored, members, workers = pipe.execute()
        due_targets = sorted(n.decode() for n in members)
        due_now, due_later = due_counts(conn, due_targets, now)
        configured = tuple(self._targets()) if self._targets is not None else ()
        names = sorted(set(configured) | set(due_targets))
        pauses = paused(conn, names)
        breakers = read_breakers(conn, names)
        controls = read_views(conn, names, due_now, time.time())
        sources = tuple(self._reconciled()) if self._reconciled is not None else ()
        oldest, alive, reconciled = _second_read(conn, due_targets, list(workers), sources, now)
        return _Reading(
            jobs={"queued": queued, "scheduled": scheduled, "started": started, "failed": failed},
            dead_letters=stored,
            due=tuple((t, due_now[t], due_later[t]) for t in due_targets),
            pauses=tuple((name, pauses.get(name)) for name in names),
            breakers=tuple((name, breakers.get(name)) for name in names),
            controls=tuple(sorted(controls.items())),
            oldest_due=oldest,
            workers_alive=alive,
            reconciled=reconciled,
        )


def _second_read(
    conn: redis.Redis,
    due_targets: Sequence[str],
    workers: Sequence[bytes],
    sources: Sequence[tuple[str, float]],
    now: float,
) -> tuple[tuple[tuple[str, float], ...], int, tuple[ReconciledSource, ...]]:
    """(age of each target's oldest due delivery, live workers, reconciled sources): one round
    trip of O(log N) and O(1) commands, whatever the backlog."""
    pipe = conn.pipeline(transaction=False)
    for target in due_targets:
        pipe.zrangebyscore(keys.due_key(target), "-inf", now, start=0, num=1, withscores=True)
    for worker in workers:
        # A worker's key expires a minute after its last heartbeat; the registry set keeps a
        # dead worker's name until another worker's maintenance cleans it.
        pipe.exists(worker)
    for name, _ in sources:
        pipe.hgetall(keys.reconcile_pass_key(name))
        pipe.hgetall(keys.reconcile_stats_key(name))
    replies = pipe.execute()
    firsts, rest = replies[: len(due_targets)], replies[len(due_targets) :]
    oldest = tuple(
        (target, max(0.0, now - first[0][1]) if first else 0.0)
        for target, first in zip(due_targets, firsts, strict=True)
    )
    alive = sum(bool(r) for r in rest[: len(workers)])
    rows = rest[len(workers) :]
    reconciled = tuple(
        ReconciledSource(name, every, record_of(rows[2 * i]), stats_of(rows[2 * i + 1]))
        for i, (name, every) in enumerate(sources)
    )
    return oldest, alive, reconciled


@dataclass(frozen=True)
class _Reading:
    """What one scrape read from Redis."""

    jobs: Mapping[str, int]  # RQ jobs by state
    dead_letters: int
    due: tuple[tuple[str, int, int], ...]  # (target, due now, due later), targets with a due set
    pauses: tuple[tuple[str, Pause | None], ...]  # every target reported, paused or not
    oldest_due: tuple[tuple[str, float], ...]  # (target, age in seconds of its oldest due now)
    workers_alive: int
    reconciled: tuple[ReconciledSource, ...]
    breakers: tuple[tuple[str, BreakerState | None], ...] = ()  # the same targets' breakers
    controls: tuple[tuple[str, ControlView], ...] = ()  # targets with a rate, concurrency, order


def _gauges(reading: _Reading) -> Iterable[Metric]:
    """The gauges of one reading (all but relay_redis_up)."""
    depth = GaugeMetricFamily(
        "relay_queue_jobs",
        "RQ jobs of the relay queue by state (queued, scheduled, started, failed).",
        labels=["state"],
    )
    for state, value in reading.jobs.items():
        depth.add_metric([state], float(value))
    dead = GaugeMetricFamily(
        "relay_dead_letters_stored", "Deliveries currently in the dead-letter store."
    )
    dead.add_metric([], float(reading.dead_letters))
    due = GaugeMetricFamily(
        "relay_deliveries_due",
        "Open deliveries by target: due now (waiting for a worker), or later (waiting for a"
        " retry time, or in flight until their lease ends).",
        labels=["target", "when"],
    )
    for target, now, later in reading.due:
        due.add_metric([target, "now"], float(now))
        due.add_metric([target, "later"], float(later))
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
    for name, pause in reading.pauses:
        held.add_metric([name], 0.0 if pause is None else 1.0)
        if pause is not None and pause.since is not None:
            held_since.add_metric([name], pause.since)
    return (
        depth,
        dead,
        due,
        held,
        held_since,
        *breaker_gauges(reading.breakers),
        *control_gauges(reading.controls),
        *_health_gauges(reading),
    )


def _health_gauges(reading: _Reading) -> tuple[Metric, ...]:
    """What the alert rules watch beside the figures above: waiting deliveries and workers."""
    oldest = GaugeMetricFamily(
        "relay_oldest_due_delivery_age_seconds",
        "Seconds the target's oldest delivery due now has been waiting for a worker (0: none).",
        labels=["target"],
    )
    for target, age in reading.oldest_due:
        oldest.add_metric([target], age)
    workers = GaugeMetricFamily(
        "relay_workers_alive",
        "RQ workers of the relay queue whose heartbeat key is alive (it expires about a minute "
        "after the last heartbeat).",
    )
    workers.add_metric([], float(reading.workers_alive))
    return (oldest, workers)
