"""Bulk replay: many dead deliveries put back in batches, with a kick per batch at most.

`replay_delivery` (relay.ops.deliveries.replay) costs a WATCH, a MULTI/EXEC and an RQ kick per
delivery: 20,000 dead letters made 20,000 RQ jobs, and the workers spent a fifth of their time
in RQ's job handling instead of delivering. Here each batch of REPLAY_BATCH deliveries is read in
one pipeline, judged by the same rules (`refusal`), and written by one script (lua/replay.lua)
that replays each delivery only if its state and attempt counter are still what was read: the
optimistic check that WATCH makes for one delivery, without a round trip per delivery. One kick
goes with a batch's writes, in the same MULTI, unless kicks are already waiting; the workers'
kick then loops while deliveries are due, as it does for fresh events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis
from rq import Queue

from relay.core import constants
from relay.ops.deliveries.replay import (
    BODY_FIELD,
    WATCH_RETRIES,
    ReplayResult,
    refusal,
    replay_fields,
)
from relay.store import keys, scripts
from relay.store.queue import KICKS_ENOUGH, kick, make_queue
from relay.store.records import read_int, read_text

#: Deliveries read and written per round trip (one script call holds Redis about 5 ms).
REPLAY_BATCH = 500


@dataclass(frozen=True)
class _Plan:
    """A delivery found dead: what the script checks and writes."""

    event_id: str
    target: str
    state: str
    raw_attempts: str  # the counter as read ("" absent): the script checks it is unchanged
    order: str  # FIFO key digest, "" unordered

    @property
    def attempts(self) -> int:
        return read_int(self.raw_attempts)


def replay_deliveries(
    conn: Redis,
    pairs: Sequence[tuple[str, str]],
    *,
    retention: float = float(constants.DEFAULT_RETENTION),
    queue: Queue | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[ReplayResult]:
    """Replay these (event id, target) dead deliveries in batches: one result per pair, in
    order, as `replay_delivery` would give. `progress` is told how many are done after each."""
    queue = queue if queue is not None else make_queue(conn)
    unique = list(dict.fromkeys(pairs))
    found: dict[tuple[str, str], ReplayResult] = {}
    for start in range(0, len(unique), REPLAY_BATCH):
        found.update(_replay_batch(conn, queue, unique[start : start + REPLAY_BATCH], retention))
        if progress is not None:
            progress(min(start + REPLAY_BATCH, len(unique)))
    return [found[pair] for pair in pairs]


def _replay_batch(
    conn: Redis, queue: Queue, pairs: Sequence[tuple[str, str]], retention: float
) -> dict[tuple[str, str], ReplayResult]:
    """Read, judge and write one batch; pairs changed meanwhile are read again."""
    results: dict[tuple[str, str], ReplayResult] = {}
    left = list(pairs)
    for _ in range(WATCH_RETRIES):
        if not left:
            break
        plans, refused, kicks = _read(conn, queue, left, retention)
        results.update(refused)
        applied = _write(conn, queue, plans, retention, kicks) if plans else []
        left = []
        for plan, done in zip(plans, applied, strict=True):
            pair = (plan.event_id, plan.target)
            if done:
                results[pair] = ReplayResult(*pair, "replayed", plan.state, plan.attempts + 1)
            else:
                left.append(pair)  # a worker or another replay changed it: read it again
    for pair in left:
        message = "the event kept changing; try again"
        results[pair] = ReplayResult(*pair, "not_dead", "", message=message)
    return results


def _read(
    conn: Redis, queue: Queue, pairs: Sequence[tuple[str, str]], retention: float
) -> tuple[list[_Plan], dict[tuple[str, str], ReplayResult], int]:
    """(deliveries to replay, refusals, kicks waiting) from one pipelined read."""
    with conn.pipeline(transaction=False) as pipe:
        for event_id, target in pairs:
            pipe.hexists(keys.event_key(event_id), BODY_FIELD)
            pipe.hmget(keys.event_key(event_id), replay_fields(target))
        pipe.llen(queue.key)
        replies: list[Any] = pipe.execute()
    plans: list[_Plan] = []
    refused: dict[tuple[str, str], ReplayResult] = {}
    for i, (event_id, target) in enumerate(pairs):
        has_body, (raw_targets, raw_state, raw_attempts, raw_order) = replies[2 * i : 2 * i + 2]
        state = read_text(raw_state)
        why = refusal(event_id, target, bool(has_body), raw_targets, state, retention)
        if why is not None:
            refused[(event_id, target)] = why
        else:
            plans.append(
                _Plan(event_id, target, state, read_text(raw_attempts), read_text(raw_order))
            )
    return plans, refused, int(replies[-1])


def _write(
    conn: Redis, queue: Queue, plans: Sequence[_Plan], retention: float, kicks: int
) -> list[bool]:
    """One script call for the batch, and a kick in the same MULTI unless enough wait."""
    script_keys: list[str] = [keys.DEAD, keys.DUE_TARGETS]
    args: list[Any] = [int(retention), repr(time.time())]
    for p in plans:
        script_keys += [
            keys.event_key(p.event_id),
            keys.attempts_key(p.event_id),
            keys.enrichment_key(p.event_id),
            keys.target_stats_key(p.target),
            keys.due_key(p.target),
            keys.order_key(p.target),
        ]
        args += [p.event_id, p.target, p.state, p.raw_attempts, p.attempts, p.order]
        args.append(keys.dead_member(p.event_id, p.target))
    with conn.pipeline(transaction=True) as pipe:
        # EVAL, not EVALSHA: a MULTI must not fail on NOSCRIPT.
        pipe.eval(scripts.REPLAY, len(script_keys), *script_keys, *args)
        if kicks < KICKS_ENOUGH:
            kick(queue, pipeline=pipe)
        replies: list[Any] = pipe.execute()
    return [int(r) == 1 for r in replies[0]]
