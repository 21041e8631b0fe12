"""The codec of reconciliation's records (relay:rc:{source}:*, key names in relay.store.keys).

A membership is one member in one course or program (a container). The snapshot of the last pass
(relay.store.reconcile_snapshot) holds each membership's MemberState. The pass record says how the
last pass ended (a PassOutcome); the stats hash counts passes by outcome and the events
synthesized by type, for /metrics (relay.store.reconcile_metrics) and the status views.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import redis

from relay.store import keys
from relay.store.records import read_int, read_text

__all__ = [
    "ACTIONS",
    "EVENT_TYPES",
    "Kind",
    "MemberState",
    "Membership",
    "PassOutcome",
    "PassRecord",
    "PassStats",
    "read_pass",
    "read_stats",
    "record_of",
    "record_pass",
    "stats_of",
]


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


#: What Fellow sends for a membership: an enrolment, a completion, a removal (`..._CREATED`).
ACTIONS = ("CREATED", "COMPLETED", "DELETED")
#: Every event type a pass can synthesize: the `type` label of the missed-events counter.
EVENT_TYPES = tuple(f"{kind.event_prefix}_{action}" for kind in Kind for action in ACTIONS)


class PassOutcome(StrEnum):
    """How a pass ended: the `outcome` label of the metrics and the status views' word.

    The failures are the kinds of worker.fellow.api's errors; each names what to look at.
    """

    OK = "ok"
    BASELINE = "baseline"  # the first pass: memberships recorded, nothing synthesized
    SHAPE = "shape"  # an answer not of the shape relay assumes
    AUTH = "auth"  # 401/403: the API key is refused
    RATE_LIMITED = "rate_limited"  # a 429 storm: still 429 after the waits
    TIMEOUT = "timeout"  # no answer within the per-request timeout
    API_ERROR = "api_error"  # another status, or the connection failed

    @property
    def succeeded(self) -> bool:
        """Whether the pass recorded the snapshot."""
        return self in (PassOutcome.OK, PassOutcome.BASELINE)

    @property
    def describe(self) -> str:
        """A few words for people: what went wrong (or right)."""
        return _DESCRIBE[self]


_DESCRIBE = {
    PassOutcome.OK: "ok",
    PassOutcome.BASELINE: "ok (first pass: memberships recorded)",
    PassOutcome.SHAPE: "unexpected answer shape",
    PassOutcome.AUTH: "API key refused (401/403)",
    PassOutcome.RATE_LIMITED: "rate-limited (429 storm)",
    PassOutcome.TIMEOUT: "API timeout",
    PassOutcome.API_ERROR: "API error",
}


class MemberState(StrEnum):
    """A membership's state as the snapshot holds it."""

    ENROLLED = "enrolled"
    COMPLETED = "completed"


@dataclass(frozen=True, order=True, slots=True)
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

    at: float = 0.0  # when the last pass ended (0: none yet)
    outcome: PassOutcome | None = None
    failures: int = 0  # failed passes in a row
    missed: int = 0  # events synthesized by the last successful pass
    error: str = ""  # the last failure's one-line description ("" after a success)
    ok_at: float = 0.0  # when the last successful pass ended (0: none yet)
    since: float = 0.0  # when the first pass of this source ended, whatever its outcome

    @property
    def ran(self) -> bool:
        """Whether a pass ever recorded the snapshot (else the next one is a baseline)."""
        return self.at > 0 and self.outcome is not None and self.outcome.succeeded

    @property
    def last_success(self) -> float:
        """When the last pass succeeded or, before any did, when the first one ran: what "no
        successful pass for so long" counts from (0 when no pass ever ran)."""
        return self.ok_at or self.since


@dataclass(frozen=True)
class PassStats:
    """A source's counters since its first pass: passes by outcome, events synthesized by type."""

    passes: Mapping[PassOutcome, int]
    missed: Mapping[str, int]


def _outcome(raw: str) -> PassOutcome | None:
    if not raw:
        return None
    try:
        return PassOutcome(raw)
    except ValueError:
        return PassOutcome.API_ERROR  # a word this version does not know: a failure of sorts


def _float(raw: object) -> float:
    try:
        return float(read_text(raw) or 0.0)
    except ValueError:
        return 0.0


def read_pass(conn: redis.Redis, source: str) -> PassRecord:
    """The record of the last pass (an empty record when none ran)."""
    raw: Mapping[bytes, bytes] = conn.hgetall(keys.reconcile_pass_key(source))  # type: ignore[assignment]
    return record_of(raw)


def record_of(raw: Mapping[bytes, bytes]) -> PassRecord:
    """The PassRecord of the pass hash's fields as HGETALL returns them."""
    return PassRecord(
        at=_float(raw.get(b"at")),
        outcome=_outcome(read_text(raw.get(b"outcome"))),
        failures=read_int(raw.get(b"failures")),
        missed=read_int(raw.get(b"missed")),
        error=read_text(raw.get(b"error")),
        ok_at=_float(raw.get(b"ok_at")),
        since=_float(raw.get(b"since")),
    )


def record_pass(
    conn: redis.Redis, source: str, record: PassRecord, missed: Mapping[str, int]
) -> None:
    """Record how a pass ended and count it (by outcome, and its synthesized events by type),
    in one transaction: the record and the counters never disagree."""
    assert record.outcome is not None, "a recorded pass has an outcome"
    pass_key, stats_key = keys.reconcile_pass_key(source), keys.reconcile_stats_key(source)
    pipe = conn.pipeline(transaction=True)
    pipe.hset(
        pass_key,
        mapping={
            "at": repr(record.at),
            "outcome": str(record.outcome),
            "failures": str(record.failures),
            "missed": str(record.missed),
            "error": record.error,
            "ok_at": repr(record.ok_at),
        },
    )
    pipe.hsetnx(pass_key, "since", repr(record.at))
    pipe.sadd(keys.RECONCILED_SOURCES, source)
    pipe.hincrby(stats_key, f"pass:{record.outcome}", 1)
    for event_type, count in missed.items():
        if count:
            pipe.hincrby(stats_key, f"missed:{event_type}", count)
    pipe.execute()


def read_stats(conn: redis.Redis, source: str) -> PassStats:
    """The source's counters; every outcome and event type present (0 when never counted)."""
    raw: Mapping[bytes, bytes] = conn.hgetall(keys.reconcile_stats_key(source))  # type: ignore[assignment]
    return stats_of(raw)


def stats_of(raw: Mapping[bytes, bytes]) -> PassStats:
    """PassStats of the stats hash's fields as HGETALL returns them."""
    fields = {read_text(k): read_int(v) for k, v in raw.items()}
    return PassStats(
        passes={o: fields.get(f"pass:{o}", 0) for o in PassOutcome},
        missed={t: fields.get(f"missed:{t}", 0) for t in EVENT_TYPES},
    )
