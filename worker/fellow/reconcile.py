"""One reconciliation pass of a Fellow source: read the API, compare, synthesize what was missed.

A pass holds relay:lock:rc:{source} (worker.fellow.lock: extended while it runs) so that one
runs at a time across every process and host; reads the snapshot of the last pass; reads every
course and program with their members and, for memberships not already completed, their
coursemember/programmember; decides (worker.fellow.plan); commits the missed events
(worker.fellow.synth); and writes the snapshot and the pass record with its counters
(relay.store.reconcile.record_pass). The first pass only records what exists, unless `backfill`.
A pass that fails (worker.fellow.api's FellowError) synthesizes nothing and writes nothing but
its record, with the error's kind as its outcome; a pass whose lock was lost writes nothing.
Each pass logs one summary line.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace

import aiohttp
import redis
import structlog

from relay.config.model import Reconcile, RouteTable, Source
from relay.store.reconcile import (
    Kind,
    Membership,
    MemberState,
    PassOutcome,
    PassRecord,
    read_pass,
    read_pending,
    read_snapshot,
    record_pass,
    write_state,
)
from worker.fellow.api import FellowApi, FellowError
from worker.fellow.lock import LOCK_TTL, PassLock
from worker.fellow.plan import Change, Plan, baseline, changes, decide
from worker.fellow.synth import commit_events, dedupe_key_of, synthesize

__all__ = ["PassBusy", "PassResult", "read_api", "run_pass"]


def _log() -> structlog.typing.FilteringBoundLogger:
    # Looked up per pass, not cached at import: `relay reconcile` configures logging after
    # this module is imported, and a logger cached on first use would keep the old setup.
    return structlog.get_logger("relay.reconcile")  # type: ignore[no-any-return]


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


async def _each(items: Iterable[str], work: Callable[[str], Awaitable[None]], width: int) -> None:
    """`work` on every item, `width` at a time: `width` coroutines, however many items (a task
    per member of a large academy would hold hundreds of thousands at once)."""
    queue = iter(items)

    async def worker() -> None:
        for item in queue:  # one shared iterator: each item is taken once
            await work(item)

    await asyncio.gather(*(worker() for _ in range(width)))


async def read_api(
    config: Reconcile, skip: set[Membership], session: aiohttp.ClientSession
) -> tuple[dict[Membership, MemberState], int]:
    """Every membership the API shows with its state, and the requests made; memberships in
    `skip` are already completed (completion is final) and cost no coursemember request."""
    api = FellowApi(config, session)
    found: dict[Membership, MemberState] = {}
    width = config.concurrency  # the API's own semaphore bounds the requests in flight

    async def container(kind: Kind, cid: str) -> None:
        members = await api.members(kind, cid)
        ships = [Membership(kind, cid, member) for member in dict.fromkeys(members)]

        async def check(member: str) -> None:
            completed = await api.completed(kind, cid, member)
            found[Membership(kind, cid, member)] = (
                MemberState.COMPLETED if completed else MemberState.ENROLLED
            )

        for m in ships:
            if m in skip:
                found[m] = MemberState.COMPLETED
        await _each((m.member for m in ships if m not in skip), check, width)

    for kind in Kind:
        ids = dict.fromkeys(await api.containers(kind))

        async def one(cid: str, kind: Kind = kind) -> None:
            await container(kind, cid)

        await _each(ids, one, width)
    return found, api.requests


def _seen(conn: redis.Redis, source: Source, found: list[Change]) -> set[str]:
    """Names of the changes whose dedupe key relay holds (the webhook came, or was made)."""
    with_keys = [(c, dedupe_key_of(source, c)) for c in found]
    with_keys = [(c, k) for c, k in with_keys if k]
    if not with_keys:
        return set()
    values = conn.mget([k for _, k in with_keys])
    return {c.name for (c, _), v in zip(with_keys, values, strict=True) if v is not None}


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
    now, dry_run, backfill = options.now, options.dry_run, options.backfill
    started = time.monotonic()
    record = read_pass(conn, source.name)
    first = not record.ran and not backfill
    snapshot = read_snapshot(conn, source.name)
    done = {m for m, s in snapshot.items() if s is MemberState.COMPLETED}

    async def read() -> tuple[dict[Membership, MemberState], int]:
        async with options.session_factory() as session:
            return await read_api(config, done, session)

    try:
        api, requests = asyncio.run(read())
    except FellowError as exc:
        return _failed(conn, source, record, exc, dry_run, time.monotonic() - started)
    at = time.time() if now is None else now
    found = changes(snapshot, api)
    del snapshot  # the largest value of a pass after `api`: not kept while deciding
    if first:
        plan = baseline(api)
    else:
        seen = _seen(conn, source, found)
        pending = read_pending(conn, source.name)
        grace = 0.0 if backfill else config.grace
        plan = decide(found, api, seen=seen, pending=pending, now=at, grace=grace)
    result = PassResult(source.name, first, dry_run, len(api), plan, requests=requests)
    if lock is not None and not lock.held():
        raise PassBusy(source.name)  # another process may be running it: commit nothing
    if not dry_run:
        result = _apply(conn, table, source, result, options.retention, record)
    result = _with_seconds(result, time.monotonic() - started)
    _log_summary(result)
    return result


def _apply(
    conn: redis.Redis,
    table: RouteTable,
    source: Source,
    result: PassResult,
    retention: float,
    last: PassRecord,
) -> PassResult:
    """Commit the missed events, then the snapshot: a crash between them leaves the events'
    dedupe keys, so the next pass sees them as received and synthesizes nothing twice."""
    plan = result.plan
    # Received now (the due sets score by it), whatever clock the pass compared with.
    received = time.time()
    events = [synthesize(table, source, change, received) for change in plan.missed]
    repeats = commit_events(conn, source, events, retention)
    write_state(conn, source.name, plan.accepted, plan.pending)
    outcome = PassOutcome.BASELINE if result.baseline else PassOutcome.OK
    at = time.time()
    record = PassRecord(at, outcome, 0, len(events), ok_at=at, since=last.since)
    record_pass(conn, source.name, record, Counter(c.event for c in plan.missed))
    made = tuple((c, e.id) for c, e in zip(plan.missed, events, strict=True))
    return replace(result, synthesized=made, repeats=sum(r is not None for r in repeats))


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
    _log().error(
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
    _log().info(
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
