"""Rate, concurrency and FIFO per key in Redis: the records, what a claim enforces, the reads.

The settings are relay.config.control's; here is how they hold across every worker and host:

- rate (relay:rate:{t}, a STRING): the Unix time from which the target's next delivery may
  start, GCRA's "theoretical arrival time" less its tolerance. The claim (lua/claim.lua) lets n
  start when that time is past, n bounded by how many intervals have passed (at most the
  tolerance's worth at once), and moves the time on by n intervals, in the same atomic step as
  the take. A delivery held back stays due and uses no attempt.
- concurrency (relay:inflight:{t}, a ZSET): event id -> lease end of every attempt in flight. The
  claim takes at most N minus those in flight; recording the attempt (lua/record.lua) frees its
  slot, and a slot whose worker died comes back when its lease ends, like the delivery itself.
- order (relay:order:{t}, a HASH, and one LIST per key, relay:order:{t}:{digest}): the intake
  commit appends each ordered delivery to its key's queue; only a queue's head is in the due
  set, so claims need no change. When the head's delivery is over (delivered, dead, gone, a
  duplicate, its event expired) the next one becomes due (lua/order.lua). A retrying head holds
  back its own key only. A replay joins the end of its key's queue.

Targets without these settings cost nothing extra: the claim reads no key for them, and the
scripts on the per-event path only look at fields they already read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from redis import Redis

from relay.store import keys
from relay.store.records import read_int, read_text

__all__ = [
    "NO_LIMITS",
    "WAITING_FIELD",
    "ControlReading",
    "Held",
    "Hold",
    "Limits",
    "held_counts",
    "read_control",
]

#: The field of relay:order:{t} counting the deliveries waiting behind a head (event ids
#: never start with '#').
WAITING_FIELD = "#waiting"


class Held(IntEnum):
    """Why a claim let nothing start for a target that had deliveries due (claim.lua's codes)."""

    NONE = 0
    RATE = 1
    CONCURRENCY = 2


@dataclass(frozen=True)
class Hold:
    """A target a claim held back, and when its rate allows the next start."""

    held: Held
    wait: float  # seconds until the rate allows a start (0: unknown, for concurrency)


@dataclass(frozen=True)
class Limits:
    """What a claim enforces for one target (0 for a limit the target does not have)."""

    interval: float = 0.0  # seconds between two starts
    tolerance: float = 0.0  # how early a start may come to make up for a late one
    concurrency: int = 0

    def claim_args(self) -> tuple[str, str, int]:
        """This target's interval, tolerance and concurrency as claim.lua takes them."""
        return repr(self.interval), repr(self.tolerance), self.concurrency


NO_LIMITS = Limits()


@dataclass(frozen=True)
class ControlReading:
    """The live state of a target's delivery control, as Redis holds it."""

    in_flight: int  # attempts in flight (targets with concurrency; 0 otherwise)
    next_start: float | None  # when the rate allows the next start (None: no rate record)
    waiting: int  # deliveries waiting behind the head of their FIFO key
    keys: int  # FIFO keys with a delivery under way or due


def read_control(conn: Redis, targets: Sequence[str], now: float) -> dict[str, ControlReading]:
    """The control state of those targets, in one round trip (four reads per target)."""
    with conn.pipeline(transaction=False) as pipe:
        for target in targets:
            pipe.zcount(keys.in_flight_key(target), f"({now!r}", "+inf")
            pipe.get(keys.rate_key(target))
            pipe.hget(keys.order_key(target), WAITING_FIELD)
            pipe.hlen(keys.order_key(target))
        rows: list[Any] = pipe.execute()
    found = {}
    for i, target in enumerate(targets):
        in_flight, raw_next, waiting, fields = rows[4 * i : 4 * i + 4]
        waiting_n = read_int(waiting)
        try:
            next_start: float | None = float(read_text(raw_next)) if raw_next else None
        except ValueError:
            next_start = None
        found[target] = ControlReading(
            in_flight=int(in_flight),
            next_start=next_start,
            waiting=max(0, waiting_n),
            keys=max(0, int(fields) - (1 if waiting is not None else 0)),
        )
    return found


def held_counts(
    limits: Limits, reading: ControlReading, due_now: int, now: float
) -> Mapping[str, int]:
    """Deliveries held back, by what holds them: `rate`, `concurrency`, `order`.

    Due now to a target whose slots are all taken counts as held by concurrency; else, due now
    to a target with a rate whose next start is not allowed yet, as held by rate. Waiting behind
    the head of their key counts as held by order (whatever the settings say now: a queue
    filled before `order` was removed still drains in order).
    """
    by_concurrency = by_rate = 0
    if due_now:
        if limits.concurrency and reading.in_flight >= limits.concurrency:
            by_concurrency = due_now
        elif limits.interval and (reading.next_start or 0.0) > now:
            by_rate = due_now
    return {"rate": by_rate, "concurrency": by_concurrency, "order": reading.waiting}
