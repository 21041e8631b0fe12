"""What rate, concurrency and order cost Redis per event, against targets without them.

    python bench/control_cost.py [--events 2000] [--rounds 5]

The three scripts on the per-event path (the intake commit, the claim, the record of an
outcome) are run against a redis-server of this benchmark's own, and Redis's own count of the
time spent in them (INFO commandstats, microseconds per call) is divided by the events or
deliveries they handled. Each round runs, on a flushed database and in turn:

- `plain`: events to two targets without any setting (the reference);
- `limited`: the same, both targets with a `rate` and a `concurrency` (never binding);
- `ordered`: both targets with `order` (100 keys, so only 100 heads are due at a time): what the
  settings cost when they are used.

Printed: the median over the rounds of each script's microseconds per event (per delivery for
claim and record), and each case as a ratio to `plain`. (Issue 14 compared `plain` with the
scripts of the revision before delivery control, e918531; the commit's arguments have changed
since, so that comparison is kept in docs/benchmarks.md and no longer run.) Beware one effect
that is Redis's, not relay's: a sorted set of at most 128 members is stored as a listpack, where
each member the claim moves to its lease end costs time in proportion to the set's size, while
a larger set is a skiplist. The ordered case's due sets hold only heads (100), so its claim pays
that; so does a plain target with fewer than 129 deliveries due. It is a benchmark, not a test:
nothing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis

from relay.core.ids import new_event_id
from relay.store.commit import commit_arguments
from relay.store.control import Limits
from relay.store.deliveries import Record, Store, Wanted
from relay.store.records import DeliveryState, Event, TargetStat
from tests.support.redis_server import RedisServer

TARGETS = ("crm", "archive")
LIMITS = Limits(interval=1e-6, tolerance=0.05, concurrency=10_000)  # never binding: cost only
BATCH = 50


@dataclasses.dataclass(frozen=True)
class Batch:
    events: Sequence[Event]
    dedupe_window: int = 0


def events(count: int, ordered: bool) -> list[Event]:
    now = time.time()
    return [
        Event(
            id=new_event_id(),
            source="shop",
            type="member.updated",
            received_at=now,
            content_type="application/json",
            method="POST",
            headers=(("x-event-type", "member.updated"),),
            body=b'{"event": "member.updated", "memberId": %d, "pad": "%s"}' % (i, b"x" * 300),
            targets=TARGETS,
            order=(f"{i % 100:016x}", f"{i % 100:016x}") if ordered else (),
        )
        for i in range(count)
    ]


def usec(conn: redis.Redis, command: str) -> float:
    stats: dict[str, Any] = conn.info("commandstats")
    return float(stats.get(f"cmdstat_{command}", {}).get("usec", 0))


def measured(conn: redis.Redis, command: str, run: Callable[[], None]) -> float:
    """Microseconds Redis spent in `command` while `run` ran."""
    conn.config_resetstat()
    run()
    return usec(conn, command)


def one_round(conn: redis.Redis, case: str, count: int) -> dict[str, float]:
    """Per event: microseconds in the commit, the claims and the records of one case."""
    conn.flushall()
    store = Store(conn, 3600)
    batch = events(count, ordered=case == "ordered")
    now = time.time()
    # Claims look at now + 10 s: what a record makes due (the next of a FIFO key, due at
    # now + 2 s) is taken by the next claim, and no lease (60 s) ends meanwhile.
    at = now + 10

    def commit() -> None:
        for start in range(0, count, BATCH):
            call = commit_arguments([Batch(batch[start : start + BATCH])], 3600, now, "rq:q")
            conn.execute_command(*call.command())

    taken: list[tuple[str, str]] = []

    def claim() -> None:
        for _ in range(count):  # bounded: each round takes at least one delivery
            limits = LIMITS if case == "limited" else Limits()
            wanted = [Wanted(t, 128, now + 60, limits) for t in TARGETS]
            ids = store.claim(wanted, 256, at).ids
            if not any(ids.values()):
                return
            taken.extend((i, t) for t, got in ids.items() for i in got)

    def record() -> None:
        for event_id, target in taken:
            rec = Record(event_id, target, 1, DeliveryState.DELIVERED, "", None,
                         TargetStat.DELIVERED, False, True)  # fmt: skip
            store.record(rec, now + 2)

    figures = {"commit": measured(conn, "eval", commit) / count}
    if case == "ordered":
        # Only heads are due: claim and record until every delivery is over.
        spent_claim = spent_record = 0.0
        for _ in range(count):
            spent_claim += measured(conn, "evalsha", claim)
            if not taken:
                break
            spent_record += measured(conn, "evalsha", record)
            taken.clear()
        figures["claim"] = spent_claim / (count * len(TARGETS))
        figures["record"] = spent_record / (count * len(TARGETS))
        return figures
    figures["claim"] = measured(conn, "evalsha", claim) / (count * len(TARGETS))
    figures["record"] = measured(conn, "evalsha", record) / (count * len(TARGETS))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    cases = ("plain", "limited", "ordered")
    found: dict[str, dict[str, list[float]]] = {c: {} for c in cases}
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            conn = redis.Redis.from_url(server.url)
            for _ in range(args.rounds):
                for case in cases:
                    for script, value in one_round(conn, case, args.events).items():
                        found[case].setdefault(script, []).append(value)
        finally:
            server.kill()
    base = {s: statistics.median(v) for s, v in found["plain"].items()}
    print(f"Redis microseconds per event ({args.events} events to 2 targets, median of "
          f"{args.rounds} rounds; ratios to plain)")  # fmt: skip
    print(f"{'script':8} {'plain':>9}" + "".join(f" {c:>9} {'ratio':>6}" for c in cases[1:]))
    for script, old_value in base.items():
        line = f"{script:8} {old_value:9.2f}"
        for case in cases[1:]:
            value = statistics.median(found[case][script])
            line += f" {value:9.2f} {value / old_value:6.2f}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
