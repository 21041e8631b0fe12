"""The snapshot's layout before 2026-12, and its one-time conversion to the current one.

Versions before 2026-12 kept reconciliation's snapshot in one hash per source,
relay:rc:{source}:members, "{kind}:{id}:{member}" -> MemberState; the current layout
(relay.store.reconcile_snapshot) has one hash per course or program and an index set. A relay
upgraded over the old layout, reading only the new one, would take every membership for new and
synthesize an enrolment for each after `grace`: a flood. So every pass first converts an old
hash it finds (`convert_legacy`), and reads only the new layout after that.

The conversion is one MULTI/EXEC under WATCH of the old hash: the per-container hashes and the
index get every old entry (HSET merges them into whatever is there) and the old hash is deleted,
all or nothing. Two processes converting at once are harmless: the second one's EXEC fails when
the first one deleted the hash, and it then finds nothing left; and a conversion applied twice
would write the same entries twice. The pass lock makes that rare anyway; a dry run, which takes
no lock, converts too (it changes how the snapshot is stored, not what it says).
"""

from __future__ import annotations

from collections import defaultdict

import redis

from relay.store import keys
from relay.store.reconcile import Membership, MemberState
from relay.store.reconcile_snapshot import container_of
from relay.store.records import read_text

__all__ = ["convert_legacy"]

#: Fields per HSET/SADD, as in the current layout's writes.
_CHUNK = 1000
#: Conversions tried while other processes keep changing the old hash (only old-version
#: workers still running would): the pass fails rather than loop for ever.
_TRIES = 5


def _read(pipe: redis.client.Pipeline, key: str) -> dict[str, dict[str, str]]:
    """The old hash grouped by container: name -> {member: state} (unreadable entries left out,
    as the old version's reader left them out)."""
    found: dict[str, dict[str, str]] = defaultdict(dict)
    for raw_field, raw_state in pipe.hscan_iter(key, count=1000):
        membership = Membership.from_field(read_text(raw_field))
        try:
            state = MemberState(read_text(raw_state))
        except ValueError:
            continue
        if membership is not None:
            name = container_of(membership.kind, membership.container)
            found[name][membership.member] = str(state)
    return found


def convert_legacy(conn: redis.Redis, source: str) -> int:
    """Move an old-layout snapshot into the current layout, once; the memberships moved (0 when
    there was no old hash). redis.WatchError when others kept changing it."""
    old = keys.reconcile_legacy_key(source)
    if not conn.exists(old):  # the usual case: one round trip per pass
        return 0
    index = keys.reconcile_containers_key(source)
    with conn.pipeline(transaction=True) as pipe:
        for _ in range(_TRIES):
            try:
                pipe.watch(old)  # type: ignore[no-untyped-call]
                by_container = _read(pipe, old)
                pipe.multi()
                for name, states in by_container.items():
                    key, members = keys.reconcile_container_key(source, name), list(states)
                    for start in range(0, len(members), _CHUNK):
                        chunk = members[start : start + _CHUNK]
                        pipe.hset(key, mapping={m: states[m] for m in chunk})
                names = sorted(by_container)
                for start in range(0, len(names), _CHUNK):
                    pipe.sadd(index, *names[start : start + _CHUNK])
                pipe.delete(old)
                pipe.execute()
            except redis.WatchError:
                continue  # changed (or converted by another process) meanwhile: look again
            return sum(len(states) for states in by_container.values())
    raise redis.WatchError(f"{old} kept changing during {_TRIES} conversions")
