"""The codec of reconciliation's state (relay:rc:{source}:*, key names in relay.store.keys).

A membership is one member in one course or program: `course:{courseId}:{memberId}` or
`program:{programId}:{memberId}`. The snapshot maps each membership the last pass accepted to
its MemberState; `pending` maps each change a pass saw but no webhook brought (an event type and
a membership, `COURSEMEMBER_CREATED course:7:42`) to when a pass first saw it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import redis

from relay.store import keys
from relay.store.records import read_int, read_text

__all__ = [
    "Kind",
    "MemberState",
    "Membership",
    "PassRecord",
    "read_pass",
    "read_pending",
    "read_snapshot",
    "write_pass",
    "write_state",
]

#: Fields per HSET/HDEL: a pass over 100,000 memberships stays in bounded commands.
_CHUNK = 1000


class Kind(StrEnum):
    """What a member belongs to, with the form field and event prefix Fellow uses for it."""

    COURSE = "course"
    PROGRAM = "program"

    @property
    def id_field(self) -> str:
        """The form field naming the course or program (`courseId`, `programId`)."""
        return f"{self.value}Id"

    @property
    def event_prefix(self) -> str:
        """`COURSEMEMBER` or `PROGRAMMEMBER`."""
        return f"{self.value.upper()}MEMBER"


class MemberState(StrEnum):
    """A membership's state as the snapshot holds it."""

    ENROLLED = "enrolled"
    COMPLETED = "completed"


@dataclass(frozen=True, order=True)
class Membership:
    """One member of one course or program."""

    kind: Kind
    container: str  # the course or program id
    member: str

    def to_field(self) -> str:
        """The snapshot's field name (ids are Fellow's and never contain ':')."""
        return f"{self.kind}:{self.container}:{self.member}"

    @classmethod
    def from_field(cls, raw: str) -> Membership | None:
        """The inverse of `to_field`; None for a field this version does not read."""
        kind, _, rest = raw.partition(":")
        container, _, member = rest.partition(":")
        if kind not in Kind.__members__.values() or not container or not member:
            return None
        return cls(Kind(kind), container, member)


@dataclass(frozen=True)
class PassRecord:
    """The last pass of a source: when it ended, how, and how many failed in a row."""

    at: float = 0.0
    outcome: str = ""  # "ok", "baseline", or the failure's one-line description
    failures: int = 0
    missed: int = 0  # events synthesized by the last successful pass

    @property
    def ran(self) -> bool:
        """Whether a pass ever recorded the snapshot (else the next one is a baseline)."""
        return self.at > 0 and self.outcome in ("ok", "baseline")


def read_snapshot(conn: redis.Redis, source: str) -> dict[Membership, MemberState]:
    """The snapshot of the last pass (unreadable entries skipped)."""
    found: dict[Membership, MemberState] = {}
    for raw_key, raw_value in conn.hscan_iter(keys.reconcile_members_key(source), count=1000):
        membership = Membership.from_field(read_text(raw_key))
        try:
            state = MemberState(read_text(raw_value))
        except ValueError:
            continue
        if membership is not None:
            found[membership] = state
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


def write_state(
    conn: redis.Redis,
    source: str,
    accepted: Mapping[Membership, MemberState | None],
    pending: Mapping[str, float],
) -> None:
    """Apply a pass's accepted changes to the snapshot (None: gone) and replace `pending`."""
    members, pending_key = keys.reconcile_members_key(source), keys.reconcile_pending_key(source)
    pipe = conn.pipeline(transaction=True)
    gone = [m.to_field() for m, state in accepted.items() if state is None]
    kept = {m.to_field(): str(state) for m, state in accepted.items() if state is not None}
    for start in range(0, len(gone), _CHUNK):
        pipe.hdel(members, *gone[start : start + _CHUNK])
    names = list(kept)
    for start in range(0, len(names), _CHUNK):
        pipe.hset(members, mapping={n: kept[n] for n in names[start : start + _CHUNK]})
    pipe.delete(pending_key)
    if pending:
        pipe.hset(pending_key, mapping={k: repr(v) for k, v in pending.items()})
    pipe.execute()


def read_pass(conn: redis.Redis, source: str) -> PassRecord:
    """The record of the last pass (an empty record when none ran)."""
    raw: Mapping[bytes, bytes] = conn.hgetall(keys.reconcile_pass_key(source))  # type: ignore[assignment]
    try:
        at = float(read_text(raw.get(b"at")) or 0.0)
    except ValueError:
        at = 0.0
    return PassRecord(
        at=at,
        outcome=read_text(raw.get(b"outcome")),
        failures=read_int(raw.get(b"failures")),
        missed=read_int(raw.get(b"missed")),
    )


def write_pass(conn: redis.Redis, source: str, record: PassRecord) -> None:
    """Record how a pass ended."""
    conn.hset(
        keys.reconcile_pass_key(source),
        mapping={
            "at": repr(record.at),
            "outcome": record.outcome,
            "failures": str(record.failures),
            "missed": str(record.missed),
        },
    )
