"""`relay worker --check`: exit 0 when the delivery side is healthy, else 1 with the reason.

Healthy means: routes.toml validates, Redis answers, and at least one worker listening on the
relay queue has sent a heartbeat recently. A relay worker heartbeats before every blocking
dequeue (at least once per maintenance interval) and after every job, and a relay job holds it
at most HEARTBEAT_TTL seconds, so a longer silence means the worker is dead or stuck. Like
arq's `--check`, it is meant for container health checks and cron probes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError
from rq import Worker
from rq.scheduler import RQScheduler

from relay.config.loading import load_routes
from relay.config.settings import Settings
from relay.core.errors import ConfigError
from relay.store.clients import OPERATOR, sync_client
from relay.store.queue import make_queue

#: Seconds a heartbeat may be late beyond the maintenance interval and the longest job.
SLACK = 5


@dataclass(frozen=True)
class Beat:
    """One registered worker and how long ago it last sent a heartbeat."""

    name: str
    age: float | None  # seconds; None when it never sent one


@dataclass(frozen=True)
class Health:
    """The verdict of a check and the lines explaining it."""

    ok: bool
    lines: tuple[str, ...]


def max_heartbeat_age(maintenance_interval: int, longest_job: int) -> float:
    """Oldest heartbeat of a live worker: one idle dequeue plus one job plus some slack."""
    return float(maintenance_interval + longest_job + SLACK)


def heartbeats(conn: Redis, now: float) -> list[Beat]:
    """Every worker registered on the relay queue, with its heartbeat age."""
    beats = []
    for worker in Worker.all(queue=make_queue(conn)):
        last = worker.last_heartbeat
        age = None if last is None else max(0.0, now - last.timestamp())
        beats.append(Beat(worker.name, age))
    return beats


def judge(beats: list[Beat], max_age: float) -> Health:
    """Whether one worker is alive, in words (pure: the tests feed it made-up beats)."""
    alive = [b for b in beats if b.age is not None and b.age <= max_age]
    if alive:
        newest = min(b.age for b in alive if b.age is not None)
        return Health(
            True,
            (f"{len(alive)} worker(s) heartbeating on the relay queue (newest {newest:.1f}s ago)",),
        )
    if not beats:
        return Health(False, ("no worker is registered on the relay queue",))
    ages = [b.age for b in beats if b.age is not None]
    newest_text = f"newest heartbeat {min(ages):.0f}s ago" if ages else "no heartbeat ever"
    return Health(
        False,
        (
            f"no worker has sent a heartbeat within {max_age:.0f}s "
            f"({len(beats)} registered, {newest_text})",
        ),
    )


def check(
    settings: Settings,
    env: Mapping[str, str],
    max_age: float,
) -> Health:
    """Routes, Redis, then workers; stop at the first failure (later ones would only echo it)."""
    try:
        routes = load_routes(settings.routes_path, env)
    except ConfigError as exc:
        problems = tuple(f"  {p}" for p in exc.problems)
        return Health(False, (f"{settings.routes_path} does not validate:", *problems))
    lines = [f"routes: {len(routes.targets)} target(s), {len(routes.routes)} route(s)"]
    try:
        with sync_client(settings.redis_url, OPERATOR) as conn:
            conn.ping()
            lines.append("Redis answers PING")
            verdict = judge(heartbeats(conn, time.time()), max_age)
            scheduler = conn.exists(RQScheduler.get_locking_key(make_queue(conn).name))
    except RedisError as exc:
        return Health(False, (*lines, f"cannot reach Redis at REDIS_URL: {exc}"))
    lines.extend(verdict.lines)
    if verdict.ok and not scheduler:
        # Not fatal: a surviving worker takes the scheduler over at its next maintenance pass.
        lines.append("note: no scheduler holds the lock right now (retries wait until one does)")
    return Health(verdict.ok, tuple(lines))
