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

What the workers enforce is published in relay:controls (target -> ControlSettings as JSON) by
every worker when it starts and when its routes are reloaded, so `relay status`, the status page
and the metrics show the limits in force, read from Redis like pauses and breakers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any

import orjson
from redis import Redis

from relay.store import keys
from relay.store.records import read_int, read_text

__all__ = [
    "NO_LIMITS",
    "WAITING_FIELD",
    "ControlReading",
    "ControlSettings",
    "ControlView",
    "Held",
    "Hold",
    "Limits",
    "held_counts",
    "publish_settings",
    "read_control",
    "read_settings",
    "read_views",
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


@dataclass(frozen=True)
class ControlSettings:
    """A target's rate, concurrency and order as the workers enforce them (relay:controls)."""

    rate: str | None = None  # as written: "10/s"
    interval: float = 0.0  # seconds between two starts (0: no rate)
    tolerance: float = 0.0
    concurrency: int | None = None
    order: str | None = None  # as written: "body:memberId", "target"

    @property
    def limits(self) -> Limits:
        """What a claim enforces for these settings."""
        return Limits(self.interval, self.tolerance, self.concurrency or 0)

    def to_json(self) -> bytes:
        """The value stored in relay:controls."""
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> ControlSettings:
        """A stored value; tolerant: an unreadable one reads as no settings."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return cls()
        if not isinstance(data, dict):
            return cls()

        def number(key: str) -> float:
            value = data.get(key)
            return float(value) if isinstance(value, int | float) else 0.0

        concurrency = data.get("concurrency")
        return cls(
            rate=str(data["rate"]) if data.get("rate") else None,
            interval=number("interval"),
            tolerance=number("tolerance"),
            concurrency=concurrency if isinstance(concurrency, int) and concurrency > 0 else None,
            order=str(data["order"]) if data.get("order") else None,
        )


def publish_settings(conn: Redis, settings: Mapping[str, ControlSettings]) -> None:
    """Replace relay:controls with these targets' settings, in one MULTI/EXEC."""
    with conn.pipeline(transaction=True) as pipe:
        pipe.delete(keys.CONTROLS)
        if settings:
            pipe.hset(keys.CONTROLS, mapping={t: s.to_json() for t, s in settings.items()})
        pipe.execute()


def read_settings(conn: Redis) -> dict[str, ControlSettings]:
    """The settings the workers published, per target."""
    raw: Mapping[bytes, bytes] = conn.hgetall(keys.CONTROLS)  # type: ignore[assignment]
    return {read_text(t): ControlSettings.from_json(v) for t, v in raw.items()}


@dataclass(frozen=True)
class ControlView:
    """A target's delivery control as status, the page and metrics show it."""

    settings: ControlSettings
    reading: ControlReading
    held: Mapping[str, int]  # by rate, concurrency, order

    def to_view(self) -> dict[str, Any]:
        """The JSON of `relay status --json` and /status.json."""
        return {
            "rate": self.settings.rate,
            "concurrency": self.settings.concurrency,
            "order": self.settings.order,
            "in_flight": self.reading.in_flight,
            "order_keys": self.reading.keys,
            "held": dict(self.held),
        }

    def describe(self) -> str:
        """`rate 10/s, concurrency 2/4, FIFO per body:memberId; held: 3 by rate, 7 by order`."""
        parts = []
        if self.settings.rate:
            parts.append(f"rate {self.settings.rate}")
        if self.settings.concurrency:
            parts.append(f"concurrency {self.reading.in_flight}/{self.settings.concurrency}")
        if self.settings.order:
            parts.append(f"FIFO per {self.settings.order} ({self.reading.keys} keys)")
        held = [f"{n} by {why}" for why, n in self.held.items() if n]
        text = ", ".join(parts) or "no limits (a FIFO queue still draining)"
        return text + (f"; held: {', '.join(held)}" if held else "")


def read_views(
    conn: Redis, targets: Iterable[str], due_now: Mapping[str, int], now: float
) -> dict[str, ControlView]:
    """The control of each target that has settings or deliveries waiting in a FIFO queue."""
    settings = read_settings(conn)
    # Targets without settings are read only for a FIFO queue left draining (order removed).
    others = [t for t in dict.fromkeys(targets) if t not in settings]
    with conn.pipeline(transaction=False) as pipe:
        for name in others:
            pipe.hget(keys.order_key(name), WAITING_FIELD)
        draining = [n for n, w in zip(others, pipe.execute(), strict=True) if read_int(w) > 0]
    names = [*settings, *draining]
    readings = read_control(conn, names, now)
    views = {}
    for name in names:
        mine, reading = settings.get(name, ControlSettings()), readings[name]
        held = held_counts(mine.limits, reading, due_now.get(name, 0), now)
        views[name] = ControlView(mine, reading, held)
    return views
