"""Reads and writes of delivery state in Redis (fields and states: relay.store.records).

Taking work is one Lua script (lua/claim.lua): the deliveries due now in each target's due set are
moved to the end of their lease in the same set, so two workers never take the same one, and
one whose worker dies becomes due again when its lease ends; a target's rate and concurrency
(relay.store.control) are checked and counted in the same step. Recording an attempt is another
(lua/record.lua), so the check "is this attempt still the current one?" and the writes (state,
attempt log, counters, dead-letter entry, the next due time or removal from the due set, the
freed concurrency slot, the next delivery of a FIFO key) are atomic: a stale duplicate can never
overwrite a newer outcome. One call records every attempt a worker saw finish in one tick
(`Store.record_many`): what they share (counters, due sets, expiries) is written once per call.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.client import Pipeline

from relay.store import keys, scripts
from relay.store.control import NO_LIMITS, Held, Hold, Limits
from relay.store.records import (
    AttemptRecord,
    DeliveryRecord,
    DeliveryState,
    Event,
    TargetStat,
    attempt_log,
    reason_field,
    state_field,
    stored_reason,
)

#: Seconds a lease outlives the attempt's own timeout (clock skew, slow recording).
LEASE_MARGIN = 10.0
#: Most records one script call writes (a claim takes at most 256 deliveries); more are split
#: over several calls, so that no call holds Redis for long.
RECORD_BATCH = 256


@dataclass(frozen=True)
class StoredEvent:
    """An event and the delivery state of each of its targets."""

    event: Event
    deliveries: Mapping[str, DeliveryRecord]


def parse_stored(event_id: str, data: Mapping[bytes, bytes]) -> StoredEvent | None:
    """A StoredEvent from an HGETALL result, or None when the hash is gone (expired)."""
    if not data:
        return None
    event = Event.from_redis(event_id, data)
    deliveries = {t: DeliveryRecord.from_redis(t, data) for t in event.targets}
    return StoredEvent(event=event, deliveries=deliveries)


def load_events(conn: Redis, event_ids: Sequence[str]) -> dict[str, StoredEvent | None]:
    """Every event of a batch with its delivery states, in one round trip."""
    with conn.pipeline(transaction=False) as pipe:
        for event_id in event_ids:
            pipe.hgetall(keys.event_key(event_id))
        results: list[Any] = pipe.execute()
    return {eid: parse_stored(eid, data) for eid, data in zip(event_ids, results, strict=True)}


def duplicates(conn: Redis, events: Iterable[Event]) -> set[str]:
    """Ids of events whose dedupe key names another event: inbound duplicates."""
    candidates = [e for e in events if e.dedupe_key]
    if not candidates:
        return set()
    values = conn.mget([e.dedupe_key for e in candidates])
    # A missing key (window over) is not a duplicate: the first event may be long delivered.
    return {
        e.id
        for e, v in zip(candidates, values, strict=True)
        if v is not None and v != e.id.encode()
    }


def mark_duplicate(conn: Redis, event: Event, retention: float) -> None:
    """Mark every target of an inbound duplicate as such and release it (lua/release.lua: off
    the due sets, concurrency slots freed, the next delivery of a FIFO key due).

    Not counted here: the receiver counted it when it took it in (relay.receiver.intake).
    """
    fields = {state_field(t): str(DeliveryState.DUPLICATE) for t in event.targets}
    fields.update({reason_field(t): "inbound duplicate (dedupe)" for t in event.targets})
    now = repr(time.time())
    with conn.pipeline(transaction=True) as pipe:
        if fields:
            pipe.hset(keys.event_key(event.id), mapping=fields)  # type: ignore[arg-type]
        for target in event.targets:
            _release(pipe, event.id, target, now)
        pipe.expire(keys.event_key(event.id), int(retention))
        pipe.execute()


def drop_due(conn: Redis, pairs: Iterable[tuple[str, str]]) -> None:
    """Release (event id, target) deliveries claimed with nothing left to do for them: off their
    due sets, their concurrency slots freed, the next delivery of their FIFO key due."""
    now = repr(time.time())
    with conn.pipeline(transaction=False) as pipe:
        for event_id, target in pairs:
            _release(pipe, event_id, target, now)
        pipe.execute()


def _release(pipe: Pipeline, event_id: str, target: str, now: str) -> None:
    # EVAL, not EVALSHA: these paths are rare, and a MULTI must not fail on NOSCRIPT.
    pipe.eval(
        scripts.RELEASE,
        3,
        keys.due_key(target),
        keys.in_flight_key(target),
        keys.order_key(target),
        event_id,
        now,
    )


def due_again(conn: Redis, pairs: Iterable[tuple[str, str]], at: float) -> None:
    """Make claimed deliveries due again at `at` (they could not be started now); their
    concurrency slots are freed."""
    with conn.pipeline(transaction=False) as pipe:
        for event_id, target in pairs:
            pipe.zadd(keys.due_key(target), {event_id: at}, xx=True)
            pipe.zrem(keys.in_flight_key(target), event_id)
        pipe.execute()


@dataclass(frozen=True)
class Record:
    """Everything one state change writes."""

    event_id: str
    target: str
    attempt: int
    state: DeliveryState
    reason: str
    entry: AttemptRecord | None  # the attempt log record, None when no request was made
    counter: TargetStat | None  # DELIVERED, DEAD or GONE when the delivery ends
    failed: bool
    counts: bool  # whether an HTTP attempt was made (n moves on)
    due_at: float | None = None  # when the next attempt is due; None: the delivery is over


@dataclass(frozen=True)
class Wanted:
    """What one claim asks of a target: at most `limit` deliveries, leased until `lease_end`,
    within the target's rate and concurrency."""

    target: str
    limit: int
    lease_end: float
    limits: Limits = NO_LIMITS
    #: Keep its leases in the in-flight set even without a concurrency: a target with a
    #: breaker, whose closing makes its held deliveries due (relay.store.breakers).
    track: bool = False


@dataclass(frozen=True)
class Claimed:
    """What one claim took, per target, and the targets its limits held back."""

    ids: dict[str, list[str]]
    holds: dict[str, Hold]

    def rate_wait(self) -> float | None:
        """Seconds until a target held by its rate may start again (the soonest), or None."""
        waits = [h.wait for h in self.holds.values() if h.held is Held.RATE]
        return min(waits) if waits else None


class Store:
    """Delivery state writes on one Redis connection."""

    def __init__(self, conn: Redis, retention: float) -> None:
        self.conn = conn
        self.retention = int(retention)
        self._record = conn.register_script(scripts.RECORD)
        #: Targets whose claims took concurrency slots in this process: only their records
        #: free one (an attempt is always recorded by the process that claimed it).
        self._slotted: set[str] = set()
        self._claim = conn.register_script(scripts.CLAIM)
        self._probe = conn.register_script(scripts.PROBE)

    def claim(self, wanted: Sequence[Wanted], total: int, now: float) -> Claimed:
        """Take deliveries due now, up to each target's limit (and its rate and concurrency)
        and `total` in all.

        Targets are served in the order given; callers rotate it so none is starved.
        """
        wanted = [w for w in wanted if w.limit > 0]
        if not wanted or total <= 0:
            return Claimed({}, {})
        args: list[Any] = [repr(now), total]
        claim_keys: list[str] = []
        for w in wanted:
            args += [w.limit, repr(w.lease_end), *w.limits.claim_args(), "1" if w.track else "0"]
            if w.limits.concurrency or w.track:
                self._slotted.add(w.target)
            claim_keys += [
                keys.due_key(w.target),
                keys.rate_key(w.target),
                keys.in_flight_key(w.target),
            ]
        result = self._claim(keys=claim_keys, args=args)
        taken: dict[str, list[str]] = {}
        holds: dict[str, Hold] = {}
        for w, (ids, held, wait_ms) in zip(wanted, result, strict=True):
            if ids:
                taken[w.target] = [i.decode() for i in ids]
            if held:
                holds[w.target] = Hold(Held(int(held)), int(wait_ms) / 1000)
        return Claimed(taken, holds)

    def anything_due(self, targets: Sequence[tuple[str, Limits]], now: float) -> bool:
        """Whether any of those targets has a delivery due now that its limits let start."""
        if not targets:
            return False
        probe_keys: list[str] = []
        args: list[Any] = [repr(now)]
        for name, limits in targets:
            probe_keys += [keys.due_key(name), keys.rate_key(name), keys.in_flight_key(name)]
            args += ["1" if limits.interval else "0", limits.concurrency]
        return int(self._probe(keys=probe_keys, args=args)) > 0

    def due_targets(self) -> list[str]:
        """Names of every target that has a due set."""
        members: Iterable[bytes] = self.conn.smembers(keys.DUE_TARGETS)  # type: ignore[assignment]
        return sorted(t.decode() for t in members)

    def record(self, rec: Record, now: float) -> int:
        """Apply a state change if the attempt is still current: 1 applied, 0 stale, -1 no event."""
        return self.record_many([rec], now)[0]

    def record_many(self, recs: Sequence[Record], now: float) -> list[int]:
        """Apply many state changes in one script call (lua/record.lua), each only if its
        attempt is still current, in order: per record 1 applied, 0 stale, -1 no event."""
        results: list[int] = []
        for start in range(0, len(recs), RECORD_BATCH):
            chunk = recs[start : start + RECORD_BATCH]
            record_keys: list[str] = [keys.DEAD]
            args: list[Any] = [self.retention, repr(now)]
            for rec in chunk:
                record_keys += _record_keys(rec)
                args += self._record_args(rec)
            results += [int(r) for r in self._record(keys=record_keys, args=args)]
        return results

    def _record_args(self, rec: Record) -> list[Any]:
        return [
            rec.target,
            rec.attempt,
            str(rec.state),
            stored_reason(rec.state, rec.reason, rec.entry),
            rec.entry.to_field() if rec.entry is not None else b"",
            keys.dead_member(rec.event_id, rec.target),
            "" if rec.counter is None else str(rec.counter),
            "1" if rec.failed else "0",
            "1" if rec.counts else "0",
            "" if rec.due_at is None else repr(rec.due_at),
            "1" if rec.target in self._slotted else "0",
        ]


def _record_keys(rec: Record) -> list[str]:
    return [
        keys.event_key(rec.event_id),
        keys.attempts_key(rec.event_id),
        keys.target_stats_key(rec.target),
        keys.due_key(rec.target),
        keys.in_flight_key(rec.target),
        keys.order_key(rec.target),
    ]


def due_counts(
    conn: Redis, targets: Sequence[str], now: float
) -> tuple[Counter[str], Counter[str]]:
    """(due now, due later) per target, from the targets' due sets (exact, one round trip).

    Due later holds retries waiting for their time and attempts in flight (whose lease ends
    later); due now is what the next worker kick takes. Targets with none are left out.
    """
    with conn.pipeline(transaction=False) as pipe:
        for target in targets:
            pipe.zcount(keys.due_key(target), "-inf", now)
            pipe.zcount(keys.due_key(target), f"({now!r}", "+inf")
        counts = pipe.execute()
    now_due: Counter[str] = Counter()
    later: Counter[str] = Counter()
    for i, target in enumerate(targets):
        now_due[target], later[target] = int(counts[2 * i]), int(counts[2 * i + 1])
    return +now_due, +later


def read_attempts(conn: Redis, event_id: str) -> list[AttemptRecord]:
    """The attempt log of an event, oldest first: its hash's attempt fields, after the list of
    an event stored before 2026-12 (relay.store.attempts)."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.event_key(event_id))
        pipe.lrange(keys.attempts_key(event_id), 0, -1)
        data, listed = pipe.execute()
    return attempt_log(data, listed)


def attempt_records(conn: Redis, event_id: str) -> list[dict[str, Any]]:
    """The attempt log of an event as JSON objects (AttemptRecord.to_dict), oldest first (tests,
    tools)."""
    return [a.to_dict() for a in read_attempts(conn, event_id)]
