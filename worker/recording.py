"""What follows a delivery attempt: the next step decided, recorded atomically, logged once.

`finalize` turns an attempt's result into the next step (worker.outcome), records it with its next
due time in one script (relay.store.deliveries: a stale duplicate is refused there), then counts it
in this process's metrics, pauses a `pause_on_gone` target that answered 410, logs the one
line of the attempt, and counts its result in the target's circuit breaker (worker.breaker).
`record_attempts` does the same for every attempt a kick saw finish in one tick, with one Redis
call for all their records (worker.jobs).
A delivery whose target has left routes.toml is dead-lettered here too.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import structlog

from relay.config.model import Target
from relay.store.deliveries import Record
from relay.store.records import AttemptRecord, DeliveryState, Event, Outcome, TargetStat
from worker.breaker import count_attempt, count_attempts
from worker.context import WorkerContext
from worker.outcome import AttemptResult, Step, next_step
from worker.pause import pause_target

log = structlog.get_logger("relay.worker")


@dataclass(frozen=True)
class Planned:
    """One delivery a job is about to attempt."""

    event: Event
    target: str
    attempt: int  # n + 1: counts every attempt ever made (webhook-id stays the same)
    round_attempt: int  # attempt number since the latest replay, checked against the budget


@dataclass(frozen=True)
class Finished:
    """A finished attempt and what follows it, ready to be recorded."""

    plan: Planned
    target: Target
    result: AttemptResult
    step: Step
    entry: AttemptRecord
    record: Record


def record_attempt(
    ctx: WorkerContext,
    plan: Planned,
    target: Target,
    future: concurrent.futures.Future[AttemptResult],
) -> None:
    """Record a finished attempt with its event id bound to every line logged meanwhile."""
    with _bound(plan):
        finalize(ctx, plan, target, result_of(future))


def record_attempts(
    ctx: WorkerContext,
    done: Sequence[tuple[Planned, Target, concurrent.futures.Future[AttemptResult]]],
) -> None:
    """Record attempts that finished together in one Redis call (relay.store.deliveries), then
    log, count and follow up each one as `finalize` does."""
    now = time.time()
    finished = []
    for plan, target, future in done:
        with _bound(plan):
            finished.append(decide(plan, target, result_of(future), now))
    applied = ctx.store.record_many([f.record for f in finished], now)
    for item, result in zip(finished, applied, strict=True):
        with _bound(item.plan):
            follow_up(ctx, item, result == 1, now, breaker=False)
    # Their breakers count them once per target, in order (worker.breaker).
    by_target: dict[str, list[Finished]] = {}
    for item in finished:
        if item.target.breaker is not None:
            by_target.setdefault(item.plan.target, []).append(item)
    for name, items in by_target.items():
        count_attempts(ctx, name, items[0].target, [i.result for i in items])


def _bound(plan: Planned) -> AbstractContextManager[None]:
    return structlog.contextvars.bound_contextvars(
        event_id=plan.event.id, source=plan.event.source, target=plan.target, attempt=plan.attempt
    )


def result_of(future: concurrent.futures.Future[AttemptResult]) -> AttemptResult:
    """The attempt's result; a crash in the attempt itself reads as a network error."""
    try:
        return future.result()
    except Exception as exc:  # a bug in the attempt itself: retried like a network error
        log.exception("delivery attempt crashed")
        return AttemptResult(started_at=time.time(), duration=0.0, error=f"internal error: {exc}")


def finalize(ctx: WorkerContext, plan: Planned, target: Target, result: AttemptResult) -> None:
    """Decide what follows an attempt, record it with its next due time, log one line."""
    now = time.time()
    item = decide(plan, target, result, now)
    follow_up(ctx, item, ctx.store.record(item.record, now) == 1, now)


def decide(plan: Planned, target: Target, result: AttemptResult, now: float) -> Finished:
    """What follows an attempt (worker.outcome), as the record to write."""
    step = next_step(result, target.retry, plan.round_attempt, now)
    entry = AttemptRecord(
        target=plan.target,
        attempt=plan.attempt,
        at=result.started_at,
        duration=result.duration,
        status=result.status,
        error=result.error or "",
        outcome=step.outcome,
        response=result.response,
        retry_in=step.delay,
    )
    record = Record(
        event_id=plan.event.id,
        target=plan.target,
        attempt=plan.attempt,
        state=step.state,
        reason=step.reason,
        entry=entry,
        counter=None if step.outcome is Outcome.RETRY else TargetStat(step.outcome),
        failed=step.outcome is not Outcome.DELIVERED,
        counts=True,
        due_at=None if step.delay is None else now + step.delay,
    )
    return Finished(plan, target, result, step, entry, record)


def follow_up(
    ctx: WorkerContext, item: Finished, applied: bool, now: float, *, breaker: bool = True
) -> None:
    """After the record: metrics, a `pause_on_gone` pause, the log line, the breaker's count
    (unless `breaker` is False: the caller counts a batch at once)."""
    plan, step = item.plan, item.step
    if applied:
        _observe(ctx, plan, item.result, step.outcome, now)
        if step.outcome is Outcome.GONE and item.target.pause_on_gone:
            _pause_on_gone(ctx, plan)
    _log_attempt(plan, item.result, step, item.entry, applied)
    # Even a stale duplicate's result is news of the target: its breaker counts it.
    if breaker:
        count_attempt(ctx, plan.target, item.target, item.result)


def _log_attempt(
    plan: Planned, result: AttemptResult, step: Step, entry: AttemptRecord, applied: bool
) -> None:
    """The one log line of a delivery attempt."""
    stored = entry.to_dict()
    fields: dict[str, Any] = {
        "event_id": plan.event.id,
        "source": plan.event.source,
        "type": plan.event.type,
        "target": plan.target,
        "attempt": plan.attempt,
        "status": result.status,
        "outcome": str(step.outcome) if applied else "stale",
        "duration_ms": stored["duration_ms"],
    }
    if result.error:
        fields["error"] = result.error
    if step.delay is not None:
        fields["retry_in_s"] = stored["retry_in_s"]
    if not applied:
        log.info("delivery attempt (outcome already recorded)", **fields)
    elif step.outcome is Outcome.GONE:
        log.error("target answered 410 Gone", **fields, reason=step.reason)
    elif step.outcome is Outcome.DEAD:
        log.warning("delivery dead-lettered", **fields, reason=step.reason)
    else:
        log.info("delivery attempt", **fields)


def _observe(
    ctx: WorkerContext, plan: Planned, result: AttemptResult, what: Outcome, now: float
) -> None:
    """Count one recorded attempt in this process's metrics (stale duplicates are not counted)."""
    if ctx.metrics is None:
        return
    since_receipt = now - plan.event.received_at if what is Outcome.DELIVERED else None
    ctx.metrics.observe_attempt(plan.target, what, result.duration, since_receipt)


def _pause_on_gone(ctx: WorkerContext, plan: Planned) -> None:
    """Pause a `pause_on_gone` target that answered 410, loudly."""
    reason = f"answered 410 Gone to event {plan.event.id} (pause_on_gone)"
    newly = pause_target(ctx.connection, plan.target, reason, plan.event.id)
    log.error(
        "target paused: answered 410 Gone" if newly else "paused target answered 410 Gone",
        event_id=plan.event.id,
        target=plan.target,
        effect="deliveries to it are held until an operator runs `relay resume`",
    )


def finish_missing_target(ctx: WorkerContext, plan: Planned) -> None:
    """A target removed from routes.toml since the event was routed: dead-letter it."""
    reason = f"target '{plan.target}' is no longer in routes.toml"
    record = Record(
        event_id=plan.event.id,
        target=plan.target,
        attempt=plan.attempt,
        state=DeliveryState.DEAD,
        reason=reason,
        entry=None,
        counter=TargetStat.DEAD,
        failed=False,
        counts=False,
    )
    if ctx.store.record(record, time.time()) == 1 and ctx.metrics is not None:
        ctx.metrics.dead_letters.labels(plan.target, Outcome.DEAD).inc()
    log.warning("delivery dead-lettered", event_id=plan.event.id, target=plan.target, reason=reason)
