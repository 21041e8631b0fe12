"""The RQ job: `deliver_due()`, a kick that takes every delivery due now and delivers it.

Deliveries wait in per-target due sets (relay.store.keys.due_key): a fresh event is due at once, a
failed attempt is due again at its retry time, a replay is due at once. A kick claims what is
due (relay.store.deliveries: each claimed delivery's score moves to the end of its lease, so no
other worker takes it, and it becomes due again if this one dies) and starts all of it at once on
the background loop (worker.runtime). Every CLAIM_TICK it records what finished and claims again, so
what becomes due goes out without waiting for the slowest attempt under way; an attempt that
outlives INLINE_BUDGET is left to record its own outcome when it ends. The job loops while anything
is due or in flight, up to LOOP_BUDGET, so kicks coalesce under load.

Claims are bounded per target by free in-flight slots: a hanging target holds at most its own
slots and costs no RQ job per delivery; targets that recently outlived the inline wait are not
waited for at all. A paused target (relay.store.pauses) is not claimed: its deliveries stay due,
with their attempt budget untouched, until `relay resume`. A target whose circuit breaker is
open (worker.breaker) is held the same way, but for one probe delivery per probe interval.

A target's `rate` and `concurrency` (relay.store.control) are enforced by the claim itself, in
Redis, across all workers: what they hold stays due and uses no attempt. A kick whose only due
work is held by a rate sleeps until the rate allows a start (at most RATE_NAP, else the poller
kicks then): it never spins. FIFO per key needs nothing here: only heads are ever due.

Recording what an attempt came to is worker.recording's: every attempt that finished in one tick
is recorded in one Redis call. Every state change is checked against
the attempt counter (relay.store.deliveries), so a delivery attempted twice (a lease that ended
while a slow attempt was still running) is harmless: at-least-once.
"""

from __future__ import annotations

import concurrent.futures
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog

from relay.config.model import Target
from relay.store.deliveries import (
    LEASE_MARGIN,
    Claimed,
    Wanted,
    drop_due,
    due_again,
    duplicates,
    load_events,
    mark_duplicate,
)
from relay.store.pauses import paused
from relay.store.queue import kick
from worker.breaker import claim_gates, held_targets
from worker.context import WorkerContext, current
from worker.control import limits_of
from worker.fellow.enrich import lease_allowance, wanted_kind
from worker.outbound import build_request
from worker.outcome import AttemptResult
from worker.recording import Planned, finish_missing_target, record_attempt, record_attempts
from worker.runtime import Runtime, get_runtime

log = structlog.get_logger("relay.worker")

#: How long a job waits for its deliveries before leaving the slow ones in flight (seconds).
INLINE_BUDGET = 1.0
#: A kick keeps claiming while work is due, for at most this long, then hands over to a new kick.
LOOP_BUDGET = 5.0
#: While attempts are in flight, a kick records what finished and claims again this often.
CLAIM_TICK = 0.05
#: Most deliveries one claim takes per target (and in all); more are left for the next loop.
CLAIM_PER_TARGET = 128
CLAIM_TOTAL = 256
#: Lease of a delivery to a target no longer in routes.toml (it is dead-lettered at once).
UNKNOWN_TARGET_LEASE = 60.0
#: A claimed delivery that finds no free slot after all is due again this much later.
DEFER_DELAY = 1.0
#: Longest a kick sleeps for a rate to allow the next start; longer waits are left to the due
#: poller (worker.poller.POLL_INTERVAL), whose lateness the rate's tolerance makes up for.
RATE_NAP = 0.5


@dataclass(frozen=True)
class Started:
    """A delivery attempt under way on the background loop."""

    plan: Planned
    target: Target
    future: concurrent.futures.Future[AttemptResult]


def deliver_due() -> None:
    """Claim and deliver everything due now, looping while more is due (up to LOOP_BUDGET).

    The next claim does not wait for the slowest attempt of the last one: every CLAIM_TICK the
    kick records what finished and claims again, so a target that hangs (until its attempts
    outlive INLINE_BUDGET and are left to finish in the background) delays nobody else.
    """
    ctx = current()
    runtime = get_runtime()
    deadline = time.monotonic() + LOOP_BUDGET
    in_flight = InFlight(ctx, runtime)
    while True:
        claimed = claim_due(ctx, runtime)
        if claimed.ids:
            in_flight.add(start_claimed(ctx, pairs(claimed)))
            if time.monotonic() > deadline:
                in_flight.finish()
                # More may be due: hand over to a fresh kick rather than hold this worker forever.
                kick(ctx.queue)
                return
        elif not in_flight:
            nap = claimed.rate_wait()
            if nap is None or nap > RATE_NAP:
                return  # nothing due, or not before the poller looks again
            if time.monotonic() + nap > deadline:
                kick(ctx.queue)  # held by a rate only: a fresh kick goes on after the nap
                return
            time.sleep(nap)
            continue
        in_flight.wait(CLAIM_TICK)


def claim(ctx: WorkerContext, runtime: Runtime) -> list[tuple[str, str]]:
    """Claim deliveries due now across every target with free slots: (event id, target)."""
    return pairs(claim_due(ctx, runtime))


def pairs(claimed: Claimed) -> list[tuple[str, str]]:
    """(event id, target) of every delivery a claim took."""
    return [(event_id, target) for target, ids in claimed.ids.items() for event_id in ids]


def claim_due(ctx: WorkerContext, runtime: Runtime) -> Claimed:
    """Claim deliveries due now across every target with free slots, within their limits."""
    now = time.time()
    names = ctx.store.due_targets()
    holds = paused(ctx.connection, names)
    # An open breaker lets one probe through per interval, or nothing (worker.breaker).
    gates = claim_gates(ctx, [n for n in names if n not in holds])
    # Start at a random target each time: with more due than one claim takes, none starves.
    shift = random.randrange(len(names)) if names else 0
    wanted: list[Wanted] = []
    for name in names[shift:] + names[:shift]:
        if name in holds:
            continue
        target = ctx.routes.targets.get(name)
        if target is None:  # removed from routes.toml: taken to be dead-lettered
            wanted.append(Wanted(name, CLAIM_PER_TARGET, now + UNKNOWN_TARGET_LEASE))
            continue
        limit = gates.limit(name, min(CLAIM_PER_TARGET, runtime.free_slots(name)))
        if limit > 0:
            lease_end = now + target.timeout + lease_allowance(ctx.routes, target) + LEASE_MARGIN
            track = target.breaker is not None  # its closing tells leases from retries
            wanted.append(Wanted(name, limit, lease_end, limits_of(target), track))
    claimed = ctx.store.claim(wanted, CLAIM_TOTAL, now)
    gates.release_unused(claimed.ids)
    return claimed


def anything_due(ctx: WorkerContext, runtime: Runtime) -> bool:
    """Whether this process could claim something now (due, not paused, not held by an open
    breaker until its next probe, slots free)."""
    names = ctx.store.due_targets()
    holds = paused(ctx.connection, names).keys() | held_targets(ctx, names)
    targets = ctx.routes.targets
    open_targets = [
        (n, limits_of(targets.get(n)))
        for n in names
        if n not in holds and (n not in targets or runtime.free_slots(n))
    ]
    return ctx.store.anything_due(open_targets, time.time())


def run_claimed(ctx: WorkerContext, claimed: list[tuple[str, str]]) -> None:
    """Attempt claimed deliveries and wait for them (each up to INLINE_BUDGET)."""
    in_flight = InFlight(ctx, get_runtime())
    in_flight.add(start_claimed(ctx, claimed))
    in_flight.finish()


def start_claimed(ctx: WorkerContext, claimed: list[tuple[str, str]]) -> list[Started]:
    """Turn claimed deliveries into attempts under way; drop those with nothing left to do."""
    event_ids = list(dict.fromkeys(event_id for event_id, _ in claimed))
    stored = load_events(ctx.connection, event_ids)
    dups = duplicates(ctx.connection, [s.event for s in stored.values() if s is not None])
    plans: list[Planned] = []
    finished: list[tuple[str, str]] = []
    marked: set[str] = set()
    for event_id, target in claimed:
        se = stored.get(event_id)
        if se is None:
            log.warning("event not found (expired or deleted)", event_id=event_id, target=target)
            finished.append((event_id, target))
            continue
        if event_id in dups:
            if event_id not in marked:
                marked.add(event_id)
                mark_duplicate(ctx.connection, se.event, ctx.settings.retention)
                log.info("inbound duplicate skipped", event_id=event_id, source=se.event.source)
            continue
        state = se.deliveries.get(target)
        if state is None or state.done:
            finished.append((event_id, target))
            continue
        plans.append(Planned(se.event, target, state.attempts + 1, state.round_attempts + 1))
    if finished:
        drop_due(ctx.connection, finished)
    return start_plans(ctx, plans)


def start_plans(ctx: WorkerContext, plans: list[Planned]) -> list[Started]:
    """Start every planned delivery on the background loop (those a slot is free for)."""
    if not plans:
        return []
    runtime = get_runtime()
    started: list[Started] = []
    deferred: list[tuple[str, str]] = []
    for plan in plans:
        target = ctx.routes.targets.get(plan.target)
        if target is None:
            finish_missing_target(ctx, plan)
            continue
        # The attempt's task copies this context: whatever it logs carries its event id.
        with structlog.contextvars.bound_contextvars(
            event_id=plan.event.id, target=plan.target, attempt=plan.attempt
        ):
            future = runtime.submit(attempt_of(ctx, runtime, plan, target), 0.0, plan.target)
        if future is None:  # the claim raced another job of this process for the slots
            deferred.append((plan.event.id, plan.target))
            continue
        started.append(Started(plan, target, future))
    if deferred:
        due_again(ctx.connection, deferred, time.time() + DEFER_DELAY)
    return started


def attempt_of(
    ctx: WorkerContext, runtime: Runtime, plan: Planned, target: Target
) -> Coroutine[Any, Any, AttemptResult]:
    """One attempt, to run on the background loop: the POST, or for a Fellow completion to an
    enriching target, its record first (fetched once per event, worker.fellow.enrich)."""
    if wanted_kind(plan.event, target) is not None:
        return runtime.enricher.attempt(ctx, plan.event, target, plan.attempt, runtime.post)
    request = build_request(plan.event, target, plan.attempt, int(time.time()))
    return runtime.post(request, target.timeout)


class InFlight:
    """The attempts a kick waits for: recorded as they finish, left behind past INLINE_BUDGET.

    Outcomes are recorded as soon as they arrive, not after a whole claim: a worker killed
    mid-kick then leaves only what was really in flight to be attempted again. An attempt still
    running INLINE_BUDGET after it started marks its target slow (for a while no kick waits for
    that target at all) and records its own outcome when it ends; its lease covers it if this
    process dies first.
    """

    def __init__(self, ctx: WorkerContext, runtime: Runtime) -> None:
        self.ctx = ctx
        self.runtime = runtime
        self._waiting: dict[concurrent.futures.Future[AttemptResult], tuple[Started, float]] = {}

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def add(self, started: list[Started]) -> None:
        """Wait for these, except those to targets known to be slow (left to finish alone)."""
        now = time.monotonic()
        for item in started:
            if self.runtime.is_slow(item.plan.target):
                self._leave(item)
            else:
                self._waiting[item.future] = (item, now)

    def wait(self, timeout: float) -> None:
        """Wait until all have finished or `timeout` passes; record and leave behind as due."""
        if self._waiting:
            concurrent.futures.wait(list(self._waiting), timeout=max(0.0, timeout))
        now = time.monotonic()
        done = []
        for future, (item, since) in list(self._waiting.items()):
            if future.done():
                del self._waiting[future]
                done.append((item.plan, item.target, future))
            elif now - since >= INLINE_BUDGET:
                del self._waiting[future]
                self.runtime.mark_slow(item.plan.target)
                self._leave(item)
        if done:  # one Redis call for everything that finished in this tick
            record_attempts(self.ctx, done)

    def finish(self) -> None:
        """Wait for every attempt, each at most INLINE_BUDGET from its start."""
        while self._waiting:
            oldest = min(since for _, since in self._waiting.values())
            self.wait(oldest + INLINE_BUDGET - time.monotonic())

    def _leave(self, item: Started) -> None:
        item.future.add_done_callback(
            partial(_finish_late, self.ctx, self.runtime, item.plan, item.target)
        )


def _finish_late(
    ctx: WorkerContext,
    runtime: Runtime,
    plan: Planned,
    target: Target,
    future: concurrent.futures.Future[AttemptResult],
) -> None:
    """Record an attempt that outlived its job, off the event loop thread."""
    if future.cancelled():
        return  # cut short at shutdown: due again when its lease ends
    try:
        runtime.recorder.submit(record_attempt, ctx, plan, target, future)
    except RuntimeError:  # the recorder is shutting down: record right here
        record_attempt(ctx, plan, target, future)
