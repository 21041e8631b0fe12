"""Replay: put one dead delivery back on the queue, atomically, keeping its webhook-id.

The only writer among the operator reads: one MULTI/EXEC guarded by WATCH on the event hash, so a
worker or another replay that changes the event in between makes us read it again. A delivery to
an ordered target (FIFO per key) joins the end of its key's queue: it goes after what is already
waiting for its key (relay.store.control).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, cast

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError
from rq import Queue

from relay.core import constants
from relay.core.states import DEAD_LETTER_STATES
from relay.store import keys, scripts
from relay.store.queue import kick, make_queue
from relay.store.records import (
    DeliveryState,
    TargetStat,
    attempts_field,
    before_replay_field,
    order_field,
    read_int,
    read_text,
    reason_field,
    state_field,
    targets_of,
)

#: A concurrent change to the event between our read and our write is retried this often.
WATCH_RETRIES = 5
#: The event field whose presence says the event can still be delivered.
BODY_FIELD = "body"


def replay_fields(target: str) -> list[str]:
    """The event hash's fields a replay reads: targets, the state, the attempts, the FIFO key."""
    return ["targets", state_field(target), attempts_field(target), order_field(target)]


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
    fields = replay_fields(target)
    with conn.pipeline() as pipe:
        for _ in range(WATCH_RETRIES):
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                has_body = bool(pipe.hexists(key, BODY_FIELD))
                raw_targets, raw_state, raw_attempts, raw_order = cast(
                    list[bytes | None], pipe.hmget(key, fields)
                )
                state = read_text(raw_state)
                refused = refusal(event_id, target, has_body, raw_targets, state, retention)
                if refused is not None:
                    pipe.unwatch()
                    return refused
                attempts = read_int(raw_attempts)
                if dry_run:
                    pipe.unwatch()
                    return ReplayResult(
                        event_id, target, "would_replay", state, attempt=attempts + 1
                    )
                order = read_text(raw_order)
                _write_replay(pipe, queue, event_id, target, attempts, retention, order)
            except WatchError:
                continue  # the worker or another replay changed the event: read it again
            return ReplayResult(event_id, target, "replayed", state, attempt=attempts + 1)
    return ReplayResult(
        event_id, target, "not_dead", "", message="the event kept changing; try again"
    )


def _write_replay(
    pipe: Pipeline,
    queue: Queue,
    event_id: str,
    target: str,
    attempts: int,
    retention: float,
    order: str,
) -> None:
    """The replay's writes, in one MULTI/EXEC on the watching pipeline."""
    key = keys.event_key(event_id)
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
    # A replay near the end of retention must not lose its body mid-retry: the event, its log
    # and its enrichment record (relay.store.enrichment) live a full retention period from the
    # replay (GT: only ever lengthened, and never on a key without expiry).
    pipe.expire(key, int(retention), gt=True)
    pipe.expire(keys.attempts_key(event_id), int(retention), gt=True)
    pipe.expire(keys.enrichment_key(event_id), int(retention), gt=True)
    # Due at once (or, FIFO per key, once what waits for its key is over), and a kick so
    # that a worker takes it now. EVAL, not EVALSHA: a MULTI must not fail on NOSCRIPT.
    if order:
        args = (event_id, order, repr(time.time()))
        pipe.eval(scripts.REQUEUE, 2, keys.order_key(target), keys.due_key(target), *args)
    else:
        pipe.zadd(keys.due_key(target), {event_id: time.time()})
    pipe.sadd(keys.DUE_TARGETS, target)
    kick(queue, pipeline=pipe)
    pipe.execute()


def refusal(
    event_id: str,
    target: str,
    has_body: bool,
    raw_targets: bytes | None,
    state: str,
    retention: float,
) -> ReplayResult | None:
    """Why a delivery cannot be replayed, or None when it can (relay.ops.deliveries.bulk too)."""
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
