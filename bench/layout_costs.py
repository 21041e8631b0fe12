"""What-if costs of Redis layouts and calls, in isolation: bytes per event and Redis CPU per call.

    .venv/bin/python bench/layout_costs.py [--events 5000]

No relay process runs: each case writes N events' keys (or records N events' deliveries) into a
fresh private redis-server (tests/support/redis_server.py) straight from this script, and
prints the `used_memory` or `used_cpu_user + used_cpu_sys` delta per event or delivery. It puts
numbers on the candidate changes of issue 15 before they are made; bench/redis_cost.py measures
the relay as it is. The body is the 223-byte DigitalChalk event of bench/stack.py, two targets.

1. Bytes per event of the stored layout before 2026-12 (event hash, attempt log, index entry),
   as built since (one compact hash, the index's sorted-set entry) and of candidates: a
   listpack hash (Redis's `hash-max-listpack-value` raised, or no value over 64 bytes), the
   immutable event as one string beside a small state hash, the attempt log as compact fields
   of that hash, the events index as a list per minute instead of a sorted set.
2. Redis CPU of recording a successful delivery with relay.store's record.lua, on events the
   commit wrote: one call per delivery, and a batch a call as the workers do (the what-ifs that
   led there, measured with the record.lua of before 2026-12, are in docs/benchmarks.md).
3. Redis CPU of the intake commit (commit.lua) sent with EVAL or EVALSHA, by batch size.

Not a test: nothing here asserts a figure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson
import redis

from bench.redis_stats import RedisSnapshot
from bench.stack import digitalchalk_body
from relay.core.ids import new_event_id
from relay.store.commit import commit_arguments
from relay.store.deliveries import RECORD_BATCH, Record, Store
from relay.store.records import (
    AttemptRecord,
    DeliveryState,
    Event,
    Outcome,
    TargetStat,
    attempt_field,
)
from tests.support.redis_server import RedisServer

TTL = 7 * 86400
TARGETS = ("live", "backlog")
RECEIVED = "1764686400.123456"
ATTEMPT = orjson.dumps(
    {"target": "live", "attempt": 1, "at": 1764686400.123, "duration_ms": 1.234, "status": 200,
     "error": "", "outcome": "delivered", "response": "", "retry_in_s": None}
)  # fmt: skip
COMPACT = {f"a:{t}:1": "1764686400.123,1.2,200" for t in TARGETS}


def event_id(i: int) -> str:
    return f"evt_01KBG{i:021d}"


def event_fields(i: int) -> dict[str, Any]:
    return {
        "source": "digitalchalk", "type": "offering_registered", "received": RECEIVED,
        "ctype": "application/json", "method": "POST", "headers": "[]",
        "body": digitalchalk_body(i), "targets": orjson.dumps(TARGETS), "dedupe": "",
    }  # fmt: skip


def state_fields(state: str = "delivered", n: int = 1) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for t in TARGETS:
        fields.update({f"s:{t}": state, f"n:{t}": n, f"r:{t}": ""})
    return fields


# --- 1. bytes per event -----------------------------------------------------------------------


def as_now(p: Any, i: int) -> None:
    key = event_id(i)
    p.hset(f"relay:ev:{key}", mapping={**event_fields(i), **state_fields()})
    p.expire(f"relay:ev:{key}", TTL)
    p.rpush(f"relay:att:{key}", ATTEMPT, ATTEMPT.replace(b"live", b"backlog"))
    p.expire(f"relay:att:{key}", TTL)
    p.zadd("relay:events", {key: 1764686400.0 + i / 1000})


def built_hash(p: Any, i: int) -> None:
    """The event hash relay writes since 2026-12 (relay.store.records' codec): one listpack
    hash with the body in parts and the attempts as fields."""
    event = Event(event_id(i), "digitalchalk", "offering_registered", float(RECEIVED),
                  "application/json", "POST", (), digitalchalk_body(i), TARGETS)  # fmt: skip
    fields: dict[str, Any] = dict(event.to_redis())
    for t in TARGETS:
        fields.update({f"s:{t}": "delivered", f"n:{t}": 1, f"r:{t}": "delivered: HTTP 200"})
        record = AttemptRecord(t, 1, 1764686400.123, 0.0012, 200, "", Outcome.DELIVERED, "")
        fields[attempt_field(t, 1)] = record.to_field()
    p.hset(f"relay:ev:{event.id}", mapping=fields)
    p.expire(f"relay:ev:{event.id}", TTL)


def as_built(p: Any, i: int) -> None:
    """As relay stores an event since 2026-12: the compact hash and a sorted-set index entry."""
    built_hash(p, i)
    zset_index(p, i)


def built_with_minute_lists(p: Any, i: int) -> None:
    """A candidate: the compact hash with the index as a list per minute (measured in relay at
    912 B an event, then reverted: the management API's cursor walk reads the sorted set)."""
    built_hash(p, i)
    minute_lists(600)(p, i)


def one_hash(p: Any, i: int) -> None:
    key = f"relay:ev:{event_id(i)}"
    p.hset(key, mapping={**event_fields(i), **state_fields(), **COMPACT})
    p.expire(key, TTL)


def blob_and_state(p: Any, i: int) -> None:
    key = event_id(i)
    blob = b"\n".join(
        v if isinstance(v, bytes) else str(v).encode() for v in event_fields(i).values()
    )
    p.set(f"relay:eb:{key}", blob, ex=TTL)
    p.hset(f"relay:es:{key}", mapping={**state_fields(), **COMPACT})
    p.expire(f"relay:es:{key}", TTL)


def zset_index(p: Any, i: int) -> None:
    p.zadd("relay:events", {event_id(i): 1764686400.0 + i / 1000})


def minute_lists(per_minute: int) -> Callable[[Any, int], None]:
    def write(p: Any, i: int) -> None:
        key = f"relay:events:{i // per_minute}"
        p.rpush(key, event_id(i))
        if i % per_minute == 0:
            p.expire(key, TTL)

    return write


def dedupe_key(p: Any, i: int) -> None:
    p.set(f"relay:dd:digitalchalk:{i:032x}", event_id(i), ex=86400)


LISTPACK = (("hash-max-listpack-value", "1024"),)
BYTES_CASES: tuple[tuple[str, Callable[[Any, int], None], tuple[tuple[str, str], ...]], ...] = (
    ("before 2026-12: event hash + attempt list + index zset", as_now, ()),
    ("as built: listpack hash (body parts, attempt fields) + index zset", as_built, ()),
    ("candidate: the same hash + a list per minute as the index", built_with_minute_lists, ()),
    ("before 2026-12, hash-max-listpack-value 1024", as_now, LISTPACK),
    ("one hash, compact attempts, no list; listpack 1024", one_hash, LISTPACK),
    ("one hash, compact attempts, no list; Redis defaults", one_hash, ()),
    ("event string + state hash with compact attempts", blob_and_state, ()),
    ("events index: sorted-set entry", zset_index, ()),
    ("events index: a list per minute (10 events/s)", minute_lists(600), ()),
    ("dedupe key: string, 24 h expiry", dedupe_key, ()),
)


def measure_bytes(workdir: Path, events: int) -> None:
    print(f"1. bytes per event ({events:,} events, used_memory delta):")
    for n, (name, write, config) in enumerate(BYTES_CASES):
        with private_redis(workdir / f"bytes-{n}", config) as conn:
            before = int(conn.info("memory")["used_memory"])
            with conn.pipeline(transaction=False) as p:
                for i in range(events):
                    write(p, i)
                p.execute()
            after = int(conn.info("memory")["used_memory"])
        print(f"   {(after - before) / events:6.0f} B   {name}")


# --- 2. Redis CPU of recording a delivery -------------------------------------------------------


def committed_events(conn: redis.Redis, events: int) -> list[Event]:
    """`events` events committed as the receiver commits them (commit.lua, batches of 64):
    pending for both targets, due now."""
    made: list[Event] = []
    for start in range(0, events, 64):
        batch = _batch(min(64, events - start))
        conn.execute_command(*commit_arguments(batch, TTL, time.time(), "rq:queue:relay").command())
        made += [e for request in batch for e in request.events]
    return made


def delivered(event: Event, target: str) -> Record:
    """The record of a first attempt that delivered (what a worker writes)."""
    entry = AttemptRecord(target, 1, time.time(), 0.0012, 200, "", Outcome.DELIVERED, "")
    return Record(event.id, target, 1, DeliveryState.DELIVERED, "", entry,
                  TargetStat.DELIVERED, False, True)  # fmt: skip


def measure_record(workdir: Path, events: int) -> None:
    print(f"2. Redis CPU of recording a delivery ({events * 2:,} deliveries, first attempts; "
          "relay.store's record.lua):")  # fmt: skip
    ways = ("one call per delivery (Store.record)",
            f"{RECORD_BATCH} a call (Store.record_many, as the workers do)")  # fmt: skip
    for n, how in enumerate(ways):
        with private_redis(workdir / f"record-{n}", ()) as conn:
            store = Store(conn, TTL)
            recs = [delivered(e, t) for e in committed_events(conn, events) for t in TARGETS]
            now = time.time()
            before = RedisSnapshot.take(conn)
            if n == 0:
                results = [store.record(rec, now) for rec in recs]
            else:
                results = store.record_many(recs, now)
            delta = RedisSnapshot.take(conn).since(before)
        if results.count(1) != len(recs):  # a record the script refused measures nothing
            raise SystemExit(f"bench: {len(recs) - results.count(1)} records not applied ({how})")
        per = len(recs)
        print(f"   {delta.cpu / per * 1e6:5.1f} µs, {delta.commands / per:4.1f} commands   {how}")


# --- 3. the intake commit ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    events: tuple[Event, ...]
    dedupe_window: int = 0


def _batch(size: int) -> list[_Request]:
    now = time.time()
    return [
        _Request((Event(new_event_id(), "digitalchalk", "offering_registered", now,
                        "application/json", "POST", (), digitalchalk_body(i), TARGETS),))
        for i in range(size)
    ]  # fmt: skip


def measure_commit(workdir: Path, events: int) -> None:
    print(f"3. Redis CPU of the intake commit ({events:,} events a case):")
    for size in (1, 14, 64):
        for how in ("EVAL", "EVALSHA"):
            with private_redis(workdir / f"commit-{size}-{how}", ()) as conn:
                calls = [
                    commit_arguments(_batch(size), TTL, time.time(), "rq:queue:relay").command()
                    for _ in range(max(1, events // size))
                ]
                sha = conn.script_load(str(calls[0][1]))
                before = RedisSnapshot.take(conn)
                for call in calls:
                    conn.execute_command(*(call if how == "EVAL" else ("EVALSHA", sha, *call[2:])))
                delta = RedisSnapshot.take(conn).since(before)
            per = size * len(calls)
            print(f"   {delta.cpu / per * 1e6:5.1f} µs, {delta.commands / per:4.1f} commands   "
                  f"{how}, batches of {size}")  # fmt: skip


class private_redis:
    """A fresh redis-server with some `CONFIG SET`s, killed on exit."""

    def __init__(self, directory: Path, config: tuple[tuple[str, str], ...]) -> None:
        self.server = RedisServer(directory)
        self.config = config

    def __enter__(self) -> redis.Redis:
        self.server.start()
        conn = redis.Redis.from_url(self.server.url)
        for name, value in self.config:
            conn.config_set(name, value)
        return conn

    def __exit__(self, *exc: object) -> None:
        self.server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="relay-layout-") as tmp:
        measure_bytes(Path(tmp), args.events)
        measure_record(Path(tmp), args.events)
        measure_commit(Path(tmp), args.events)


if __name__ == "__main__":
    main()
