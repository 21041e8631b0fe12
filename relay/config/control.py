"""Delivery control of a target: `rate = "10/s"`, `concurrency = N`, `order = "body:memberId"`.

Pure values and their parsing; the limits are enforced in Redis (relay.store.control) so they
hold across every worker process and host.

- `Rate`: deliveries *started* per period, spread evenly (one every `interval` seconds), with a
  small `tolerance` so that a worker that claims a little late (claims come in ticks) makes up
  for it instead of losing the slot: over any window of length W at most W / interval + 1 +
  tolerance / interval start (GCRA, the generic cell rate algorithm).
- `concurrency`: attempts in flight at once across all workers (1: serial delivery).
- `Order`: FIFO per key. The key is a field read exactly as `dedupe` and route filters read it
  (relay.config.filters), or the whole target. It is computed once, when the event is taken in,
  and stored as a short digest (`Order.key`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from relay.config.fields import Collector
from relay.config.filters import Absent, EventFields, FieldRef, parse_field

__all__ = [
    "CONTROL_KEYS",
    "MAX_CONCURRENCY",
    "WHOLE_TARGET",
    "Order",
    "Rate",
    "load_control",
    "order_keys",
    "parse_order",
    "parse_rate",
]

#: The keys of a [targets.NAME] table read here.
CONTROL_KEYS = ("rate", "concurrency", "order")

_RATE = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")
_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
#: Most deliveries a rate may allow per period (beyond it, leave `rate` out).
MAX_RATE_COUNT = 1_000_000
#: The tolerance of a rate is at least one claim tick (worker.jobs.CLAIM_TICK, 50 ms: a claim
#: a tick late must still take what came due meanwhile), at most one due poll interval
#: (worker.poller: a slow rate's next start may be noticed that late), else one interval. The
#: smaller it is, the closer any 1-second window stays to the rate: a start's HTTP request
#: leaves its worker a little after the claim, and how long after varies with the load.
TOLERANCE_MIN = 0.05
TOLERANCE_MAX = 0.5
#: Most attempts a target may allow in flight at once (beyond it, leave `concurrency` out).
MAX_CONCURRENCY = 10_000
#: `order = "target"`: every delivery to the target is one key (serial, in intake order).
WHOLE_TARGET = "target"
#: Hex digits of a key's digest: 64 bits, so two keys practically never share a queue (and if
#: they did, they would only be delivered in one order together, never out of order).
DIGEST_HEX = 16


@dataclass(frozen=True)
class Rate:
    """`count` deliveries started per `period` seconds, across every worker."""

    count: int
    period: float
    text: str  # as written in routes.toml

    @property
    def interval(self) -> float:
        """Seconds between two starts."""
        return self.period / self.count

    @property
    def tolerance(self) -> float:
        """How early a start may come to make up for a late one (GCRA's burst tolerance)."""
        return max(TOLERANCE_MIN, min(TOLERANCE_MAX, self.interval))

    @property
    def per_second(self) -> float:
        """The rate in deliveries per second (for metrics)."""
        return self.count / self.period


def parse_rate(value: object) -> Rate:
    """A Rate from `"10/s"`, `"600/m"` or `"1000/h"`; ValueError saying what is wrong."""
    match = _RATE.match(value) if isinstance(value, str) else None
    if match is None or match.group(2) not in _PERIODS:
        raise ValueError(
            f'must be a count per second, minute or hour like "10/s", "600/m" or "1000/h", '
            f"got {value!r}"
        )
    count = int(match.group(1))
    if not 1 <= count <= MAX_RATE_COUNT:
        raise ValueError(f"the count must be from 1 to {MAX_RATE_COUNT:,}, got {count}")
    return Rate(count=count, period=_PERIODS[match.group(2)], text=f"{count}/{match.group(2)}")


@dataclass(frozen=True)
class Order:
    """FIFO per key: the field whose value is the key, or None for the whole target."""

    text: str  # as written in routes.toml
    field: FieldRef | None

    def key(self, fields: EventFields) -> str | None:
        """The digest of one event's key, or None when the event lacks the field (unordered)."""
        if self.field is None:
            return "*"
        value = self.field.read(fields)
        if isinstance(value, Absent) or value == "":
            return None
        return hashlib.sha256(value.encode()).hexdigest()[:DIGEST_HEX]


class _Ordered(Protocol):
    @property
    def order(self) -> Order | None: ...


def order_keys(
    targets: Mapping[str, _Ordered], names: Sequence[str], fields: EventFields
) -> tuple[str, ...]:
    """Per target an event is routed to (`names`), the digest of its FIFO key ("" when the
    target is not ordered or the event lacks the field); () when no delivery is ordered."""
    found: list[str] = []
    for name in names:
        target = targets.get(name)
        order = target.order if target is not None else None
        found.append((order.key(fields) or "") if order is not None else "")
    return tuple(found) if any(found) else ()


def parse_order(value: object) -> Order:
    """An Order from `"body:<path>"`, `"header:<name>"` or `"target"`; ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError('must be a string like "body:memberId", "header:x-key" or "target"')
    if value == WHOLE_TARGET:
        return Order(text=value, field=None)
    try:
        ref = parse_field(value)
    except ValueError as exc:
        raise ValueError(f'{value!r}: {exc}; or "target" for the whole target') from exc
    return Order(text=value, field=ref)


def _concurrency(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a whole number from 1 to {MAX_CONCURRENCY:,}, got {value!r}")
    if not 1 <= value <= MAX_CONCURRENCY:
        raise ValueError(
            f"must be from 1 to {MAX_CONCURRENCY:,} (1: one delivery at a time), got {value}"
        )
    return value


def load_control(
    c: Collector, table: str, data: Mapping[str, Any]
) -> tuple[Rate | None, int | None, Order | None]:
    """`rate`, `concurrency` and `order` of a [targets.NAME] table; problems go to `c`."""
    rate = concurrency = order = None
    if "rate" in data:
        try:
            rate = parse_rate(data["rate"])
        except ValueError as exc:
            c.add(table, "rate", str(exc))
    if "concurrency" in data:
        try:
            concurrency = _concurrency(data["concurrency"])
        except ValueError as exc:
            c.add(table, "concurrency", str(exc))
    if "order" in data:
        try:
            order = parse_order(data["order"])
        except ValueError as exc:
            c.add(table, "order", str(exc))
    return rate, concurrency, order
