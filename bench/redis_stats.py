"""Redis figures for the cost benchmarks: INFO snapshots and their deltas, memory by key kind.

`RedisSnapshot` holds what the per-event figures are deltas of (used_memory, CPU seconds,
commands, INFO commandstats); `memory_breakdown` adds up MEMORY USAGE of every key by kind and
`memory_stats_lines` prints MEMORY STATS growth per event. Also `settle` (wait until nothing is
due or queued), and how figures of several runs and the machine's load are printed.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis


@dataclass(frozen=True)
class RedisSnapshot:
    """What the cost figures are deltas of: memory, CPU seconds, commands (calls, usec) by name."""

    used_memory: int
    cpu: float  # used_cpu_user + used_cpu_sys, seconds
    commands: int  # total_commands_processed (commands run by scripts included)
    stats: dict[str, tuple[int, int]]  # command -> (calls, usec), from INFO commandstats

    @classmethod
    def take(cls, conn: redis.Redis) -> RedisSnapshot:
        """Read INFO memory, cpu, stats and commandstats (the INFO calls count too: a few)."""
        info: dict[str, Any] = conn.info("everything")  # type: ignore[assignment]
        stats = {
            name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
            for name, v in info.items()
            if name.startswith("cmdstat_")
        }
        return cls(
            used_memory=int(info["used_memory"]),
            cpu=float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
            commands=int(info["total_commands_processed"]),
            stats=stats,
        )

    def since(self, before: RedisSnapshot) -> RedisSnapshot:
        """The delta from an earlier snapshot."""
        stats = {}
        for name, (calls, usec) in self.stats.items():
            c0, u0 = before.stats.get(name, (0, 0))
            if calls - c0:
                stats[name] = (calls - c0, usec - u0)
        return RedisSnapshot(
            used_memory=self.used_memory - before.used_memory,
            cpu=self.cpu - before.cpu,
            commands=self.commands - before.commands,
            stats=stats,
        )


def settle(conn: redis.Redis, seconds: float = 30) -> None:
    """Wait until no delivery is due or leased and no kick waits (all outcomes recorded)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        targets: set[bytes] = conn.smembers("relay:duetargets")  # type: ignore[assignment]
        with conn.pipeline(transaction=False) as pipe:
            for target in targets:
                pipe.zcard(b"relay:due:" + target)
            pipe.llen("rq:queue:relay")
            if not any(pipe.execute()):
                return
        time.sleep(0.1)


def median_spread(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """`median (min to max)` of some runs, or the one value."""
    if len(values) == 1:
        return fmt.format(values[0])
    lo, hi = min(values), max(values)
    return f"{fmt.format(statistics.median(values))} ({fmt.format(lo)} to {fmt.format(hi)})"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, to print beside figures from a shared machine."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def encoding(conn: redis.Redis, key: str) -> str:
    """OBJECT ENCODING of a key, as text."""
    value = conn.object("encoding", key)
    return value.decode() if isinstance(value, bytes) else str(value)


#: Key kinds by name prefix; any other key is its own kind.
KEY_KINDS = (
    ("relay:ev:", "event hash relay:ev:*"),
    ("relay:att:", "attempt log relay:att:*"),
    ("relay:events", "events index relay:events"),
    ("relay:dd:", "dedupe key relay:dd:*"),
    ("relay:due:", "due sets relay:due:*"),
    ("relay:stats:", "counters relay:stats:*"),
    ("rq:job:", "RQ jobs rq:job:*"),
    ("rq:worker:", "RQ workers rq:worker:*"),
)


def key_kind(key: str) -> str:
    """Which kind of key this is (KEY_KINDS), for adding up their sizes."""
    for prefix, kind in KEY_KINDS:
        if key.startswith(prefix):
            return kind
    return key


def memory_breakdown(conn: redis.Redis, events: int) -> str:
    """MEMORY USAGE of every key, added up by kind, per event, as text."""
    keys = [k.decode() for k in conn.scan_iter(count=1000)]
    sizes: list[int] = []
    for start in range(0, len(keys), 500):
        with conn.pipeline(transaction=False) as pipe:
            for key in keys[start : start + 500]:
                pipe.memory_usage(key, samples=0)
            sizes += [int(size or 0) for size in pipe.execute()]
    totals: dict[str, list[int]] = {}
    example: dict[str, str] = {}
    for key, size in zip(keys, sizes, strict=True):
        kind = key_kind(key)
        totals.setdefault(kind, []).append(size)
        example.setdefault(kind, key)
    lines = [f"  where the bytes are ({events:,} events; MEMORY USAGE of every key, by kind):"]
    everything = 0
    for kind, found in sorted(totals.items(), key=lambda kv: -sum(kv[1])):
        everything += sum(found)
        if sum(found) / events < 1:
            continue
        lines.append(
            f"    {kind:<30} {sum(found) / events:6.0f} B per event   {len(found):>6} key(s), "
            f"{encoding(conn, example[kind])}, {statistics.mean(found):,.0f} B each"
        )
    lines.append(f"    {'all keys':<30} {everything / events:6.0f} B per event")
    event = next((key for kind, key in example.items() if kind.startswith("event hash")), None)
    if event is not None:
        fields: dict[bytes, bytes] = conn.hgetall(event)  # type: ignore[assignment]
        shown = ", ".join(f"{k.decode()}={len(v)}" for k, v in fields.items())
        lines.append(f"    one event hash, field=value bytes: {shown}")
    return "\n".join(lines)


def flat_memory_stats(conn: redis.Redis) -> dict[str, float]:
    """MEMORY STATS with db0's figures lifted to the top level (numbers only)."""
    raw: dict[str, Any] = conn.memory_stats()
    flat = {k: float(v) for k, v in raw.items() if isinstance(v, int | float)}
    flat.update({k: float(v) for k, v in raw.get("db.0", {}).items()})
    return flat


#: MEMORY STATS fields whose growth per event is printed, with what each is.
MEMORY_STATS_FIELDS = (
    ("keys.count", "keys per event"),
    ("dataset.bytes", "dataset (used_memory less overhead)"),
    ("overhead.hashtable.main", "main keyspace table (entries, buckets, robj)"),
    ("overhead.hashtable.expires", "expiry table"),
    ("clients.normal", "client buffers"),
    ("overhead.total", "all overhead"),
)


def memory_stats_lines(before: dict[str, float], after: dict[str, float], events: int) -> str:
    """Growth of MEMORY STATS per event, as text."""
    lines = ["  MEMORY STATS, growth per event:"]
    for field, meaning in MEMORY_STATS_FIELDS:
        change = (after.get(field, 0.0) - before.get(field, 0.0)) / events
        unit = "" if field == "keys.count" else " B"
        lines.append(f"    {field:<28} {change:9.2f}{unit}   {meaning}")
    return "\n".join(lines)
