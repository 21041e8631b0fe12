"""A target's circuit breaker in Redis: its one codec, the rules, the scripts that apply them.

`relay:breaker:{target}` (relay.store.keys) holds the failed attempts in a row, since when the
breaker is open (the field is there only while it is), and the newest failure. No record means
closed with no failure since the last success. While open, `relay:breaker:{target}:probe` is held
(SET NX PX) until the next probe is due: whoever sets it again may start one probe delivery, so
across every worker one probe starts per interval. The first probe is due one interval after
the breaker opens. Closing makes the target's held deliveries due at once, in the same script:
those whose retry time is still to come are moved to now (a claim keeps a breaker target's
leases in its in-flight set, so a delivery in flight keeps its lease), so a recovered target's
backlog drains at the pace of its workers and limits, not of its retry timers.

The rules are pure functions here (`after_attempt`: what an attempt's result does to the
breaker; `gate_of`: what an open or closed breaker lets be claimed). The two Lua scripts apply the
same rules atomically, since many workers record attempts to one target at once;
tests/test_breakers.py runs random sequences through both and compares.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum, StrEnum
from typing import Any

from redis import Redis

from relay.core.times import format_age, format_time
from relay.store import keys, scripts
from relay.store.records import read_int, read_text

FAILURES_FIELD = "failures"  # failed attempts in a row (since the last success)
OPENED_AT_FIELD = "opened_at"  # Unix seconds when it opened; present only while open
LAST_ERROR_FIELD = "last_error"  # what the newest failed attempt came to ("HTTP 503")
LAST_AT_FIELD = "last_at"  # when it failed


class Transition(StrEnum):
    """What recording one attempt did to a breaker (what is logged and counted)."""

    NONE = ""
    OPENED = "opened"
    CLOSED = "closed"


class Gate(IntEnum):
    """What a breaker lets the claim take from its target's due deliveries (the scripts' codes)."""

    CLOSED = 0  # everything, as usual
    PROBE = 1  # one delivery: this caller took the probe
    HELD = 2  # nothing: open, and the next probe is not due

    @property
    def limit(self) -> int | None:
        """Most deliveries the claim may take; None: no limit of the breaker's."""
        return {Gate.CLOSED: None, Gate.PROBE: 1, Gate.HELD: 0}[self]


@dataclass(frozen=True)
class BreakerState:
    """A target's breaker as Redis holds it; `probe_in` is read beside it."""

    target: str
    failures: int = 0  # failed attempts in a row
    opened_at: float | None = None  # None: closed
    last_error: str = ""
    last_at: float | None = None
    probe_in: float | None = None  # seconds until the next probe is due (None: due now)

    @property
    def is_open(self) -> bool:
        """Whether deliveries to the target are held (but for one probe per interval)."""
        return self.opened_at is not None

    def to_view(self) -> dict[str, Any]:
        """The breaker in operator JSON: open or closed, failures in a row, since when (ISO and
        Unix seconds), the newest failure, and seconds until the next probe (open only)."""
        return {
            "state": "open" if self.is_open else "closed",
            "failures": self.failures,
            "since": format_time(self.opened_at) or None,
            "at": self.opened_at,
            "last_error": self.last_error or None,
            "last_at": self.last_at,
            "next_probe_in": None if not self.is_open else round(self.probe_in or 0.0, 3),
        }

    @classmethod
    def from_redis(cls, target: str, data: Mapping[bytes, bytes], pttl: int) -> BreakerState:
        """From HGETALL of the hash and PTTL of the probe key (negative: not held)."""

        def number(name: str) -> float | None:
            raw = read_text(data.get(name.encode()))
            try:
                return float(raw) if raw else None
            except ValueError:
                return None

        opened_at = number(OPENED_AT_FIELD)
        return cls(
            target=target,
            failures=read_int(data.get(FAILURES_FIELD.encode())),
            opened_at=opened_at,
            last_error=read_text(data.get(LAST_ERROR_FIELD.encode())),
            last_at=number(LAST_AT_FIELD),
            probe_in=pttl / 1000 if opened_at is not None and pttl > 0 else None,
        )


def after_attempt(
    state: BreakerState, failed: bool, threshold: int, now: float, error: str = ""
) -> tuple[BreakerState, Transition]:
    """The breaker after one attempt: a success closes it and starts the count again; a
    failure counts, and opens a closed breaker at `threshold` failures in a row."""
    if not failed:
        was_open = state.is_open
        return BreakerState(state.target), Transition.CLOSED if was_open else Transition.NONE
    counted = replace(state, failures=state.failures + 1, last_error=error, last_at=now)
    if state.is_open or counted.failures < threshold:
        return counted, Transition.NONE
    return replace(counted, opened_at=now), Transition.OPENED


def gate_of(is_open: bool, probe_waiting: bool) -> Gate:
    """Closed: claim as usual. Open: one probe when none is waiting for its interval, else none."""
    if not is_open:
        return Gate.CLOSED
    return Gate.HELD if probe_waiting else Gate.PROBE


def describe_breaker(state: BreakerState, now: float) -> str:
    """`open since 2026-…Z (4m ago) after 20 failed attempts in a row (last: HTTP 503); next
    probe in 12s`: the same words wherever an open breaker shows."""
    failed = f"{state.failures} failed attempt{'' if state.failures == 1 else 's'} in a row"
    if state.opened_at is None:
        return f"closed, {failed}"
    since = f"since {format_time(state.opened_at)} ({format_age(now - state.opened_at)} ago)"
    last = f" (last: {state.last_error})" if state.last_error else ""
    probe = "due now" if not state.probe_in else f"in {format_age(state.probe_in)}"
    return f"open {since} after {failed}{last}; next probe {probe}"


def _preamble() -> str:
    names = {
        "FAILURES": FAILURES_FIELD,
        "OPENED_AT": OPENED_AT_FIELD,
        "LAST_ERROR": LAST_ERROR_FIELD,
        "LAST_AT": LAST_AT_FIELD,
    }
    return "".join(f"local {name} = '{value}'\n" for name, value in names.items())


RECORD = _preamble() + scripts.read("breaker_record")
GATE = _preamble() + scripts.read("breaker_gate")
RELEASE = scripts.read("breaker_release")


@dataclass(frozen=True)
class Recorded:
    """What recording one attempt did: the transition, and the breaker's figures after it."""

    transition: Transition
    failures: int  # in a row after it (before it, for a close: what the success ended)
    opened_at: float | None  # since when it is (or, for a close, was) open
    released: int = 0  # held deliveries a close made due at once (they waited for a retry time)


def _recorded(transition: Any, failures: Any, opened: Any, released: Any) -> Recorded:
    opened_text = read_text(opened)
    return Recorded(
        transition=Transition(read_text(transition)),
        failures=int(failures),
        opened_at=float(opened_text) if opened_text else None,
        released=int(released),
    )


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class Breakers:
    """The breaker scripts on one Redis connection."""

    def __init__(self, conn: Redis) -> None:
        self.conn = conn
        self._record = conn.register_script(RECORD)
        self._gate = conn.register_script(GATE)
        self._release = conn.register_script(RELEASE)

    def record(
        self,
        target: str,
        failed: bool,
        threshold: int,
        probe_interval: float,
        error: str = "",
        now: float | None = None,
    ) -> Recorded:
        """Count one attempt's result; an opening or closing is reported to exactly one caller."""
        return self.record_many(target, [(failed, error)], threshold, probe_interval, now)[0]

    def record_many(
        self,
        target: str,
        results: Sequence[tuple[bool, str]],
        threshold: int,
        probe_interval: float,
        now: float | None = None,
    ) -> list[Recorded]:
        """Count (failed, what it came to) results of attempts to one target, in order, in one
        call: what each did, as one `record` per result would say."""
        if not results:
            return []
        now = time.time() if now is None else now
        keys_ = [
            keys.breaker_key(target),
            keys.breaker_probe_key(target),
            keys.BREAKERS,
            keys.due_key(target),
            keys.in_flight_key(target),
        ]
        args: list[Any] = [target, threshold, repr(now), _ms(probe_interval)]
        for failed, error in results:
            args += ["1" if failed else "0", error]
        return [_recorded(*reply) for reply in self._record(keys=keys_, args=args)]

    def gate(self, targets: Sequence[tuple[str, float]], token: str) -> dict[str, Gate]:
        """What each (target, probe interval)'s breaker lets be claimed now, in one round trip;
        PROBE means this caller took the probe, setting its key to `token`."""
        if not targets:
            return {}
        names = [name for name, _ in targets]
        keys_ = [k for n in names for k in (keys.breaker_key(n), keys.breaker_probe_key(n))]
        codes = self._gate(keys=keys_, args=[token, *(_ms(p) for _, p in targets)])
        return {name: Gate(int(code)) for name, code in zip(names, codes, strict=True)}

    def release(self, targets: Iterable[str], token: str) -> int:
        """Give back the probes of these targets taken with `token` (none was started)."""
        probe_keys = [keys.breaker_probe_key(name) for name in targets]
        return int(self._release(keys=probe_keys, args=[token])) if probe_keys else 0


def read_breakers(conn: Redis, targets: Iterable[str]) -> dict[str, BreakerState]:
    """The breakers of those targets that have a record (open, or failing), in one round trip."""
    names = list(dict.fromkeys(targets))
    if not names:
        return {}
    with conn.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.breaker_key(name))
            pipe.pttl(keys.breaker_probe_key(name))
        replies = pipe.execute()
    return {
        name: BreakerState.from_redis(name, replies[2 * i], int(replies[2 * i + 1]))
        for i, name in enumerate(names)
        if replies[2 * i]
    }


def held(conn: Redis, targets: Iterable[str]) -> set[str]:
    """Those targets whose breaker holds everything now (open, next probe not due). Read-only:
    for deciding whether a kick is worth enqueueing, never takes the probe."""
    names = list(dict.fromkeys(targets))
    if not names:
        return set()
    with conn.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hexists(keys.breaker_key(name), OPENED_AT_FIELD)
            pipe.exists(keys.breaker_probe_key(name))
        replies = pipe.execute()
    return {
        name
        for i, name in enumerate(names)
        if gate_of(bool(replies[2 * i]), bool(replies[2 * i + 1])) is Gate.HELD
    }


def forget_breakers(conn: Redis, keep: Collection[str]) -> list[BreakerState]:
    """Drop the records of targets not in `keep` (their breaker left routes.toml): what was
    dropped, so that an open one can be logged as closed."""
    members: Iterable[bytes] = conn.smembers(keys.BREAKERS)  # type: ignore[assignment]
    gone = sorted(n for n in (read_text(m) for m in members) if n not in keep)
    if not gone:
        return []
    states = read_breakers(conn, gone)
    with conn.pipeline(transaction=True) as pipe:
        for name in gone:
            pipe.delete(keys.breaker_key(name), keys.breaker_probe_key(name))
        pipe.srem(keys.BREAKERS, *gone)
        pipe.execute()
    return list(states.values())
