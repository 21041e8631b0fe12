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
2. Redis CPU of recording a successful delivery: relay.store's record.lua one call per delivery
   (as the workers do), pipelined, the same logic looped over 64 deliveries in one call, and a
   slim record (one HMGET, one HSET, one ZREM and the counters per call, no attempt list).
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
from relay.store import scripts
from relay.store.commit import commit_arguments
from relay.store.records import AttemptRecord, Event, Outcome, attempt_field
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

#: record.lua's logic looped over the deliveries of one call (KEYS and ARGV as record.lua's,
#: five keys and twelve arguments per delivery, one after the other).
BATCHED_RECORD = (
    scripts.record_preamble()
    + "local function one(KEYS, ARGV)\n"
    + scripts.read("record")
    + "\nend\nlocal out = {}\nfor i = 0, #KEYS / 5 - 1 do\n"
    + "  out[i + 1] = one({unpack(KEYS, 5 * i + 1, 5 * i + 5)},\n"
    + "                   {unpack(ARGV, 12 * i + 1, 12 * i + 12)})\n"
    + "end\nreturn out\n"
)

#: A slim record of successful deliveries: KEYS the event hashes; ARGV per delivery: target,
#: attempt, state, compact attempt entry. The due sets' ZREM and the counters once per call.
SLIM_RECORD = """
local done = {delivered = true, dead = true, gone = true, duplicate = true}
local zrem, counts, out = {}, {}, {}
for i, key in ipairs(KEYS) do
  local t, attempt = ARGV[4 * i - 3], tonumber(ARGV[4 * i - 2])
  local v = redis.call('HMGET', key, 's:' .. t, 'n:' .. t)
  if (v[1] and done[v[1]]) or tonumber(v[2] or '0') ~= attempt - 1 then
    out[i] = 0
  else
    redis.call('HSET', key, 'n:' .. t, attempt, 's:' .. t, ARGV[4 * i - 1],
               'a:' .. t .. ':' .. attempt, ARGV[4 * i])
    zrem[t] = zrem[t] or {}
    table.insert(zrem[t], string.sub(key, 10))
    counts[t] = (counts[t] or 0) + 1
    out[i] = 1
  end
end
for t, ids in pairs(zrem) do redis.call('ZREM', 'relay:due:' .. t, unpack(ids)) end
for t, n in pairs(counts) do
  redis.call('HINCRBY', 'relay:stats:target:' .. t, 'attempts', n)
  redis.call('HINCRBY', 'relay:stats:target:' .. t, 'delivered', n)
end
return out
"""


def pending_events(conn: redis.Redis, events: int) -> None:
    """Events as the intake leaves them: pending for both targets, due now."""
    with conn.pipeline(transaction=False) as p:
        for i in range(events):
            key = event_id(i)
            p.hset(f"relay:ev:{key}", mapping={**event_fields(i), **state_fields("pending", 0)})
            p.expire(f"relay:ev:{key}", TTL)
            for t in TARGETS:
                p.zadd(f"relay:due:{t}", {key: 1.0})
        p.execute()


def record_args(i: int, target: str) -> tuple[list[str], list[Any]]:
    """record.lua's KEYS and ARGV for a first attempt that delivered (relay.store.deliveries)."""
    key = event_id(i)
    keys = [f"relay:ev:{key}", f"relay:att:{key}", f"relay:stats:target:{target}",
            "relay:dead", f"relay:due:{target}"]  # fmt: skip
    args = [target, 1, "delivered", "", ATTEMPT, TTL, time.time(), f"{key}:{target}",
            "delivered", "0", "1", ""]  # fmt: skip
    return keys, args


def measure_record(workdir: Path, events: int) -> None:
    print(f"2. Redis CPU of recording a delivery ({events * 2:,} deliveries, first attempts):")
    work = [(i, t) for i in range(events) for t in TARGETS]
    ways = ("one call per delivery (as now)", "pipelined, 64 calls a trip",
            "record.lua looped, 64 a call", "slim record, 64 a call")  # fmt: skip
    for n, how in enumerate(ways):
        with private_redis(workdir / f"record-{n}", ()) as conn:
            pending_events(conn, events)
            record = conn.register_script(scripts.RECORD)
            batched = conn.register_script(BATCHED_RECORD)
            slim = conn.register_script(SLIM_RECORD)
            before = RedisSnapshot.take(conn)
            for start in range(0, len(work), 64):
                chunk = work[start : start + 64]
                if n == 0:
                    for i, t in chunk:
                        record(*record_args(i, t))
                elif n == 1:
                    with conn.pipeline(transaction=False) as p:
                        for i, t in chunk:
                            keys, args = record_args(i, t)
                            record(keys=keys, args=args, client=p)
                        p.execute()
                elif n == 2:
                    parts = [record_args(i, t) for i, t in chunk]
                    batched(
                        [k for ks, _ in parts for k in ks], [a for _, as_ in parts for a in as_]
                    )
                else:
                    args = [a for _, t in chunk for a in (t, 1, "delivered", COMPACT[f"a:{t}:1"])]
                    slim([f"relay:ev:{event_id(i)}" for i, _ in chunk], args)
            delta = RedisSnapshot.take(conn).since(before)
        per = len(work)
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
