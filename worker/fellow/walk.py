"""A pass's reading and deciding, one course or program at a time, with bounded memory.

For each container (a course or program) the API lists, and each the snapshot holds but the API
no longer lists, the walk reads that container's snapshot, its members from the API and, for
members not already completed, their coursemember/programmember; compares (worker.fellow.plan);
and keeps only the decisions: the changes (missed, seen, waiting) and the snapshot updates they
bring, and, when some target enriches completions, the coursemember/programmember of each missed
completion, read already, for its event to carry (worker.fellow.reconcile keeps it). Every
membership is never held at once: memory follows the largest containers in flight
(`concurrency` of them) and the number of changes, not the size of the academy.

A first pass records each container as the API shows it (replace_container, as it goes: a first
pass that fails part-way is a first pass again next time, and redoes them). Any other pass
writes nothing here: the caller commits the decisions once the whole walk has succeeded, so a
failed pass synthesizes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import aiohttp
import redis

from relay.config.model import Reconcile, Source
from relay.store.enrichment import encode_record
from relay.store.reconcile import ACTIONS, Kind, Membership, MemberState
from relay.store.reconcile_snapshot import read_container, read_containers, replace_container
from worker.fellow.api import FellowApi
from worker.fellow.plan import COMPLETED, Change, changes, decide
from worker.fellow.synth import dedupe_key_of

__all__ = ["Decisions", "Walk", "walk"]


@dataclass(frozen=True)
class Walk:
    """What a walk compares with and how."""

    conn: redis.Redis
    source: Source
    config: Reconcile
    first: bool  # record what exists, decide nothing
    now: float
    grace: float
    pending: Mapping[str, float]  # changes earlier passes saw waiting, and since when
    write_first: bool = True  # False for a dry run: a first pass records nothing either
    #: Whether the pass still holds its lock (a first pass stops recording once it is lost).
    holding: Callable[[], bool] = lambda: True
    #: Keep the record read for each missed completion (some target enriches completions).
    keep_records: bool = False


@dataclass
class Decisions:
    """What a walk decided, gathered container by container (changes only)."""

    memberships: int = 0
    missed: list[Change] = field(default_factory=list)
    seen: list[Change] = field(default_factory=list)
    waiting: list[Change] = field(default_factory=list)
    #: Snapshot updates (None: gone) of the changed memberships whose changes do not wait.
    accepted: dict[Membership, MemberState | None] = field(default_factory=dict)
    pending: dict[str, float] = field(default_factory=dict)
    requests: int = 0
    #: The coursemember/programmember (encoded) of each missed completion, when kept.
    records: dict[Membership, bytes] = field(default_factory=dict)


async def each(items: Iterable[str], work: Callable[[str], Awaitable[None]], width: int) -> None:
    """`work` on every item, `width` at a time: `width` coroutines, however many items (a task
    per member of a large academy would hold hundreds of thousands at once)."""
    queue = iter(items)

    async def worker() -> None:
        for item in queue:  # one shared iterator: each item is taken once
            await work(item)

    await asyncio.gather(*(worker() for _ in range(width)))


def seen_names(conn: redis.Redis, source: Source, found: list[Change]) -> set[str]:
    """Names of the changes whose dedupe key relay holds (the webhook came, or was made)."""
    with_keys = [(c, dedupe_key_of(source, c)) for c in found]
    with_keys = [(c, k) for c, k in with_keys if k]
    if not with_keys:
        return set()
    values = conn.mget([k for _, k in with_keys])
    return {c.name for (c, _), v in zip(with_keys, values, strict=True) if v is not None}


async def _members(
    api: FellowApi, kind: Kind, cid: str, before: Mapping[Membership, MemberState], keep: bool
) -> tuple[dict[Membership, MemberState], dict[Membership, bytes]]:
    """A container's memberships as the API shows them, and (`keep`) the record of each one
    completed since the snapshot; one completed in the snapshot costs no coursemember request
    (completion is final)."""
    found: dict[Membership, MemberState] = {}
    records: dict[Membership, bytes] = {}
    todo: list[str] = []
    for member in dict.fromkeys(await api.members(kind, cid)):
        m = Membership(kind, cid, member)
        if before.get(m) is MemberState.COMPLETED:
            found[m] = MemberState.COMPLETED
        else:
            todo.append(member)

    async def check(member: str) -> None:
        record = await api.member_record(kind, cid, member)
        m = Membership(kind, cid, member)
        if not api.is_completed(record):
            found[m] = MemberState.ENROLLED
            return
        found[m] = MemberState.COMPLETED
        if keep:
            with contextlib.suppress(ValueError):  # too large to keep: the enricher fails it
                records[m] = encode_record(record)

    await each(todo, check, api.config.concurrency)
    return dict(sorted(found.items())), records


async def _container(
    w: Walk, api: FellowApi, out: Decisions, kind: Kind, cid: str, listed: bool
) -> None:
    source = w.source.name
    before = read_container(w.conn, source, kind, cid)
    keep = w.keep_records and not w.first
    now_api, records = await _members(api, kind, cid, before, keep) if listed else ({}, {})
    out.memberships += len(now_api)
    if w.first:
        if w.write_first and w.holding():
            replace_container(w.conn, source, kind, cid, now_api)
        return
    found = changes(before, now_api)
    if not found:
        return
    seen = seen_names(w.conn, w.source, found)
    plan = decide(found, now_api, seen=seen, pending=w.pending, now=w.now, grace=w.grace)
    out.missed += plan.missed
    out.seen += plan.seen
    out.waiting += plan.waiting
    out.accepted.update(plan.accepted)
    out.pending.update(plan.pending)
    out.records.update(
        (c.membership, records[c.membership])
        for c in plan.missed
        if c.action == COMPLETED and c.membership in records
    )


async def walk(w: Walk, session: aiohttp.ClientSession) -> Decisions:
    """Compare every container, `concurrency` at a time; FellowError when the API fails."""
    api = FellowApi(w.config, session, source=w.source.name)
    held = read_containers(w.conn, w.source.name)
    out = Decisions()
    for kind in Kind:
        listed = dict.fromkeys(await api.containers(kind))
        gone = sorted(cid for k, cid in held if k is kind and cid not in listed)

        async def one(cid: str, kind: Kind = kind, listed: Mapping[str, None] = listed) -> None:
            await _container(w, api, out, kind, cid, cid in listed)

        await each([*listed, *gone], one, w.config.concurrency)
    out.requests = api.requests
    # Containers finish in any order; decisions are kept in membership order, and a
    # membership's events in the order Fellow sends them (created before completed).
    for found in (out.missed, out.seen, out.waiting):
        found.sort(key=lambda c: (c.membership, ACTIONS.index(c.action)))
    return out
