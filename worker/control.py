"""A target's `rate` and `concurrency` as the claim enforces them (relay.store.control)."""

from __future__ import annotations

from relay.config.model import Target
from relay.store.control import NO_LIMITS, Limits


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
