"""Replaying many deliveries: one event's dead ones, or a selection, with progress and a summary.

`relay replay` and the management API both replay through here, so an event id, a filter or a
dry run gives the same results, worded the same, under either. A dry run judges each delivery
on its own (relay.ops.deliveries.replay); a real one writes them in batches, each delivery
replayed only if it is still as read, with a kick per batch at most
(relay.ops.deliveries.batches).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import structlog
from redis import Redis

from relay.core import constants
from relay.ops.deliveries.batches import replay_deliveries
from relay.ops.deliveries.dead_letters import dead_targets_of
from relay.ops.deliveries.detail import delivery_states
from relay.ops.deliveries.replay import ReplayResult, replay_delivery
from relay.store import keys

#: (event id, target): one delivery.
Pair = tuple[str, str]

#: Called after each delivery with how many are done (a progress bar, a job's record).
Progress = Callable[[int], None]


def nothing_to_replay(conn: Redis, event_id: str) -> ReplayResult:
    """Why an event named by id has no dead delivery (targetless result, message says why)."""
    if states := delivery_states(conn, event_id):
        listed = ", ".join(f"{t}: {state}" for t, state in states.items())
        message = f"event {event_id} has no dead delivery to replay ({listed})"
        return ReplayResult(event_id, "", "not_dead", "", message=message)
    if conn.exists(keys.event_key(event_id)):
        message = f"event {event_id} has no deliveries to replay (no route matched it)"
        return ReplayResult(event_id, "", "not_dead", "", message=message)
    message = f"no event {event_id} (unknown, or expired and no longer kept)"
    return ReplayResult(event_id, "", "expired", "", message=message)


def event_pairs(
    conn: Redis, event_ids: Iterable[str], target: str | None = None
) -> tuple[list[Pair], list[ReplayResult]]:
    """The deliveries to replay for events named by id (each dead one, or only `target`),
    and a result for each event with nothing to replay."""
    pairs: list[Pair] = []
    nothing: list[ReplayResult] = []
    for event_id in dict.fromkeys(event_ids):
        targets = [target] if target else dead_targets_of(conn, event_id)
        if targets:
            pairs += [(event_id, t) for t in targets]
        else:
            nothing.append(nothing_to_replay(conn, event_id))
    return pairs, nothing


def replay_pairs(
    conn: Redis,
    pairs: Sequence[Pair],
    *,
    retention: float = float(constants.DEFAULT_RETENTION),
    dry_run: bool = False,
    progress: Progress | None = None,
) -> list[ReplayResult]:
    """Replay each delivery (or, in a dry run, say whether it would be), in order."""
    # Bound here, not at import: structlog caches a logger with the stream of its first use.
    log = structlog.get_logger("relay.ops")
    if not dry_run:
        results = replay_deliveries(conn, pairs, retention=retention, progress=progress)
        for result in results:
            if result.outcome == "replayed":
                log.debug(
                    "replayed",
                    event_id=result.event_id,
                    target=result.target,
                    attempt=result.attempt,
                )
        return results
    results = []
    for done, (event_id, target) in enumerate(pairs, start=1):
        results.append(replay_delivery(conn, event_id, target, retention=retention, dry_run=True))
        if progress is not None:
            progress(done)
    return results


def done_key(dry_run: bool) -> str:
    """What the count of good results is called: `would_replay` in a dry run, else `replayed`."""
    return "would_replay" if dry_run else "replayed"


def replay_summary(dry_run: bool, selected: int, results: Sequence[ReplayResult]) -> dict[str, Any]:
    """The counts and every result, as `relay replay --json` and the API answer them."""
    ok = sum(r.ok for r in results)
    return {
        "dry_run": dry_run,
        "selected": selected,
        done_key(dry_run): ok,
        "failed": len(results) - ok,
        "results": [r.to_json() for r in results],
    }
