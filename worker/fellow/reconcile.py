"""One reconciliation pass of a Fellow source: read the API, compare, synthesize what was missed.

A pass holds relay:lock:rc:{source} (worker.fellow.lock: extended while it runs) so that one
runs at a time across every process and host. It walks every course and program
(worker.fellow.walk: one container at a time, comparing the API with the snapshot of the last
pass, deciding with worker.fellow.plan), then commits what it decided: the missed events
(worker.fellow.synth), the snapshot's updates and the pending changes, and the pass record with
its counters (relay.store.reconcile.record_pass). A synthesized completion routed to an enriching
target is committed with the coursemember/programmember the pass read for it, as its enrichment
record (relay.store.enrichment): the target's delivery never fetches it again. The first pass
only records what exists, unless `backfill`. A pass that fails (worker.fellow.api's
FellowError) synthesizes nothing and writes nothing but its record, with the error's kind as its
outcome; a pass whose lock was lost commits nothing. Each pass logs one summary line.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import aiohttp
import redis

from relay.config.model import ENRICHED_EVENTS, Reconcile, RouteTable, Source
from relay.store.reconcile import Membership, PassOutcome, PassRecord, read_pass, record_pass
from relay.store.reconcile_legacy import convert_legacy
from relay.store.reconcile_snapshot import apply_changes, read_pending, write_pending
from worker.fellow.api import FellowError, reconcile_log
from worker.fellow.enrich import wanted_kind
from worker.fellow.lock import LOCK_TTL, PassLock
from worker.fellow.plan import COMPLETED, Change, Plan
from worker.fellow.synth import commit_events, synthesize
from worker.fellow.walk import Decisions, Walk, walk

__all__ = ["COMMIT_CHUNK", "PassBusy", "PassResult", "run_pass"]


#: Synthesized events committed per script call: a backfill of 100,000 stays in bounded calls.
COMMIT_CHUNK = 500


class PassBusy(Exception):
    """Another process holds the source's pass lock (or, with `when_due`, none is due, or the
    pass lost its lock before it could commit)."""


@dataclass(frozen=True)
class PassResult:
    """What one pass found and did."""

    source: str
    baseline: bool  # the first pass: memberships recorded, nothing synthesized
    dry_run: bool
    memberships: int = 0
    plan: Plan = field(default_factory=lambda: Plan((), (), ()))
    synthesized: tuple[tuple[Change, str], ...] = ()  # (change, event id) committed
    repeats: int = 0  # synthesized events a real webhook beat to the dedupe key
    requests: int = 0
    seconds: float = 0.0
    error: FellowError | None = None


SessionFactory = Callable[[], aiohttp.ClientSession]


@dataclass(frozen=True)
class _Options:
    retention: float
    now: float | None
    dry_run: bool
    backfill: bool
    session_factory: SessionFactory


def run_pass(
    conn: redis.Redis,
    table: RouteTable,
    source: Source,
    *,
    retention: float,
    now: float | None = None,
    dry_run: bool = False,
    backfill: bool = False,
    session_factory: SessionFactory = aiohttp.ClientSession,
    when_due: Callable[[PassRecord], bool] | None = None,
    lock_ttl: float = LOCK_TTL,
) -> PassResult:
    """One pass now (PassBusy when another holds the lock); a failure is in `error`.

    `when_due` is asked under the lock with the last pass's record: the workers' loop runs a
    pass only if it is still due once the lock is theirs (PassBusy otherwise). A dry run takes
    no lock: it writes nothing.
    """
    assert source.reconcile is not None, "only reconciled sources have a pass"
    options = _Options(retention, now, dry_run, backfill, session_factory)
    if dry_run:
        return _locked_pass(conn, table, source, source.reconcile, options, None)
    # The loop asks every tick: a pass that is not due costs one read, not the lock (and its
    # heartbeat). The answer under the lock below is the one that counts.
    if when_due is not None and not when_due(read_pass(conn, source.name)):
        raise PassBusy(source.name)
    lock = PassLock(conn, source.name, ttl=lock_ttl)
    if not lock.acquire():
        raise PassBusy(source.name)
    with lock:
        if when_due is not None and not when_due(read_pass(conn, source.name)):
            raise PassBusy(source.name)
        return _locked_pass(conn, table, source, source.reconcile, options, lock)


def _locked_pass(
    conn: redis.Redis,
    table: RouteTable,
    source: Source,
    config: Reconcile,
    options: _Options,
    lock: PassLock | None,
) -> PassResult:
    started = time.monotonic()
    # An upgrade over the snapshot's old layout: read it as the last pass's, never as nothing.
    converted = convert_legacy(conn, source.name)
    if converted:
        reconcile_log().info(
            "reconcile: snapshot converted to the per-course layout",
            source=source.name,
            memberships=converted,
        )
    record = read_pass(conn, source.name)
    first = not record.ran and not options.backfill
    at = time.time() if options.now is None else options.now
    grace = 0.0 if options.backfill else config.grace
    pending = {} if first else read_pending(conn, source.name)
    plan_walk = Walk(
        conn,
        source,
        config,
        first,
        at,
        grace,
        pending,
        write_first=not options.dry_run,
        holding=(lambda: not lock.lost) if lock is not None else lambda: True,
        keep_records=not options.dry_run and _enriches(table, source),
    )

    async def read() -> Decisions:
        async with options.session_factory() as session:
            return await walk(plan_walk, session)

    try:
        found = asyncio.run(read())
    except FellowError as exc:
        return _failed(conn, source, record, exc, options.dry_run, time.monotonic() - started)
    plan = Plan(
        tuple(found.missed), tuple(found.seen), tuple(found.waiting), found.accepted, found.pending
    )
    result = PassResult(
        source.name, first, options.dry_run, found.memberships, plan, requests=found.requests
    )
    if lock is not None and not lock.held():
        raise PassBusy(source.name)  # another process may be running it: commit nothing
    if not options.dry_run:
        result = _apply(conn, table, source, result, options.retention, record, found.records)
    result = _with_seconds(result, time.monotonic() - started)
    _log_summary(result)
    return result


def _enriches(table: RouteTable, source: Source) -> bool:
    """Whether some target the source's completions are routed to enriches them: then a pass
    keeps the records it reads for the completions it synthesizes."""
    return any(
        table.targets[name].enrich is not None
        for event in ENRICHED_EVENTS
        for name in table.match(source.name, event)
    )


def _apply(
    conn: redis.Redis,
    table: RouteTable,
    source: Source,
    result: PassResult,
    retention: float,
    last: PassRecord,
    records: Mapping[Membership, bytes],
) -> PassResult:
    """Commit the missed events (each completion with its record when a target enriches it),
    then the snapshot: a crash between them leaves the events' dedupe keys, so the next pass
    sees them as received and synthesizes nothing twice."""
    plan = result.plan
    # Received now (the due sets score by it), whatever clock the pass compared with.
    received = time.time()
    made: list[tuple[Change, str]] = []
    repeats = 0
    for start in range(0, len(plan.missed), COMMIT_CHUNK):
        chunk = plan.missed[start : start + COMMIT_CHUNK]
        events = [synthesize(table, source, change, received) for change in chunk]
        kept = {
            event.id: records[change.membership]
            for change, event in zip(chunk, events, strict=True)
            if change.action == COMPLETED
            and change.membership in records
            and any(wanted_kind(event, table.targets[name]) for name in event.targets)
        }
        firsts = commit_events(conn, source, events, retention, kept)
        repeats += sum(r is not None for r in firsts)
        made += [(c, e.id) for c, e in zip(chunk, events, strict=True)]
    apply_changes(conn, source.name, plan.accepted)
    write_pending(conn, source.name, plan.pending)
    outcome = PassOutcome.BASELINE if result.baseline else PassOutcome.OK
    at = time.time()
    record = PassRecord(at, outcome, 0, len(made), ok_at=at, since=last.since)
    record_pass(conn, source.name, record, Counter(c.event for c in plan.missed))
    return replace(result, synthesized=tuple(made), repeats=repeats)


def _failed(
    conn: redis.Redis,
    source: Source,
    record: PassRecord,
    exc: FellowError,
    dry_run: bool,
    seconds: float,
) -> PassResult:
    """Record and log a failed pass: nothing synthesized, the snapshot untouched."""
    failures = record.failures + 1
    if not dry_run:
        # `at` is when this one failed; the last success stays the last good pass's.
        failed = replace(
            record, at=time.time(), outcome=exc.outcome, failures=failures, error=str(exc)
        )
        record_pass(conn, source.name, failed, {})
    reconcile_log().error(
        "reconcile: pass failed; nothing synthesized",
        source=source.name,
        outcome=str(exc.outcome),
        endpoint=exc.endpoint,
        error=str(exc),
        error_type=type(exc).__name__,
        failures=failures,
        dry_run=dry_run,
    )
    return PassResult(source.name, False, dry_run, seconds=seconds, error=exc)


def _with_seconds(result: PassResult, seconds: float) -> PassResult:
    return replace(result, seconds=round(seconds, 3))


def _log_summary(result: PassResult) -> None:
    plan = result.plan
    reconcile_log().info(
        "reconcile: pass done",
        source=result.source,
        baseline=result.baseline,
        dry_run=result.dry_run,
        memberships=result.memberships,
        missed=len(plan.missed),
        synthesized=len(result.synthesized),
        lost_to_webhook=result.repeats,
        seen=len(plan.seen),
        waiting=len(plan.waiting),
        requests=result.requests,
        seconds=result.seconds,
    )
