"""Gauges read from the store at scrape time: queue depth, dead letters, due and paused targets."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import redis
import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.core import constants
from relay.store import keys
from relay.store.breaker_metrics import breaker_gauges
from relay.store.breakers import BreakerState, read_breakers
from relay.store.control import ControlView, read_views
from relay.store.control_metrics import control_gauges
from relay.store.deliveries import due_counts
from relay.store.pauses import Pause, paused
from relay.store.queue import make_queue

log = structlog.get_logger("relay.metrics")


class RedisCollector(Collector):
    """Gauges read from Redis at scrape time: queue depth, dead letters, due and paused targets.

    `targets` names the configured targets, so that each has a `relay_target_paused` sample (0
    when running) before it ever had a delivery; without it, the targets Redis knows (those with
    a due set: every target that ever had a delivery) are reported.
    """

    def __init__(
        self,
        connection: Callable[[], redis.Redis],
        queue: str = constants.QUEUE_NAME,
        targets: Callable[[], Iterable[str]] | None = None,
    ):
        self._connection = connection
        self._queue = queue
        self._targets = targets

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
        up.add_metric([], 1)
        yield up

    def _read(self) -> _Reading:
        """Every figure of one scrape, in six pipelined round trips."""
        conn = self._connection()
        # Key names from RQ's own objects, not spelled out here: they are RQ's business.
        queue = make_queue(conn, self._queue)
        pipe = conn.pipeline(transaction=False)
        pipe.llen(queue.key)
        pipe.zcard(queue.scheduled_job_registry.key)
        pipe.zcard(queue.started_job_registry.key)
        pipe.zcard(queue.failed_job_registry.key)
        pipe.zcard(keys.DEAD)
        pipe.smembers(keys.DUE_TARGETS)
        queued, scheduled, started, failed, stored, members = pipe.execute()
        due_targets = sorted(n.decode() for n in members)
        due_now, due_later = due_counts(conn, due_targets, time.time())
        configured = tuple(self._targets()) if self._targets is not None else ()
        names = sorted(set(configured) | set(due_targets))
        pauses = paused(conn, names)
        breakers = read_breakers(conn, names)
        controls = read_views(conn, names, due_now, time.time())
        return _Reading(
            jobs={"queued": queued, "scheduled": scheduled, "started": started, "failed": failed},
            dead_letters=stored,
            due=tuple((t, due_now[t], due_later[t]) for t in due_targets),
            pauses=tuple((name, pauses.get(name)) for name in names),
            breakers=tuple((name, breakers.get(name)) for name in names),
            controls=tuple(sorted(controls.items())),
        )


@dataclass(frozen=True)
class _Reading:
    """What one scrape read from Redis."""

    jobs: Mapping[str, int]  # RQ jobs by state
    dead_letters: int
    due: tuple[tuple[str, int, int], ...]  # (target, due now, due later), targets with a due set
    pauses: tuple[tuple[str, Pause | None], ...]  # every target reported, paused or not
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
    )
