"""What the operator commands read and change in Redis: status, dead letters, replay.

Functions take a sync `redis.Redis` and return frozen values; `relay.cli.deliveries` renders them.
The keys and states are those of `relay.store.keys`. Reading is side-effect free (RQ registries are
read without their cleanup); only `replay_delivery` writes, in one MULTI/EXEC guarded by WATCH.
"""

from __future__ import annotations

import fnmatch
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from redis import Redis
from redis.exceptions import WatchError
from rq import Queue
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.worker import Worker

from relay.core import constants
from relay.core.states import DEAD_LETTER_STATES
from relay.store import keys
from relay.store.pauses import Pause, paused
from relay.store.queue import kick, make_queue
from relay.store.records import (
    AttemptRecord,
    DeliveryRecord,
    DeliveryState,
    Event,
    SourceStat,
    TargetStat,
    attempts_field,
    before_replay_field,
    read_state,
    reason_field,
    state_field,
    targets_of,
)

#: Redis round trips stay few: ids are read and events inspected this many at a time.
_CHUNK = 500

#: A concurrent change to the event between our read and our write is retried this often.
_WATCH_RETRIES = 5


# ---------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True)
class DeadLetter:
    """One delivery in the dead-letter store, with what its event hash still says about it."""

    event_id: str
    target: str
    dead_at: float
    state: str  # dead | gone ("" when the event has expired)
    source: str
    type: str | None
    received_at: float | None
    attempts: int
    reason: str
    expired: bool  # the event (and its body) is gone: it cannot be replayed

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (times as Unix seconds)."""
        return asdict(self)


#: One delivery attempt as the worker recorded it (the store's codec reads it).
Attempt = AttemptRecord


@dataclass(frozen=True)
class Delivery:
    """Where one event stands with one target."""

    target: str
    state: str  # a DeliveryState, "" once the event has expired
    attempts: int
    reason: str
    before_replay: int  # attempts made before the latest replay (0: never replayed)
    dead_at: float | None  # when it entered the dead-letter store, if it is there

    @property
    def replayed_after(self) -> int:
        """`before_replay` under the name the operator's JSON output gives it."""
        return self.before_replay

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (`before_replay` keeps its output name, `replayed_after`)."""
        data = asdict(self)
        data["replayed_after"] = data.pop("before_replay")
        return data


@dataclass(frozen=True)
class EventDetail:
    """An event with its deliveries and attempts; `event` is None once it has expired."""

    event_id: str
    event: Event | None
    deliveries: tuple[Delivery, ...]
    attempts: tuple[Attempt, ...]


@dataclass(frozen=True)
class TargetStatus:
    """Delivery figures of one target: live ones from RQ and Redis, counters since the start."""

    name: str
    configured: bool  # named in routes.toml (False: seen only in Redis)
    pending: int  # deliveries queued or in flight
    scheduled: int  # deliveries waiting for a scheduled retry
    dead_letters: int  # deliveries in the dead-letter store now
    delivered: int = 0
    dead: int = 0
    gone: int = 0
    attempts: int = 0
    failures: int = 0
    replayed: int = 0
    paused: Pause | None = None  # deliveries are held (relay pause, or a 410 with pause_on_gone)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping; `paused` is null or {reason, since (ISO), at, event_id}."""
        return asdict(self) | {"paused": None if self.paused is None else self.paused.to_view()}


@dataclass(frozen=True)
class SourceStatus:
    """Counters of one source since the start."""

    name: str
    received: int = 0
    duplicates: int = 0
    unrouted: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return asdict(self)


@dataclass(frozen=True)
class QueueStatus:
    """Job counts of the RQ queue and its registries."""

    name: str
    queued: int
    started: int
    scheduled: int
    failed: int
    deferred: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return asdict(self)


@dataclass(frozen=True)
class Status:
    """Everything `relay status` shows."""

    at: float
    queue: QueueStatus
    workers: int
    targets: tuple[TargetStatus, ...]
    sources: tuple[SourceStatus, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (each target's as TargetStatus.to_json has it)."""
        return asdict(self) | {"targets": [t.to_json() for t in self.targets]}


@dataclass(frozen=True)
class ReplayResult:
    """What happened to one delivery asked to be replayed."""

    event_id: str
    target: str
    outcome: str  # replayed | would_replay | expired | not_dead | unknown_target
    state: str  # the state found before the replay
    attempt: int = 0  # the attempt number the replayed delivery starts at
    message: str = ""

    @property
    def ok(self) -> bool:
        """Whether the delivery was (or, in a dry run, would be) replayed."""
        return self.outcome in ("replayed", "would_replay")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return asdict(self)


@dataclass(frozen=True)
class DeadFilter:
    """Which dead letters an operator means; every field narrows the selection."""

    target: str | None = None
    source: str | None = None
    event_type: str | None = None  # glob, as in routes.toml
    since: float | None = None  # Unix seconds: went dead at or after
    limit: int | None = None  # newest first; None for all
    event_ids: tuple[str, ...] = field(default=())


# ---------------------------------------------------------------------------------------------
# Small pure helpers


def _text(value: object) -> str:
    """A Redis reply as text ("" when absent)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _int(value: object) -> int:
    """A Redis counter reply as an int (0 when absent or not a number)."""
    try:
        return int(_text(value) or 0)
    except ValueError:
        return 0


# ---------------------------------------------------------------------------------------------
# Dead letters


def iter_dead(conn: Redis, since: float | None = None) -> Iterator[tuple[str, str, float]]:
    """(event id, target, dead at) of the dead-letter store, newest first, read in chunks."""
    low: float | str = since if since is not None else "-inf"
    offset = 0
    while True:
        chunk = conn.zrevrangebyscore(
            keys.DEAD, "+inf", low, start=offset, num=_CHUNK, withscores=True
        )
        for member, score in cast(list[tuple[bytes, float]], chunk):
            event_id, target = keys.split_dead_member(_text(member))
            yield event_id, target, float(score)
        if len(chunk) < _CHUNK:
            return
        offset += len(chunk)


def _dead_letters(conn: Redis, entries: Sequence[tuple[str, str, float]]) -> list[DeadLetter]:
    """Join dead-letter entries with the fields of their event hashes, in one round trip."""
    with conn.pipeline(transaction=False) as pipe:
        for event_id, target, _ in entries:
            pipe.hmget(
                keys.event_key(event_id),
                [
                    "source",
                    "type",
                    "received",
                    state_field(target),
                    attempts_field(target),
                    reason_field(target),
                ],
            )
        rows = pipe.execute()
    letters = []
    for (event_id, target, dead_at), row in zip(entries, rows, strict=True):
        source, etype, received, state, attempts, reason = row
        expired = source is None and received is None
        letters.append(
            DeadLetter(
                event_id=event_id,
                target=target,
                dead_at=dead_at,
                state=_text(state),
                source=_text(source),
                type=_text(etype) or None,
                received_at=float(received) if received else None,
                attempts=_int(attempts),
                reason=_text(reason),
                expired=expired,
            )
        )
    return letters


def _wanted(letter: DeadLetter, selection: DeadFilter) -> bool:
    if selection.source is not None and letter.source != selection.source:
        return False
    return selection.event_type is None or fnmatch.fnmatchcase(
        letter.type or "", selection.event_type
    )


def list_dead(conn: Redis, selection: DeadFilter = DeadFilter()) -> list[DeadLetter]:
    """Dead letters matching `selection`, newest first."""
    found: list[DeadLetter] = []
    wanted_ids = set(selection.event_ids)
    batch: list[tuple[str, str, float]] = []

    def flush() -> bool:
        for letter in _dead_letters(conn, batch):
            if _wanted(letter, selection):
                found.append(letter)
                if selection.limit is not None and len(found) >= selection.limit:
                    return True
        batch.clear()
        return False

    seen: set[tuple[str, str]] = set()
    for event_id, target, dead_at in iter_dead(conn, selection.since):
        if selection.target is not None and target != selection.target:
            continue
        # Offsets shift when deliveries die while we read: never return one twice.
        if (event_id, target) in seen:
            continue
        seen.add((event_id, target))
        if wanted_ids and event_id not in wanted_ids:
            continue
        batch.append((event_id, target, dead_at))
        if len(batch) >= _CHUNK and flush():
            return found
    if batch:
        flush()
    return found


def dead_count_by_target(conn: Redis) -> Counter[str]:
    """How many dead letters the store holds now, per target."""
    counts: Counter[str] = Counter()
    for member, _ in conn.zscan_iter(keys.DEAD, count=1000):
        counts[keys.split_dead_member(_text(member))[1]] += 1
    return counts


def _delivery(target: str, data: Mapping[bytes, bytes], dead_at: float | None) -> Delivery:
    """One target's delivery from the event hash ({} once the event has expired)."""
    stored = DeliveryRecord.from_redis(target, data)
    return Delivery(
        target=target,
        state=str(stored.state) if data else "",
        attempts=stored.attempts,
        reason=stored.reason,
        before_replay=stored.before_replay,
        dead_at=dead_at,
    )


def show_event(conn: Redis, event_id: str, target: str | None = None) -> EventDetail | None:
    """An event with its deliveries and attempts (of one target if given); None if unknown."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.event_key(event_id))
        pipe.lrange(keys.attempts_key(event_id), 0, -1)
        data, raw_attempts = pipe.execute()
    dead_at = {
        t: score
        for e, t, score in (
            (*keys.split_dead_member(_text(m)), s)
            for m, s in conn.zscan_iter(keys.DEAD, match=f"{event_id}:*", count=1000)
        )
        if e == event_id
    }
    if not data and not dead_at and not raw_attempts:
        return None
    event = Event.from_redis(event_id, data) if data else None
    names = list(event.targets) if event else []
    names += [t for t in sorted(dead_at) if t not in names]
    if target is not None:
        names = [t for t in names if t == target]
    deliveries = tuple(_delivery(name, data, dead_at.get(name)) for name in names)
    attempts = tuple(
        a
        for a in (AttemptRecord.from_redis(raw) for raw in raw_attempts)
        if target is None or a.target == target
    )
    return EventDetail(event_id=event_id, event=event, deliveries=deliveries, attempts=attempts)


# ---------------------------------------------------------------------------------------------
# Status


def _counters(conn: Redis, pattern_prefix: str) -> dict[str, dict[str, int]]:
    names = sorted(
        _text(k)[len(pattern_prefix) :] for k in conn.scan_iter(match=f"{pattern_prefix}*")
    )
    with conn.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(pattern_prefix + name)
        rows = pipe.execute()
    return {
        name: {_text(k): _int(v) for k, v in row.items()}
        for name, row in zip(names, rows, strict=True)
    }


def _due_counts(
    conn: Redis, targets: Sequence[str], now: float
) -> tuple[Counter[str], Counter[str]]:
    """(due now, due later) per target, from the targets' due sets (exact, one round trip).

    Due later holds retries waiting for their time and attempts in flight (whose lease ends
    later); due now is what the next worker kick takes.
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


def collect_status(
    conn: Redis,
    configured_targets: Sequence[str] = (),
    queue_name: str = constants.QUEUE_NAME,
) -> Status:
    """Per-target figures, per-source counters, queue depth and worker count, read-only."""
    queue = make_queue(conn, queue_name)
    started = StartedJobRegistry(queue=queue)
    scheduled = ScheduledJobRegistry(queue=queue)  # type: ignore[no-untyped-call]
    failed = FailedJobRegistry(queue=queue)
    deferred = DeferredJobRegistry(queue=queue)
    queue_status = QueueStatus(
        name=queue.name,
        queued=queue.count,
        started=started.get_job_count(cleanup=False),
        scheduled=scheduled.get_job_count(cleanup=False),
        failed=failed.get_job_count(cleanup=False),
        deferred=deferred.get_job_count(cleanup=False),
    )
    # Pending = due now; scheduled = due later (a retry time, or an attempt in flight whose
    # lease ends later). Exact: read from the targets' due sets.
    due_targets = sorted(_text(t) for t in conn.smembers(keys.DUE_TARGETS))
    pending, waiting = _due_counts(conn, due_targets, time.time())
    dead_now = dead_count_by_target(conn)
    target_counters = _counters(conn, keys.target_stats_key(""))
    source_counters = _counters(conn, keys.source_stats_key(""))

    configured = list(dict.fromkeys(configured_targets))
    seen = set(target_counters) | set(pending) | set(waiting) | set(dead_now)
    names = configured + sorted(seen - set(configured))
    pauses = paused(conn, names)
    targets = tuple(
        TargetStatus(
            name=name,
            configured=name in configured,
            pending=pending[name],
            scheduled=waiting[name],
            dead_letters=dead_now[name],
            **{k: target_counters.get(name, {}).get(k, 0) for k in TargetStat},
            paused=pauses.get(name),
        )
        for name in names
    )
    sources = tuple(
        SourceStatus(
            name=name,
            **{k: counters.get(k, 0) for k in SourceStat},
        )
        for name, counters in source_counters.items()
    )
    return Status(
        at=time.time(),
        queue=queue_status,
        workers=Worker.count(queue=queue),
        targets=targets,
        sources=sources,
    )


# ---------------------------------------------------------------------------------------------
# Replay


def replay_delivery(
    conn: Redis,
    event_id: str,
    target: str,
    *,
    retention: float = float(constants.DEFAULT_RETENTION),
    dry_run: bool = False,
    queue: Queue | None = None,
) -> ReplayResult:
    """Put one dead delivery back on the queue at attempt n+1, atomically; same webhook-id."""
    queue = queue if queue is not None else make_queue(conn)
    key = keys.event_key(event_id)
    fields = ["targets", state_field(target), attempts_field(target)]
    with conn.pipeline() as pipe:
        for _ in range(_WATCH_RETRIES):
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                has_body = bool(pipe.hexists(key, "body"))
                raw_targets, raw_state, raw_attempts = cast(
                    list[bytes | None], pipe.hmget(key, fields)
                )
                state = _text(raw_state)
                refused = _refusal(event_id, target, has_body, raw_targets, state, retention)
                if refused is not None:
                    pipe.unwatch()
                    return refused
                attempts = _int(raw_attempts)
                if dry_run:
                    pipe.unwatch()
                    return ReplayResult(
                        event_id, target, "would_replay", state, attempt=attempts + 1
                    )
                pipe.multi()
                pipe.hset(
                    key,
                    mapping={
                        before_replay_field(target): attempts,
                        state_field(target): str(DeliveryState.PENDING),
                        reason_field(target): "",
                    },
                )
                pipe.zrem(keys.DEAD, keys.dead_member(event_id, target))
                pipe.hincrby(keys.target_stats_key(target), TargetStat.REPLAYED, 1)
                # A replay near the end of retention must not lose its body mid-retry: the
                # event and its log live a full retention period from the replay (GT: only
                # ever lengthened, and never on a key without expiry).
                pipe.expire(key, int(retention), gt=True)
                pipe.expire(keys.attempts_key(event_id), int(retention), gt=True)
                # Due at once, and a kick so that a worker takes it now.
                pipe.zadd(keys.due_key(target), {event_id: time.time()})
                pipe.sadd(keys.DUE_TARGETS, target)
                kick(queue, pipeline=pipe)
                pipe.execute()
            except WatchError:
                continue  # the worker or another replay changed the event: read it again
            return ReplayResult(event_id, target, "replayed", state, attempt=attempts + 1)
    return ReplayResult(
        event_id, target, "not_dead", "", message="the event kept changing; try again"
    )


def _refusal(
    event_id: str,
    target: str,
    has_body: bool,
    raw_targets: bytes | None,
    state: str,
    retention: float,
) -> ReplayResult | None:
    """Why a delivery cannot be replayed, or None when it can."""
    if not has_body:
        days = retention / 86400
        return ReplayResult(
            event_id,
            target,
            "expired",
            state,
            message=(
                f"event {event_id} has expired: its body is no longer kept (retention "
                f"{days:g} days), so it cannot be replayed"
            ),
        )
    if target not in targets_of(raw_targets):
        return ReplayResult(
            event_id,
            target,
            "unknown_target",
            state,
            message=f"event {event_id} was never routed to target {target!r}",
        )
    if state not in DEAD_LETTER_STATES:
        return ReplayResult(
            event_id,
            target,
            "not_dead",
            state,
            message=f"delivery of {event_id} to {target} is {state or 'unknown'}, not dead",
        )
    return None


def delivery_states(conn: Redis, event_id: str) -> dict[str, str]:
    """Each target of an event with its delivery state, in route order; {} when unknown."""
    data: Mapping[bytes, bytes] = conn.hgetall(keys.event_key(event_id))  # type: ignore[assignment]
    return {
        t: str(read_state(data.get(state_field(t).encode())))
        for t in targets_of(data.get(b"targets"))
    }


def dead_targets_of(conn: Redis, event_id: str) -> list[str]:
    """Targets of one event whose delivery is dead or gone (or in the store, if it expired)."""
    data: Mapping[bytes, bytes] = conn.hgetall(keys.event_key(event_id))  # type: ignore[assignment]
    if data:
        return [
            t
            for t in targets_of(data.get(b"targets"))
            if read_state(data.get(state_field(t).encode())).dead_letter
        ]
    # Expired: the store may still name its deliveries, which replay then reports as expired.
    return sorted(
        t
        for e, t in (
            keys.split_dead_member(_text(m))
            for m, _ in conn.zscan_iter(keys.DEAD, match=f"{event_id}:*", count=1000)
        )
        if e == event_id
    )
