"""The circuit breaker in the worker: what a claim may take, and what each attempt tells it.

A target with `breaker = {...}` (relay.config.breaker) has its attempts' results counted in Redis
across every worker (relay.store.breakers). Once it opens, a claim takes nothing from the target
but one probe delivery per interval (worker.jobs.claim): the others stay in the due set with
their due times and attempts untouched, exactly like a paused target's, and are claimed again as
soon as a success closes the breaker; the close makes those still waiting for a retry time due at
once (relay.store.breakers), so the backlog drains at the workers' pace. No command is needed.

A probe is an ordinary attempt of the delivery it takes: it is logged and recorded, and a failed
one uses an attempt of that delivery, with its backoff, like any failed attempt. Probes take the
delivery due the longest, and a failed probe is due again only after its backoff, so a backlog
spreads them over its deliveries; a lone held delivery gets no more attempts than it would have
without a breaker (docs/delivery-control.md says why this was chosen over free probes).

Opening and closing are logged once each (by the worker whose attempt did it) and counted.
A paused target is not claimed at all, open breaker or not: pause wins.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import redis
import structlog

from relay.config.model import RouteTable, Target
from relay.core.units import format_duration
from relay.store.breakers import (
    Breakers,
    Gate,
    Recorded,
    Transition,
    describe_breaker,
    forget_breakers,
    held,
)
from worker.context import WorkerContext
from worker.outcome import AttemptResult, describe, is_success

log = structlog.get_logger("relay.worker")


@functools.lru_cache(maxsize=8)
def _breakers(conn: redis.Redis) -> Breakers:
    """The scripts registered once per connection (a process has one or two)."""
    return Breakers(conn)


def _with_breaker(routes: RouteTable, names: Iterable[str]) -> list[tuple[str, Target]]:
    found = []
    for name in names:
        target = routes.targets.get(name)
        if target is not None and target.breaker is not None:
            found.append((name, target))
    return found


@dataclass(frozen=True)
class ClaimGates:
    """What the breakers of one claim's due targets let it take (targets without one are not
    in `gates`); PROBE gates are probes this claim took, under `token`."""

    conn: redis.Redis
    gates: Mapping[str, Gate]
    token: str

    def limit(self, name: str, limit: int) -> int:
        """`limit` cut to what the target's breaker lets through (0 while it holds everything)."""
        gate = self.gates.get(name)
        cap = None if gate is None else gate.limit
        return limit if cap is None else min(limit, cap)

    def release_unused(self, taken: Mapping[str, Sequence[str]]) -> None:
        """Give back the probes of targets the claim found nothing due for, so the next claim
        may probe at once rather than an interval later."""
        unused = [n for n, g in self.gates.items() if g is Gate.PROBE and not taken.get(n)]
        if unused:
            _breakers(self.conn).release(unused, self.token)


def claim_gates(ctx: WorkerContext, names: Iterable[str]) -> ClaimGates:
    """The gates of these due targets' breakers; no round trip when none has a breaker."""
    wanted = [
        (name, target.breaker.probe_interval(target.timeout))
        for name, target in _with_breaker(ctx.routes, names)
        if target.breaker is not None
    ]
    token = f"{os.getpid()}:{uuid.uuid4().hex}"
    gates = _breakers(ctx.connection).gate(wanted, token) if wanted else {}
    return ClaimGates(ctx.connection, gates, token)


def held_targets(ctx: WorkerContext, names: Iterable[str]) -> set[str]:
    """Of these targets, those whose open breaker holds everything until its next probe."""
    return held(ctx.connection, [name for name, _ in _with_breaker(ctx.routes, names)])


def count_attempt(ctx: WorkerContext, name: str, target: Target, result: AttemptResult) -> None:
    """Count one attempt's result in the target's breaker; log and count an opening or closing."""
    count_attempts(ctx, name, target, [result])


def count_attempts(
    ctx: WorkerContext, name: str, target: Target, results: Sequence[AttemptResult]
) -> None:
    """Count attempts' results in the target's breaker, in order, in one Redis call; log and
    count each opening or closing."""
    breaker = target.breaker
    if breaker is None or not results:
        return
    every = breaker.probe_interval(target.timeout)
    counted = _breakers(ctx.connection).record_many(
        name,
        [(not is_success(r.status), "" if is_success(r.status) else describe(r)) for r in results],
        breaker.failures,
        every,
    )
    for result, recorded in zip(results, counted, strict=True):
        _report(ctx, name, format_duration(every), result, recorded)


def _report(
    ctx: WorkerContext, name: str, every: str, result: AttemptResult, recorded: Recorded
) -> None:
    """Log and count what one result did to the breaker (nothing unless it opened or closed)."""
    if recorded.transition is Transition.OPENED:
        log.error(
            "circuit breaker opened",
            target=name,
            failures=recorded.failures,
            last=describe(result),
            probe_every=every,
            effect=f"deliveries held, attempts untouched; one probe every {every} until one "
            "succeeds",
        )
        if ctx.metrics is not None:
            ctx.metrics.breaker_opens.labels(name).inc()
    elif recorded.transition is Transition.CLOSED:
        open_for = None if recorded.opened_at is None else time.time() - recorded.opened_at
        log.warning(
            "circuit breaker closed",
            target=name,
            status=result.status,
            open_for_s=None if open_for is None else round(max(0.0, open_for), 3),
            failures=recorded.failures,
            made_due=recorded.released,
            effect="held deliveries go out again, those waiting for a retry time at once",
        )
        if ctx.metrics is not None:
            ctx.metrics.breaker_closes.labels(name).inc()


def close_removed_breakers(conn: redis.Redis, routes: RouteTable, now: float) -> int:
    """Drop the breaker records of targets that no longer have a breaker in routes.toml (an open
    one would be shown open for ever, and alerted on); how many were open."""
    keep = {name for name, _ in _with_breaker(routes, routes.targets)}
    closed = 0
    for state in forget_breakers(conn, keep):
        if state.is_open:
            closed += 1
            log.warning(
                "circuit breaker closed",
                target=state.target,
                reason="no breaker for this target in routes.toml any more",
                was=describe_breaker(state, now),
            )
    return closed
