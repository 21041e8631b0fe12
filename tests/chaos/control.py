"""Delivery control under chaos: a keyed provider, a sink that checks order and open requests.

- `ControlSink`: one loopback target that answers a share of requests 500 (at random, or always
  for some keys), optionally after a delay, and records every request: the FIFO key and sequence
  number of its body, its status, when it came, and the most requests ever open at once.
- `KeyedProvider`: posts `per_key` events for each of `keys` keys, each key's events one after
  another (the next only once the relay acknowledged the last, so each key's intake order is
  its send order), the keys side by side; retries 503 and connection errors like a retrying
  provider.
- `run_control`: starts redis-server (AOF, fsync always), `relay serve` and `relay worker
  --processes 2` (tests/chaos/harness.RelayStack), streams, and SIGKILLs worker processes every
  few seconds and restarts Redis once while deliveries are under way, until every acknowledged
  event was accepted or the drain limit passed; returns the figures.

Used by tests/chaos/test_control.py (CI sizes) and bench/control.py (the issue's full sizes).
Every loop here is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from tests.chaos.harness import SOURCE, ChaosLog, RelayStack, sleep_unless
from tests.support.loopback import LoopbackServer
from tests.support.redis_server import RedisServer

#: The sink's name in routes.toml and its path.
TARGET = "sink"


@dataclass(frozen=True)
class Seen:
    """One request the sink got."""

    key: str
    seq: int
    status: int
    webhook_id: str
    at: float


class ControlSink(LoopbackServer):
    """The target of a scenario; counts order and concurrency (use as a context manager)."""

    def __init__(
        self,
        *,
        fail_rate: float = 0.0,
        delay: float = 0.0,
        seed: int = 0,
        fail_keys: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__()
        self.fail_rate = fail_rate
        self.delay = delay
        self.fail_keys = fail_keys
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.seen: list[Seen] = []
        self.open = 0
        self.max_open = 0

    @property
    def url(self) -> str:
        """Where the relay delivers."""
        return f"http://127.0.0.1:{self.port}/hook"

    def build_app(self) -> web.Application:
        """One route: POST /hook."""
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        return app

    async def _hook(self, request: web.Request) -> web.Response:
        with self._lock:
            self.open += 1
            self.max_open = max(self.max_open, self.open)
        try:
            doc = orjson.loads(await request.read())
            if self.delay:
                await asyncio.sleep(self.delay)
            key, seq = str(doc.get("memberId", "")), int(doc.get("seq", -1))
            with self._lock:
                failed = key in self.fail_keys or self._rng.random() < self.fail_rate
                status = 500 if failed else 200
                # Recorded before the answer leaves: a 2xx a killed worker never read is seen.
                seen = Seen(key, seq, status, request.headers.get("webhook-id", ""), time.time())
                self.seen.append(seen)
        finally:
            with self._lock:
                self.open -= 1
        return web.Response(status=status, text="ok" if status == 200 else "flaky")

    def snapshot(self) -> list[Seen]:
        """Every request so far, in arrival order."""
        with self._lock:
            return list(self.seen)


@dataclass(frozen=True)
class OrderFigures:
    """What the sink saw of each key against what the provider had acknowledged."""

    acknowledged: int  # events, all keys
    delivered: int  # acknowledged events accepted (2xx) at least once
    violations: int  # an event accepted before an earlier one of its key was
    duplicates: int  # 2xx answers beyond the first per event (at-least-once)
    requests: int
    failed_requests: int


def order_figures(seen: list[Seen], acked: Mapping[str, int]) -> OrderFigures:
    """Count order violations: per key, an event accepted for the first time while an earlier
    event of its key (a lower sequence number) had not been accepted yet."""
    accepted: dict[str, set[int]] = defaultdict(set)
    violations = duplicates = failed = 0
    for s in seen:
        if s.status != 200:
            failed += 1
            continue
        mine = accepted[s.key]
        if s.seq in mine:
            duplicates += 1
            continue
        if len(mine) != s.seq or any(i not in mine for i in range(s.seq)):
            violations += 1
        mine.add(s.seq)
    delivered = sum(len({i for i in accepted[k] if i < n}) for k, n in acked.items())
    return OrderFigures(
        acknowledged=sum(acked.values()),
        delivered=delivered,
        violations=violations,
        duplicates=duplicates,
        requests=len(seen),
        failed_requests=failed,
    )


@dataclass
class KeyedProvider:
    """Posts each key's events in order, one at a time per key, every key side by side."""

    url: str
    keys: int
    per_key: int
    rate: float = 0.0  # events per second in all (0: as fast as the relay acknowledges)
    give_up_after: float = 120.0
    acked: dict[str, int] = field(default_factory=dict)  # key -> events acknowledged (0..n-1)
    retried: Counter[str] = field(default_factory=Counter)
    rejected: list[tuple[str, int, int]] = field(default_factory=list)

    def key(self, index: int) -> str:
        """The FIFO key of the index-th key."""
        return f"member-{index:03d}"

    async def run(self) -> None:
        """Send every key's events; return when all are acknowledged or given up."""
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(limit=self.keys)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await asyncio.gather(*(self._send_key(session, i) for i in range(self.keys)))

    async def _send_key(self, session: aiohttp.ClientSession, index: int) -> None:
        key = self.key(index)
        self.acked[key] = 0
        gap = self.keys / self.rate if self.rate else 0.0
        deadline = time.monotonic() + self.give_up_after
        await asyncio.sleep(gap * index / self.keys)  # spread the keys' first sends
        for seq in range(self.per_key):
            body = orjson.dumps({"event": "member.updated", "memberId": key, "seq": seq})
            if not await self._post(session, key, seq, body, deadline):
                return  # the next of this key must never overtake it
            self.acked[key] = seq + 1
            if gap:
                await asyncio.sleep(gap)

    async def _post(
        self, session: aiohttp.ClientSession, key: str, seq: int, body: bytes, deadline: float
    ) -> bool:
        headers = {"content-type": "application/json"}
        while time.monotonic() < deadline:
            try:
                async with session.post(self.url, data=body, headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.retried[type(exc).__name__] += 1
                await asyncio.sleep(0.2)
                continue
            if status == 202:
                return True
            if status == 503:
                self.retried["503"] += 1
                await asyncio.sleep(0.2)
                continue
            self.rejected.append((key, seq, status))
            return False
        return False


def control_routes(url: str, setting: str, *, timeout: str = "2s") -> str:
    """routes.toml: one JSON source to the sink with `setting` (e.g. 'order = "body:memberId"')
    and fast retries, so no event runs out of attempts within a run."""
    return (
        f'[sources.{SOURCE}]\nkind = "json"\n\n'
        f'[targets.{TARGET}]\nurl = "{url}"\ntimeout = "{timeout}"\n{setting}\n'
        'retry = { attempts = 40, first = "100ms", max = "1s" }\n\n'
        f'[[routes]]\nsource = "{SOURCE}"\nevents = ["*"]\ntargets = ["{TARGET}"]\n'
    )


@dataclass(frozen=True)
class Chaos:
    """What to do while deliveries are under way."""

    kill_every: tuple[float, float] = (2.0, 4.0)  # seconds between worker SIGKILLs
    kills: int = 0  # at most this many
    redis_restart_at: float | None = None  # seconds after the start (once)
    redis_down: float = 1.5  # seconds


@dataclass(frozen=True)
class RunFigures:
    """A scenario's outcome: order, concurrency, and what the chaos did."""

    order: OrderFigures
    max_open: int
    stream_s: float
    total_s: float
    notes: tuple[str, ...]
    retried: Mapping[str, int]
    rejected: int

    def table(self, title: str) -> str:
        """The figures as text for the run's output."""
        o = self.order
        return "\n".join(
            [
                title,
                f"  events acknowledged {o.acknowledged}, delivered {o.delivered}, "
                f"order violations {o.violations}, duplicates {o.duplicates}",
                f"  requests {o.requests} ({o.failed_requests} answered 500); most open at once "
                f"{self.max_open}",
                f"  stream {self.stream_s:.1f}s, until all delivered {self.total_s:.1f}s; provider "
                f"retries {dict(self.retried)}, rejected {self.rejected}",
                f"  chaos: {len(self.notes)} actions",
                *(f"    {note}" for note in self.notes),
            ]
        )


async def _chaos(stack: RelayStack, chaos: Chaos, rng: random.Random, done: asyncio.Event,
                 log: ChaosLog) -> None:  # fmt: skip
    start = time.monotonic()
    restart_pending = chaos.redis_restart_at is not None
    next_kill = start + rng.uniform(*chaos.kill_every)
    kills = 0
    for _ in range(100_000):  # 0.05 s ticks; bounded by `done`, set by the drain limit too
        if await sleep_unless(done, 0.05):
            return
        now = time.monotonic()
        if restart_pending and now - start >= (chaos.redis_restart_at or 0.0):
            restart_pending = False
            await asyncio.to_thread(stack.kill_redis)
            log.note("SIGKILL redis-server")
            await asyncio.sleep(chaos.redis_down)
            await asyncio.to_thread(stack.start_redis)
            log.note("redis-server started again (AOF)")
        if kills < chaos.kills and now >= next_kill:
            pid = await asyncio.to_thread(stack.kill_one_worker, rng)
            kills += 1
            log.note(f"SIGKILL worker process {pid}" if pid else "no worker process to kill")
            next_kill = now + rng.uniform(*chaos.kill_every)


async def _until_delivered(
    sink: ControlSink, provider: KeyedProvider, done: asyncio.Event, limit: float
) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        figures = order_figures(sink.snapshot(), provider.acked)
        if figures.delivered >= provider.keys * provider.per_key:
            break
        await asyncio.sleep(0.25)
    done.set()


def run_control(
    workdir: Path,
    redis_server: RedisServer,
    sink: ControlSink,
    setting: str,
    provider: KeyedProvider,
    chaos: Chaos,
    *,
    seed: int,
    drain_limit: float,
    timeout: str = "2s",
) -> RunFigures:
    """Start the stack, stream with chaos until all is delivered (or `drain_limit` s after the
    stream), and return the figures. The sink must be started (a context manager) already."""
    stack = RelayStack(workdir, redis_server, control_routes(sink.url, setting, timeout=timeout))
    rng = random.Random(seed)
    log = ChaosLog()
    try:
        stack.start_workers()
        stack.start_receiver()
        provider.url = stack.hook_url

        async def scenario() -> tuple[float, float]:
            done = asyncio.Event()
            started = time.monotonic()
            chaos_task = asyncio.create_task(_chaos(stack, chaos, rng, done, log))
            await provider.run()
            stream_s = time.monotonic() - started
            await _until_delivered(sink, provider, done, drain_limit)
            await chaos_task
            return stream_s, time.monotonic() - started

        stream_s, total_s = asyncio.run(scenario())
    finally:
        stack.close()
    return RunFigures(
        order=order_figures(sink.snapshot(), provider.acked),
        max_open=sink.max_open,
        stream_s=stream_s,
        total_s=total_s,
        notes=tuple(log.notes),
        retried=dict(provider.retried),
        rejected=len(provider.rejected),
    )
