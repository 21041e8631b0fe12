"""A target's `rate`, `concurrency` and `order` as the workers enforce them (relay.store.control):
the limits each claim passes to Redis, and the settings published for status, page and metrics."""

from __future__ import annotations

import structlog
from redis import Redis
from redis.exceptions import RedisError

from relay.config.model import RouteTable, Target
from relay.store.control import NO_LIMITS, ControlSettings, Limits, publish_settings

log = structlog.get_logger("relay.worker")


def limits_of(target: Target | None) -> Limits:
    """What a claim enforces for a target (NO_LIMITS without a rate or concurrency, or for a
    target no longer in routes.toml)."""
    if target is None or (target.rate is None and target.concurrency is None):
        return NO_LIMITS
    rate = target.rate
    return Limits(
        interval=rate.interval if rate is not None else 0.0,
        tolerance=rate.tolerance if rate is not None else 0.0,
        concurrency=target.concurrency or 0,
    )


def settings_of(target: Target) -> ControlSettings | None:
    """A target's settings as published, or None when it has none of them."""
    if target.rate is None and target.concurrency is None and target.order is None:
        return None
    limits = limits_of(target)
    return ControlSettings(
        rate=target.rate.text if target.rate is not None else None,
        interval=limits.interval,
        tolerance=limits.tolerance,
        concurrency=target.concurrency,
        order=target.order.text if target.order is not None else None,
    )


def publish_controls(conn: Redis, routes: RouteTable) -> bool:
    """Publish the settings of `routes` (at start and on every reload); False when Redis did
    not answer: the limits hold all the same, only status and metrics lack them until next."""
    found = {name: settings_of(t) for name, t in routes.targets.items()}
    settings = {name: s for name, s in found.items() if s is not None}
    try:
        publish_settings(conn, settings)
    except (RedisError, OSError) as exc:
        log.warning("delivery control settings not published", error=type(exc).__name__)
        return False
    return True
