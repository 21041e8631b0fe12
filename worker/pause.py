"""Pausing and resuming a target: a 410 from a `pause_on_gone` target, or an operator.

The record itself (`relay.store.pauses.Pause`, under `relay:paused:{target}`) and its reading live
in relay/, where the operator views read it too. A paused target's deliveries are held, not
attempted: kicks do not claim from its due set, so they keep their due times and their attempt
budget, and the state stays pending or retrying. Resuming deletes the key; the workers' pollers then
find the held deliveries due and kick within a poll interval.
"""

from __future__ import annotations

import time

from redis import Redis

from relay.store import keys
from relay.store.pauses import Pause


def pause_target(
    conn: Redis, target: str, reason: str, event_id: str = "", now: float | None = None
) -> bool:
    """Pause a target; False when it was already paused (the first reason is kept)."""
    pause = Pause(target, time.time() if now is None else now, reason, event_id)
    return bool(conn.set(keys.paused_key(target), pause.to_json(), nx=True))


def resume_target(conn: Redis, target: str) -> bool:
    """Resume a target; False when it was not paused."""
    return bool(conn.delete(keys.paused_key(target)))
