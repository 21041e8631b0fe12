"""Reconciliation's snapshot and pending changes in Redis (key names in relay.store.keys).

The snapshot is what the last pass accepted, one hash per course or program (a container:
"course:7" -> relay:rc:{source}:m:course:7, member -> MemberState) and a set naming the
containers it holds, so that a pass reads and writes one container at a time: its memory
follows the largest course, not the whole academy. `pending` maps each change a pass saw but no
webhook brought (an event type and a membership, `COURSEMEMBER_CREATED course:7:42`) to when a
pass first saw it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import redis

from relay.store import keys
from relay.store.reconcile import Kind, Membership, MemberState
from relay.store.records import read_text

__all__ = [
    "apply_changes",
    "container_of",
    "read_container",
    "read_containers",
    "read_pending",
    "read_snapshot",
    "replace_container",
    "write_pending",
]

#: Fields per HSET/HDEL: a course of 100,000 members stays in bounded commands.
_CHUNK = 1000


def container_of(kind: Kind, cid: str) -> str:
    """A container's name in the snapshot: `course:7`, `program:p1` (Fellow ids have no ':')."""
    return f"{kind}:{cid}"


def read_containers(conn: redis.Redis, source: str) -> set[tuple[Kind, str]]:
    """The (kind, id) of every course and program the snapshot holds."""
    found: set[tuple[Kind, str]] = set()
    for raw in conn.sscan_iter(keys.reconcile_containers_key(source), count=1000):
        kind, _, cid = read_text(raw).partition(":")
        if kind in Kind.__members__.values() and cid:
            found.add((Kind(kind), cid))
    return found


def read_container(
    conn: redis.Redis, source: str, kind: Kind, cid: str
) -> dict[Membership, MemberState]:
    """One container's snapshot (unreadable entries skipped)."""
    key = keys.reconcile_container_key(source, container_of(kind, cid))
    found: dict[Membership, MemberState] = {}
    for raw_member, raw_state in conn.hscan_iter(key, count=1000):
        try:
            state = MemberState(read_text(raw_state))
        except ValueError:
            continue
        found[Membership(kind, cid, read_text(raw_member))] = state
    return found


def _write(
    pipe: redis.client.Pipeline, key: str, gone: list[str], kept: Mapping[str, MemberState]
) -> None:
    for start in range(0, len(gone), _CHUNK):
        pipe.hdel(key, *gone[start : start + _CHUNK])
    names = list(kept)
    for start in range(0, len(names), _CHUNK):
        pipe.hset(key, mapping={n: str(kept[n]) for n in names[start : start + _CHUNK]})


def replace_container(
    conn: redis.Redis, source: str, kind: Kind, cid: str, states: Mapping[Membership, MemberState]
) -> None:
    """Make one container's snapshot exactly `states` (a first pass records what exists)."""
    name = container_of(kind, cid)
    key, index = keys.reconcile_container_key(source, name), keys.reconcile_containers_key(source)
    pipe = conn.pipeline(transaction=True)
    pipe.delete(key)
    _write(pipe, key, [], {m.member: state for m, state in states.items()})
    if states:
        pipe.sadd(index, name)
    else:
        pipe.srem(index, name)
    pipe.execute()


def apply_changes(
    conn: redis.Redis, source: str, accepted: Mapping[Membership, MemberState | None]
) -> None:
    """Apply a pass's accepted changes to the snapshot (None: the membership is gone); a
    container left empty leaves the index."""
    by_container: dict[str, tuple[list[str], dict[str, MemberState]]] = defaultdict(
        lambda: ([], {})
    )
    for m, state in accepted.items():
        gone, kept = by_container[container_of(m.kind, m.container)]
        if state is None:
            gone.append(m.member)
        else:
            kept[m.member] = state
    if not by_container:
        return
    index = keys.reconcile_containers_key(source)
    names = sorted(by_container)
    pipe = conn.pipeline(transaction=True)
    for name in names:
        _write(pipe, keys.reconcile_container_key(source, name), *by_container[name])
    pipe.execute()
    with conn.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hlen(keys.reconcile_container_key(source, name))
        sizes = pipe.execute()
    empty = [n for n, size in zip(names, sizes, strict=True) if not size]
    held = [n for n, size in zip(names, sizes, strict=True) if size]
    with conn.pipeline(transaction=False) as pipe:
        if empty:
            pipe.srem(index, *empty)
        if held:
            pipe.sadd(index, *held)
        pipe.execute()


def read_snapshot(conn: redis.Redis, source: str) -> dict[Membership, MemberState]:
    """The whole snapshot, every container (for tests and tools: a pass reads one at a time)."""
    found: dict[Membership, MemberState] = {}
    for kind, cid in sorted(read_containers(conn, source)):
        found.update(read_container(conn, source, kind, cid))
    return found


def read_pending(conn: redis.Redis, source: str) -> dict[str, float]:
    """Pending changes (`EVENT membership-field`) -> when a pass first saw them."""
    raw: Mapping[bytes, bytes] = conn.hgetall(keys.reconcile_pending_key(source))  # type: ignore[assignment]
    out: dict[str, float] = {}
    for name, value in raw.items():
        try:
            out[read_text(name)] = float(read_text(value))
        except ValueError:
            continue
    return out


def write_pending(conn: redis.Redis, source: str, pending: Mapping[str, float]) -> None:
    """Replace the pending changes with a whole pass's."""
    key = keys.reconcile_pending_key(source)
    pipe = conn.pipeline(transaction=True)
    pipe.delete(key)
    names = list(pending)
    for start in range(0, len(names), _CHUNK):
        pipe.hset(key, mapping={n: repr(pending[n]) for n in names[start : start + _CHUNK]})
    pipe.execute()
