"""A target down for a while behind its circuit breaker: the scenario tests/chaos/test_breaker.py
runs scaled down and bench/breaker.py runs at any scale (the issue's is 10 minutes at 20/s).

Real `relay serve` and `relay worker --processes N` on a real redis-server (tests.chaos.harness),
a retrying provider streaming at a steady rate, and one target, `crm`, that answers 200, then
503 for the whole outage, then 200 again. The sink records every request it gets (arrival time,
webhook-id, x-relay-attempt, its answer); a watcher polls the breaker's record in Redis so the
figures know exactly when it opened and closed. Nothing is typed during the run.

Every loop here is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from aiohttp import web

from relay.store import keys
from relay.store.breakers import read_breakers
from relay.store.records import attempts_field
from tests.chaos.harness import (
    ARTIFACTS,
    SOURCE,
    Chaos,
    ChaosLog,
    Provider,
    RelayStack,
    Route,
    keep_logs,
    sleep_unless,
    stream_with_chaos,
)
from tests.support.loopback import LoopbackServer
from tests.support.redis_server import RedisServer
from tests.support.stored import received_times

TARGET = "crm"
#: A request reaching the sink this soon after the breaker opened was started before it opened
#: (an attempt already under way); later ones are probes. The sink answers at once, so the real
#: lag is a few milliseconds.
STRAGGLER_WINDOW = 0.5
#: Watch the breaker's record this often (s): the figures' precision on open and close times.
WATCH_INTERVAL = 0.05
FIGURES_FILE = ARTIFACTS / "breaker-figures.txt"


@dataclass(frozen=True)
class Outage:
    """The scenario: a stream at `rate`/s; the target up `before` s, down `down` s, then up."""

    rate: float = 20.0
    before: float = 5.0
    down: float = 60.0
    after: float = 10.0  # the stream goes on this long after the target is back
    failures: int = 20
    probe: float = 5.0
    timeout: float = 2.0
    attempts: int = 10  # the target's retry budget per delivery
    drain_timeout: float = 120.0
    worker_processes: int = 2

    @property
    def count(self) -> int:
        """Events the provider sends."""
        return int(self.rate * (self.before + self.down + self.after))

    def routes_toml(self, url: str) -> str:
        """One header-typed source, every event to the target; retries outlast no outage."""
        return (
            f'[sources.{SOURCE}]\nkind = "header"\n\n'
            f'[targets.{TARGET}]\nurl = "{url}"\ntimeout = "{self.timeout}s"\n'
            f'retry = {{ attempts = {self.attempts}, first = "1s", max = "5s" }}\n'
            f'breaker = {{ failures = {self.failures}, probe = "{self.probe}s" }}\n\n'
            f'[[routes]]\nsource = "{SOURCE}"\nevents = ["*"]\ntargets = ["{TARGET}"]\n'
        )


@dataclass(frozen=True)
class Request:
    """One request the sink got."""

    at: float  # time.time() on arrival
    webhook_id: str
    attempt: int  # x-relay-attempt
    status: int  # what the sink answered


class Sink(LoopbackServer):
    """The target: 200, or 503 while `down`; records every request."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.requests: list[Request] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """Where the target is."""
        return f"http://127.0.0.1:{self.port}/hook"

    def build_app(self) -> web.Application:
        """One route: the hook."""
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        return app

    async def _hook(self, request: web.Request) -> web.Response:
        await request.read()
        status = 503 if self.down else 200
        with self._lock:
            self.requests.append(
                Request(
                    at=time.time(),
                    webhook_id=request.headers.get("webhook-id", ""),
                    attempt=int(request.headers.get("x-relay-attempt", "0")),
                    status=status,
                )
            )
        return web.Response(status=status, text="down" if status == 503 else "ok")

    def snapshot(self) -> list[Request]:
        """Every request so far, in arrival order."""
        with self._lock:
            return list(self.requests)

    def delivered(self) -> set[str]:
        """Webhook-ids answered 2xx at least once."""
        return {r.webhook_id for r in self.snapshot() if r.status == 200}


@dataclass
class BreakerWatch:
    """Polls the target's breaker record in a thread: when it opened, when it was seen closed."""

    redis_url: str
    opened: list[float] = field(default_factory=list)  # opened_at of each opening (exact)
    closed: list[float] = field(default_factory=list)  # when each was first seen closed
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> BreakerWatch:
        """Start polling."""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        conn = redis.Redis.from_url(self.redis_url, socket_timeout=2)
        try:
            while not self._stop.wait(WATCH_INTERVAL):
                try:
                    state = read_breakers(conn, [TARGET]).get(TARGET)
                except redis.RedisError:
                    continue
                opened_at = None if state is None else state.opened_at
                if opened_at is not None and (not self.opened or self.opened[-1] != opened_at):
                    self.opened.append(opened_at)
                elif opened_at is None and len(self.closed) < len(self.opened):
                    self.closed.append(time.time())
        finally:
            conn.close()


@dataclass(frozen=True)
class OutageFigures:
    """What one outage run came to."""

    outage: Outage
    sent: int
    acknowledged: int
    delivered: int  # acknowledged events the target accepted (2xx) at least once
    down_at: float
    up_at: float
    opened: tuple[float, ...]
    closed: tuple[float, ...]
    requests: int  # every request the target got
    failed_requests: int
    requests_while_open: int  # arrived after opening (past the straggler window), before closing
    probe_gaps: tuple[float, ...]  # seconds between consecutive requests while open
    held: int  # events received while open that no probe took
    held_first_attempt: int  # of those, delivered by their first attempt (none used while open)
    attempts_recorded: int  # sum of every event's attempt counter in Redis
    attempts_counter: int  # the target's attempts counter (relay:stats:target)
    drain_s: float  # from the target's recovery to the last event received before it delivered
    opened_lines: int  # "circuit breaker opened" lines in the workers' logs
    closed_lines: int

    @property
    def lost(self) -> int:
        """Acknowledged events never delivered."""
        return self.acknowledged - self.delivered

    @property
    def open_s(self) -> float:
        """How long the breaker was open (the first opening to the last closing)."""
        return (self.closed[-1] if self.closed else self.up_at) - self.opened[0]

    @property
    def probes_allowed(self) -> int:
        """At most one probe per interval while open (the interval is `probe`, or the timeout)."""
        interval = max(self.outage.probe, self.outage.timeout)
        return int(self.open_s // interval) + 1

    def table(self) -> str:
        """The figures as plain text."""
        o = self.outage
        gaps = f"min gap {min(self.probe_gaps):.2f} s" if self.probe_gaps else "one probe"
        return "\n".join(
            [
                f"breaker outage: {o.rate:g} events/s, target down {o.down:g} s, "
                f"breaker {{ failures = {o.failures}, probe = {o.probe:g}s }}, "
                f"{o.worker_processes} worker processes",
                f"  events sent {self.sent}, acknowledged {self.acknowledged}, delivered "
                f"{self.delivered}, LOST {self.lost}",
                f"  breaker opened {len(self.opened)}x, {self.opened[0] - self.down_at:.2f} s "
                f"after the outage began; closed {len(self.closed)}x, "
                + (
                    f"{self.closed[-1] - self.up_at:.2f} s after the target was back"
                    if self.closed
                    else "never"
                ),
                f"  open {self.open_s:.1f} s: {self.requests_while_open} requests reached the "
                f"target (probes; at most {self.probes_allowed} allowed; {gaps}) while "
                f"{self.held} events were held",
                f"  held events delivered by their first attempt: {self.held_first_attempt} of "
                f"{self.held} (no attempt used while open)",
                f"  requests in all {self.requests} ({self.failed_requests} failed); attempts "
                f"recorded {self.attempts_recorded}, target counter {self.attempts_counter}",
                f"  whole backlog delivered {self.drain_s:.1f} s after the target was back, no "
                f"command typed; log lines: opened {self.opened_lines}, closed "
                f"{self.closed_lines}",
            ]
        )


def _attempts(conn: redis.Redis, event_ids: list[str]) -> dict[str, int]:
    with conn.pipeline(transaction=False) as pipe:
        for event_id in event_ids:
            pipe.hget(keys.event_key(event_id), attempts_field(TARGET))
        values = pipe.execute()
    return {e: int(v or 0) for e, v in zip(event_ids, values, strict=True)}


def _outage(sink: Sink, outage: Outage, moments: dict[str, float]) -> Chaos:
    """The chaos: the target down after `before` s, back up `down` s later."""

    async def chaos(done: asyncio.Event, log: ChaosLog) -> None:
        await sleep_unless(done, outage.before)
        sink.down = True
        moments["down"] = time.time()
        log.note(f"target {TARGET} down (503)")
        await asyncio.sleep(outage.down)
        sink.down = False
        moments["up"] = time.time()
        log.note(f"target {TARGET} back up")

    return chaos


def run_outage(outage: Outage, workdir: Path, redis_server: RedisServer) -> OutageFigures:
    """Run the scenario, wait (bounded) for every acknowledged event, and measure."""
    moments: dict[str, float] = {}
    with Sink() as sink:
        stack = RelayStack(
            workdir,
            redis_server,
            outage.routes_toml(sink.url),
            worker_processes=outage.worker_processes,
        )
        watch = BreakerWatch(redis_server.url).start()
        try:
            stack.start_workers()
            stack.start_receiver()
            routes = (Route("*", (TARGET,)),)
            provider = Provider(stack.hook_url, ("order.paid",), routes=routes)
            asyncio.run(
                stream_with_chaos(
                    provider, outage.count, outage.rate, _outage(sink, outage, moments), ChaosLog()
                )
            )
            acked = [a.event_id for a in provider.acks]
            deadline = time.monotonic() + outage.drain_timeout
            while not set(acked) <= sink.delivered() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(2 * WATCH_INTERVAL)
            return _measure(outage, provider, sink, watch, stack, moments, redis_server.url)
        finally:
            watch.stop()
            stack.close()
            keep_logs(workdir, "breaker outage")


def _measure(
    outage: Outage,
    provider: Provider,
    sink: Sink,
    watch: BreakerWatch,
    stack: RelayStack,
    moments: dict[str, float],
    redis_url: str,
) -> OutageFigures:
    requests = sink.snapshot()
    acked = [a.event_id for a in provider.acks]
    delivered_at = {r.webhook_id: r.at for r in requests if r.status == 200}
    opened, closed = tuple(watch.opened), tuple(watch.closed)
    assert opened, "the breaker never opened"
    start = opened[0] + STRAGGLER_WINDOW
    # While the target is down only probes reach it, and the first one it accepts closes the
    # breaker: it ends the open window (the watcher sees the close up to WATCH_INTERVAL later,
    # when the backlog is already on its way).
    accepted = [r.at for r in requests if r.at >= start and r.status == 200]
    end = accepted[0] if accepted else (closed[-1] if closed else moments["up"])
    while_open = [r for r in requests if start <= r.at <= end]
    times = sorted(r.at for r in while_open)
    tried = {r.webhook_id for r in requests if r.status != 200}
    conn = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        attempts = _attempts(conn, acked)
        counter = int(conn.hget(keys.target_stats_key(TARGET), "attempts") or 0)
        received = received_times(conn)
    finally:
        conn.close()
    held = [e for e in acked if opened[0] <= received.get(e, 0.0) <= end and e not in tried]
    logs = stack.workers.output() if stack.workers is not None else ""
    # The backlog: every event received before the target was back.
    backlog = [
        delivered_at[e]
        for e in acked
        if e in delivered_at and received.get(e, 0.0) <= moments["up"]
    ]
    return OutageFigures(
        outage=outage,
        sent=provider.sent,
        acknowledged=len(acked),
        delivered=sum(1 for e in acked if e in delivered_at),
        down_at=moments["down"],
        up_at=moments["up"],
        opened=opened,
        closed=closed,
        requests=len(requests),
        failed_requests=sum(1 for r in requests if r.status != 200),
        requests_while_open=len(while_open),
        probe_gaps=tuple(b - a for a, b in itertools.pairwise(times)),
        held=len(held),
        held_first_attempt=sum(1 for e in held if attempts.get(e) == 1),
        attempts_recorded=sum(attempts.values()),
        attempts_counter=counter,
        drain_s=max(backlog, default=moments["up"]) - moments["up"],
        opened_lines=logs.count('"circuit breaker opened"'),
        closed_lines=logs.count('"circuit breaker closed"'),
    )


def publish(figures: OutageFigures) -> str:
    """Print the figures and append them to tests/artifacts/breaker-figures.txt."""
    text = figures.table()
    print("\n" + text)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with FIGURES_FILE.open("a") as out:
        out.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}]\n{text}\n\n")
    return text
