"""The chaos harness: real relay processes, a retrying provider, faulty targets, reconciliation.

- `RelayStack`: a real `relay serve` on a fixed loopback port (so it can be killed and restarted
  where the provider already points) and a real `relay worker --processes N`, on a real
  redis-server with AOF (`appendfsync always`) that can be SIGKILLed and started again.
- `Provider`: sends a bounded, rate-limited stream of events and retries connection errors,
  timeouts and 503 like a retrying provider (DigitalChalk, Learn365) would; it records every
  event the relay acknowledged (202) with the targets the reply says it was routed to.
- `ChaosTargets`: one loopback HTTP server per target, each with programmable faults (a share of
  500s, a share of requests that hang past the relay's timeout, down: connection refused and
  open connections dropped). Each records every `webhook-id` it accepted (answered 2xx).
- `reconcile`: waits (bounded) until every acknowledged event reached every target routed to it,
  then returns the figures: sent, acknowledged, delivered per target, lost, duplicated.

Every loop here is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import random
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis
from aiohttp import web

from relay.config.loading import load_routes
from relay.store import keys
from relay.store.records import attempts_field, reason_field, state_field
from tests.support.processes import RelayProcess, relay_env
from tests.support.redis_server import RedisServer, free_port

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
FIGURES_FILE = ARTIFACTS / "chaos-figures.txt"

#: The source every scenario posts to: typed by header, any body, no dedupe (each retry after a
#: lost 202 becomes a second event, which the figures count as "delivered, never acknowledged").
SOURCE = "chaos"

#: Short schedules so recovery fits the suite's time budget. 30 attempts spaced by up to 2 s
#: (plus the RQ scheduler's 1 s poll) outlast every outage the scenarios inject (at most ~10 s).
FAST_RETRY: Mapping[str, Any] = {"attempts": 30, "first": "250ms", "max": "2s"}


# ---------------------------------------------------------------------------------------------
# routes.toml
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetSpec:
    """A target of the test's routes.toml: its name, timeout (s) and faults."""

    name: str
    timeout: float = 2.0
    fail_rate: float = 0.0  # share of requests answered 500
    hang_rate: float = 0.0  # share of requests left unanswered past the relay's timeout


@dataclass(frozen=True)
class Route:
    """Events whose type matches `pattern` go to `targets`."""

    pattern: str
    targets: tuple[str, ...]


def routes_toml(
    targets: Sequence[TargetSpec], routes: Sequence[Route], urls: Mapping[str, str]
) -> str:
    """The routes.toml of a scenario: one header-typed source, fast retries, short timeouts."""
    retry = ", ".join(f"{k} = {orjson.dumps(v).decode()}" for k, v in FAST_RETRY.items())
    lines = [f'[sources.{SOURCE}]\nkind = "header"\n']
    for spec in targets:
        lines.append(f"[targets.{spec.name}]")
        lines.append(f'url = "{urls[spec.name]}"')
        lines.append(f'timeout = "{int(spec.timeout * 1000)}ms"')
        lines.append(f"retry = {{ {retry} }}\n")
    for route in routes:
        names = orjson.dumps(list(route.targets)).decode()
        lines.append(f'[[routes]]\nsource = "{SOURCE}"\nevents = ["{route.pattern}"]\n')
        lines.append(f"targets = {names}\n")
    return "\n".join(lines)


def expected_targets(routes: Sequence[Route], event_type: str) -> frozenset[str]:
    """Targets the routes send one event type to (the test's own model of routing)."""
    return frozenset(
        name
        for route in routes
        if fnmatch.fnmatchcase(event_type, route.pattern)
        for name in route.targets
    )


# ---------------------------------------------------------------------------------------------
# Targets with faults
# ---------------------------------------------------------------------------------------------


@dataclass
class _TargetState:
    spec: TargetSpec
    port: int
    rng: random.Random
    runner: web.AppRunner | None = None
    site: web.TCPSite | None = None
    down: bool = False
    accepted: Counter[str] = field(default_factory=Counter)  # webhook-id -> 2xx answers
    by_n: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    outcomes: Counter[str] = field(default_factory=Counter)  # ok, 500, hang, dropped


class ChaosTargets:
    """Loopback targets on their own ports, each with programmable faults; a context manager."""

    def __init__(self, specs: Sequence[TargetSpec], seed: int) -> None:
        self._lock = threading.Lock()
        self._states = {
            s.name: _TargetState(s, free_port(), random.Random(f"{seed}:{s.name}")) for s in specs
        }
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def url(self, name: str) -> str:
        """The URL of a target."""
        return f"http://127.0.0.1:{self._states[name].port}/hook/{name}"

    def urls(self) -> dict[str, str]:
        """URL of every target by name."""
        return {name: self.url(name) for name in self._states}

    def __enter__(self) -> ChaosTargets:
        self._thread.start()
        for name in self._states:
            self._call(self._start(name))
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self._call(self._stop_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(15)

    async def _start(self, name: str) -> None:
        state = self._states[name]
        if state.runner is None:
            app = web.Application()
            app.router.add_post("/hook/{name}", self._handle)
            state.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
            await state.runner.setup()
        state.site = web.TCPSite(state.runner, "127.0.0.1", state.port, reuse_address=True)
        await state.site.start()

    async def _stop_all(self) -> None:
        for state in self._states.values():
            if state.runner is not None:
                await state.runner.cleanup()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def set_down(self, name: str, down: bool) -> None:
        """Take a target down (refuse new connections, drop open ones) or bring it back."""
        state = self._states[name]
        if down == state.down:
            return
        with self._lock:
            state.down = down
        if down:
            site = state.site
            state.site = None
            if site is not None:
                self._call(site.stop())
        else:
            self._call(self._start(name))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        state = self._states[request.match_info["name"]]
        body = await request.read()
        webhook_id = request.headers.get("webhook-id", "")
        with self._lock:
            if state.down:
                # A keep-alive connection opened before the outage: drop it unanswered.
                state.outcomes["dropped"] += 1
                fault = "dropped"
            else:
                roll = state.rng.random()
                if roll < state.spec.fail_rate:
                    fault = "500"
                elif roll < state.spec.fail_rate + state.spec.hang_rate:
                    fault = "hang"
                else:
                    fault = "ok"
                state.outcomes[fault] += 1
                if fault == "ok":
                    # Counted before the answer is sent: a 2xx that leaves this server is seen.
                    state.accepted[webhook_id] += 1
                    state.by_n[_payload_number(body)].add(webhook_id)
        if fault == "dropped":
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=503)  # never reaches the (closed) connection
        if fault == "500":
            return web.Response(status=500, text="flapping")
        if fault == "hang":
            await asyncio.sleep(state.spec.timeout + 1.0)
            return web.Response(status=503, text="too late")  # the relay gave up already
        return web.Response(text="ok")

    def accepted(self) -> dict[str, Counter[str]]:
        """A snapshot: per target, 2xx answers per webhook-id."""
        with self._lock:
            return {name: Counter(s.accepted) for name, s in self._states.items()}

    def by_number(self) -> dict[str, dict[int, set[str]]]:
        """A snapshot: per target, the webhook-ids accepted for each provider event number."""
        with self._lock:
            return {
                name: {n: set(ids) for n, ids in s.by_n.items()} for name, s in self._states.items()
            }

    def outcomes(self) -> dict[str, Counter[str]]:
        """A snapshot: per target, how many requests got each treatment."""
        with self._lock:
            return {name: Counter(s.outcomes) for name, s in self._states.items()}


def _payload_number(body: bytes) -> int:
    try:
        return int(orjson.loads(body)["n"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return -1


# ---------------------------------------------------------------------------------------------
# Relay processes
# ---------------------------------------------------------------------------------------------


def child_pids(parent: int) -> list[int]:
    """Pids of the live children of a process (read from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == parent and fields[0] != "Z":
            found.append(int(entry))
    return found


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class RelayStack:
    """Redis (AOF, fsync always), one receiver on a fixed port, one `relay worker` supervisor."""

    def __init__(
        self,
        workdir: Path,
        redis_server: RedisServer,
        routes: str,
        *,
        worker_processes: int = 2,
        maintenance_interval: int = 2,
        log_level: str = "info",
    ) -> None:
        self.workdir = workdir
        self.redis = redis_server
        routes_path = workdir / "routes.toml"
        routes_path.write_text(routes)
        load_routes(routes_path, {})  # a broken test routes.toml fails here, not in a child
        self.env = relay_env(redis_server.url, routes_path, RELAY_LOG_LEVEL=log_level)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.worker_processes = worker_processes
        self.maintenance_interval = maintenance_interval
        self.receiver: RelayProcess | None = None
        self.workers: RelayProcess | None = None
        self._all: list[RelayProcess] = []

    @property
    def hook_url(self) -> str:
        """Where the provider posts."""
        return f"{self.base}/hooks/{SOURCE}"

    def start_receiver(self, timeout: float = 20.0) -> None:
        """Start `relay serve` on the stack's port; wait until /healthz answers."""
        proc = RelayProcess(["serve"], {**self.env, "PORT": str(self.port)}, self.workdir, "serve")
        self._all.append(proc)
        self.receiver = proc
        deadline = time.monotonic() + timeout
        while not _http_ok(f"{self.base}/healthz"):
            if not proc.alive():
                raise RuntimeError(f"relay serve exited:\n{proc.output()[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"relay serve not up:\n{proc.output()[-4000:]}")
            time.sleep(0.05)

    def kill_receiver(self) -> None:
        """SIGKILL the receiver, as a crash would."""
        if self.receiver is not None:
            self.receiver.kill()
            self.receiver = None

    def start_workers(self) -> None:
        """Start `relay worker --processes N` with a short maintenance interval."""
        args = [
            "worker",
            "--processes", str(self.worker_processes),
            "--maintenance-interval", str(self.maintenance_interval),
        ]  # fmt: skip
        proc = RelayProcess(args, self.env, self.workdir, "worker")
        self._all.append(proc)
        self.workers = proc

    def worker_pids(self) -> list[int]:
        """Pids of the worker processes (children of the `relay worker` supervisor)."""
        if self.workers is None or not self.workers.alive():
            return []
        return child_pids(self.workers.pid)

    def kill_one_worker(self, rng: random.Random) -> int | None:
        """SIGKILL one worker process chosen at random; the supervisor starts a new one."""
        pids = self.worker_pids()
        if not pids:
            return None
        pid = rng.choice(sorted(pids))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return pid

    def kill_all_workers(self) -> None:
        """SIGKILL the whole `relay worker` group (supervisor, workers, RQ scheduler)."""
        if self.workers is not None:
            self.workers.cleanup()
            self.workers = None

    def kill_redis(self) -> None:
        """SIGKILL redis-server (the AOF on disk survives)."""
        self.redis.kill()

    def start_redis(self) -> None:
        """Start redis-server again on the same port and data directory."""
        self.redis.start()

    def close(self) -> None:
        """Kill every process this stack started."""
        for proc in self._all:
            proc.cleanup()

    def outputs(self, tail: int = 3000) -> str:
        """The end of every process's output, for failure messages."""
        return "\n".join(f"--- {p.log_path.name}\n{p.output()[-tail:]}" for p in self._all)


# ---------------------------------------------------------------------------------------------
# The retrying provider
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    """An event the relay acknowledged: its id and the targets the reply routed it to."""

    number: int
    event_id: str
    targets: frozenset[str]
    expected: frozenset[str]  # the test's own routing model for the event's type


@dataclass
class Provider:
    """Posts `count` events at `rate` per second, retrying like a retrying provider would."""

    url: str
    event_types: Sequence[str]
    concurrency: int = 16
    request_timeout: float = 10.0
    max_attempts: int = 60  # per event
    give_up_after: float = 90.0  # seconds per event
    routes: Sequence[Route] = ()
    acks: list[Ack] = field(default_factory=list)
    attempts: int = 0  # HTTP attempts in all
    retried: Counter[str] = field(default_factory=Counter)  # why attempts were retried
    rejected: list[tuple[int, int, str]] = field(default_factory=list)  # n, status, body
    gave_up: list[int] = field(default_factory=list)
    sent: int = 0

    async def run(self, count: int, rate: float) -> None:
        """Send events 0..count-1 at a steady rate; return when each is acknowledged or given up."""
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        slots = asyncio.Semaphore(self.concurrency)
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            tasks = []
            start = loop.time()
            for n in range(count):
                await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
                await slots.acquire()
                self.sent += 1
                tasks.append(asyncio.create_task(self._send(session, n, slots)))
            await asyncio.gather(*tasks)

    async def _send(self, session: aiohttp.ClientSession, n: int, slots: asyncio.Semaphore) -> None:
        try:
            event_type = self.event_types[n % len(self.event_types)]
            body = orjson.dumps({"n": n, "type": event_type, "pad": "x" * 200})
            headers = {"content-type": "application/json", "x-event-type": event_type}
            rng = random.Random(n)
            deadline = time.monotonic() + self.give_up_after
            for attempt in range(self.max_attempts):
                if attempt:
                    await asyncio.sleep(min(2.0, 0.1 * 2**attempt) * rng.uniform(0.5, 1.0))
                if time.monotonic() > deadline:
                    break
                self.attempts += 1
                try:
                    async with session.post(self.url, data=body, headers=headers) as response:
                        answer = await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    self.retried[type(exc).__name__] += 1
                    continue
                if status == 202:
                    self._acknowledged(n, event_type, answer)
                    return
                if status == 503:
                    self.retried["503"] += 1
                    continue
                self.rejected.append((n, status, answer[:300].decode("utf-8", "replace")))
                return
            self.gave_up.append(n)
        finally:
            slots.release()

    def _acknowledged(self, n: int, event_type: str, answer: bytes) -> None:
        reply = orjson.loads(answer)
        [event] = reply["events"]
        self.acks.append(
            Ack(
                number=n,
                event_id=str(reply["id"]),
                targets=frozenset(event["targets"]),
                expected=expected_targets(self.routes, event_type),
            )
        )


# ---------------------------------------------------------------------------------------------
# Reconciliation and figures
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetFigures:
    """What one target got."""

    name: str
    expected: int  # acknowledged events routed to it
    delivered: int  # of those, how many it accepted (2xx) at least once
    lost: int
    duplicates: int  # extra 2xx deliveries of acknowledged events
    unacknowledged: int  # accepted webhook-ids the provider never saw a 202 for
    treatments: Mapping[str, int]  # requests per injected treatment (ok, 500, hang, dropped)


@dataclass(frozen=True)
class Figures:
    """The figures of one chaos run."""

    scenario: str
    seed: int
    sent: int
    http_attempts: int
    acknowledged: int
    not_acknowledged: int  # gave up or rejected
    misrouted: int  # acknowledged with targets other than the routes say
    targets: tuple[TargetFigures, ...]
    repeated_events: int  # provider events delivered under 2+ webhook-ids (a 202 lost in a crash)
    provider_retries: Mapping[str, int]  # why the provider had to retry (503, connection errors)
    stream_s: float
    drain_s: float
    chaos: tuple[str, ...]
    lost_detail: tuple[str, ...]

    @property
    def lost(self) -> int:
        """Acknowledged (event, target) deliveries that never arrived."""
        return sum(t.lost for t in self.targets)

    @property
    def duplicated(self) -> int:
        """Extra deliveries of acknowledged events, all targets."""
        return sum(t.duplicates for t in self.targets)

    def table(self) -> str:
        """The figures as a plain-text table."""
        lines = [
            f"chaos scenario: {self.scenario}   (seed {self.seed}, "
            f"stream {self.stream_s:.1f} s, drain {self.drain_s:.1f} s)",
            f"  events sent {self.sent}, HTTP attempts {self.http_attempts}, "
            f"acknowledged {self.acknowledged}, not acknowledged {self.not_acknowledged}, "
            f"misrouted {self.misrouted}",
            "  provider retries: "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.provider_retries.items())) or "none"),
            f"  {'target':<10}{'expected':>9}{'delivered':>10}{'lost':>6}{'dup':>6}"
            f"{'unacked':>9}  injected",
        ]
        for t in self.targets:
            treatments = " ".join(f"{k}={v}" for k, v in sorted(t.treatments.items()))
            lines.append(
                f"  {t.name:<10}{t.expected:>9}{t.delivered:>10}{t.lost:>6}{t.duplicates:>6}"
                f"{t.unacknowledged:>9}  {treatments}"
            )
        lines.append(
            f"  LOST {self.lost}   DUPLICATED {self.duplicated}   "
            f"events delivered under 2+ ids (202 lost in a crash, provider retried) "
            f"{self.repeated_events}"
        )
        lines.extend(f"  chaos: {c}" for c in self.chaos)
        lines.extend(f"  lost: {d}" for d in self.lost_detail)
        return "\n".join(lines)


def missing(acks: Sequence[Ack], accepted: Mapping[str, Counter[str]]) -> list[tuple[str, str]]:
    """(event id, target) pairs of acknowledged events a target has not accepted yet."""
    return [
        (ack.event_id, target)
        for ack in acks
        for target in sorted(ack.targets)
        if accepted.get(target, Counter())[ack.event_id] == 0
    ]


def wait_delivered(acks: Sequence[Ack], targets: ChaosTargets, timeout: float) -> float:
    """Wait (bounded) until every acknowledged event reached each of its targets; seconds taken."""
    started = time.monotonic()
    deadline = started + timeout
    while missing(acks, targets.accepted()) and time.monotonic() < deadline:
        time.sleep(0.25)
    return time.monotonic() - started


def _relay_state(conn: redis.Redis, event_id: str, target: str) -> str:
    """How the relay itself sees one delivery (for the report on a loss)."""
    try:
        raw = conn.hmget(
            keys.event_key(event_id),
            [state_field(target), attempts_field(target), reason_field(target)],
        )
    except redis.RedisError as exc:
        return f"(redis: {exc})"
    state, attempts, reason = (v.decode() if v is not None else None for v in raw)
    if state is None:
        return "no event hash in Redis"
    return f"state={state} attempts={attempts} reason={reason!r}"


def reconcile(
    scenario: str,
    seed: int,
    provider: Provider,
    targets: ChaosTargets,
    names: Sequence[str],
    *,
    redis_url: str,
    stream_s: float,
    drain_s: float,
    chaos: Sequence[str],
) -> Figures:
    """Compare what the provider had acknowledged with what every target accepted."""
    accepted = targets.accepted()
    treatments = targets.outcomes()
    acked_ids = {a.event_id for a in provider.acks}
    rows = []
    for name in names:
        mine = [a.event_id for a in provider.acks if name in a.targets]
        got = accepted[name]
        delivered = sum(1 for i in mine if got[i] > 0)
        rows.append(
            TargetFigures(
                name=name,
                expected=len(mine),
                delivered=delivered,
                lost=len(mine) - delivered,
                duplicates=sum(max(0, got[i] - 1) for i in mine),
                unacknowledged=sum(1 for i in got if i not in acked_ids),
                treatments=dict(treatments[name]),
            )
        )
    repeated = {
        n for per_n in targets.by_number().values() for n, ids in per_n.items() if len(ids) > 1
    }
    gaps = missing(provider.acks, accepted)
    detail: list[str] = []
    if gaps:
        conn = redis.Redis.from_url(redis_url, socket_timeout=2)
        try:
            detail = [f"{e} -> {t}: {_relay_state(conn, e, t)}" for e, t in gaps[:20]]
        finally:
            conn.close()
    return Figures(
        scenario=scenario,
        seed=seed,
        sent=provider.sent,
        http_attempts=provider.attempts,
        acknowledged=len(provider.acks),
        not_acknowledged=len(provider.gave_up) + len(provider.rejected),
        misrouted=sum(1 for a in provider.acks if a.targets != a.expected),
        targets=tuple(rows),
        repeated_events=len(repeated),
        provider_retries=dict(provider.retried),
        stream_s=stream_s,
        drain_s=drain_s,
        chaos=tuple(chaos),
        lost_detail=tuple(detail),
    )


def publish(figures: Figures) -> str:
    """Print the figures and append them to tests/artifacts/chaos-figures.txt; return the text."""
    text = figures.table()
    print("\n" + text)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with FIGURES_FILE.open("a") as out:
        out.write(f"[{stamp}]\n{text}\n\n")
    return text


# ---------------------------------------------------------------------------------------------
# Running a scenario
# ---------------------------------------------------------------------------------------------


class ChaosLog:
    """Timestamped notes of what the chaos did, for the report."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        """Record one chaos action at the current time."""
        self.notes.append(f"t={time.monotonic() - self.started:5.1f}s {text}")


Chaos = Callable[[asyncio.Event, ChaosLog], Any]


async def stream_with_chaos(
    provider: Provider, count: int, rate: float, chaos: Chaos, log: ChaosLog
) -> None:
    """Run the provider's stream and the chaos coroutine side by side until the stream ends."""
    done = asyncio.Event()
    chaos_task = asyncio.create_task(chaos(done, log))
    try:
        await provider.run(count, rate)
    finally:
        done.set()
        await chaos_task


async def sleep_unless(done: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True if the stream ended meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), seconds)
    return done.is_set()


@dataclass(frozen=True)
class Scenario:
    """One chaos run: targets and routes, the stream, and how long delivery may take after it."""

    name: str
    targets: tuple[TargetSpec, ...]
    routes: tuple[Route, ...]
    event_types: tuple[str, ...]
    count: int  # events the provider sends
    rate: float  # events per second
    drain_timeout: float  # seconds after the stream for every delivery to arrive
    worker_processes: int = 2


ChaosFactory = Callable[[RelayStack, ChaosTargets, random.Random], Chaos]

#: The two targets and routes the process-level scenarios share: orders to both, users to one.
TWO_TARGETS = (TargetSpec("crm"), TargetSpec("analytics"))
ORDER_AND_USER_ROUTES = (
    Route("order.*", ("crm", "analytics")),
    Route("user.*", ("analytics",)),
)
ORDER_AND_USER_EVENTS = ("order.paid", "user.created")


def kill_and_restart(
    what: str,
    times: int,
    between: tuple[float, float],
    down: tuple[float, float],
    kill: Callable[[RelayStack], None],
    start: Callable[[RelayStack], None],
    started_note: str,
) -> ChaosFactory:
    """Chaos that `times` times waits `between` s, kills `what`, leaves it `down` s, restarts it."""

    def factory(stack: RelayStack, targets: ChaosTargets, rng: random.Random) -> Chaos:
        async def chaos(done: asyncio.Event, log: ChaosLog) -> None:
            for _ in range(times):
                if await sleep_unless(done, rng.uniform(*between)):
                    return
                await asyncio.to_thread(kill, stack)
                log.note(f"SIGKILL {what}")
                await asyncio.sleep(rng.uniform(*down))
                await asyncio.to_thread(start, stack)
                log.note(started_note)

        return chaos

    return factory


@dataclass(frozen=True)
class Outcome:
    """The figures of a run, and the processes' output when something was lost."""

    figures: Figures
    diagnostics: str

    def failure_message(self) -> str:
        """What an assertion prints when the run lost events."""
        return f"{self.figures.table()}\n{self.diagnostics}"


def run_scenario(
    scenario: Scenario,
    seed: int,
    workdir: Path,
    redis_server: RedisServer,
    chaos: ChaosFactory,
) -> Outcome:
    """Start everything, stream with chaos, wait for delivery, reconcile, publish the figures."""
    rng = random.Random(seed)
    with ChaosTargets(scenario.targets, seed) as targets:
        stack = RelayStack(
            workdir,
            redis_server,
            routes_toml(scenario.targets, scenario.routes, targets.urls()),
            worker_processes=scenario.worker_processes,
        )
        try:
            stack.start_workers()
            stack.start_receiver()
            provider = Provider(stack.hook_url, scenario.event_types, routes=scenario.routes)
            log = ChaosLog()
            started = time.monotonic()
            asyncio.run(
                stream_with_chaos(
                    provider, scenario.count, scenario.rate, chaos(stack, targets, rng), log
                )
            )
            stream_s = time.monotonic() - started
            drain_s = wait_delivered(provider.acks, targets, scenario.drain_timeout)
            figures = reconcile(
                scenario.name,
                seed,
                provider,
                targets,
                [t.name for t in scenario.targets],
                redis_url=redis_server.url,
                stream_s=stream_s,
                drain_s=drain_s,
                chaos=log.notes,
            )
            publish(figures)
            diagnostics = ""
            if figures.lost or provider.rejected or provider.gave_up:
                diagnostics = (
                    f"rejected: {provider.rejected[:10]}\ngave up: {provider.gave_up[:20]}\n"
                    f"retried: {dict(provider.retried)}\n{stack.outputs()}"
                )
            return Outcome(figures, diagnostics)
        finally:
            stack.close()
            keep_logs(workdir, scenario.name)


def log_dir(name: str) -> Path:
    """Where the latest run of scenario `name` keeps its process logs."""
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:40]
    return ARTIFACTS / "chaos-logs" / slug


def keep_logs(workdir: Path, name: str) -> Path:
    """Copy the run's process logs to tests/artifacts/chaos-logs/<scenario>/ (latest run only)."""
    kept = log_dir(name)
    shutil.rmtree(kept, ignore_errors=True)
    kept.mkdir(parents=True)
    for log_file in sorted(workdir.glob("*.log")):
        shutil.copy2(log_file, kept / log_file.name)
    for redis_log in sorted(workdir.glob("redis-*/redis.log")):
        shutil.copy2(redis_log, kept / f"{redis_log.parent.name}.log")
    shutil.copy2(workdir / "routes.toml", kept / "routes.toml")
    return kept


def assert_nothing_lost(outcome: Outcome) -> None:
    """The chaos suite's claims: every event was acknowledged, routed as configured, delivered."""
    figures = outcome.figures
    assert figures.acknowledged == figures.sent, outcome.failure_message()
    assert figures.not_acknowledged == 0, outcome.failure_message()
    assert figures.misrouted == 0, outcome.failure_message()
    assert figures.lost == 0, outcome.failure_message()
    for target in figures.targets:
        assert target.delivered == target.expected > 0, outcome.failure_message()


async def target_outages(
    targets: ChaosTargets,
    done: asyncio.Event,
    log: ChaosLog,
    rng: random.Random,
    *,
    flicker: str,
    outage: str,
    outage_window: tuple[float, float] = (2.0, 12.0),
) -> None:
    """`outage` is down once for a while then back; `flicker` refuses connections for 1-2 s
    every 2-4 s until the stream ends. Both are up again when this returns."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    flicker_down = False
    flicker_next = start + rng.uniform(0.5, 1.5)
    outage_state = "before"
    try:
        for _ in range(3000):  # 0.1 s ticks: at most ~5 minutes
            now = loop.time() - start
            if outage_state == "before" and now >= outage_window[0]:
                await asyncio.to_thread(targets.set_down, outage, True)
                log.note(f"target {outage} down (refuses connections, drops open ones)")
                outage_state = "down"
            elif outage_state == "down" and now >= outage_window[1]:
                await asyncio.to_thread(targets.set_down, outage, False)
                log.note(f"target {outage} back up")
                outage_state = "after"
            if loop.time() >= flicker_next and not done.is_set():
                flicker_down = not flicker_down
                await asyncio.to_thread(targets.set_down, flicker, flicker_down)
                log.note(f"target {flicker} {'down' if flicker_down else 'back up'}")
                pause = rng.uniform(1.0, 2.0) if flicker_down else rng.uniform(2.0, 4.0)
                flicker_next = loop.time() + pause
            if done.is_set() and outage_state == "after":
                return
            await asyncio.sleep(0.1)
    finally:
        await asyncio.to_thread(targets.set_down, flicker, False)
        await asyncio.to_thread(targets.set_down, outage, False)


#: The faulty targets of the target scenarios: healthy, 30% 500s, 15% hangs past a 1 s
#: timeout, connections refused now and then, and down for ten seconds.
FAULTY_TARGETS = (
    TargetSpec("steady"),
    TargetSpec("flappy", fail_rate=0.3),
    TargetSpec("hangs", timeout=1.0, hang_rate=0.15),
    TargetSpec("refuses"),
    TargetSpec("outage"),
)
FAULTY_ROUTES = (
    Route("order.*", ("steady", "flappy", "hangs", "refuses")),
    Route("user.*", ("steady", "outage", "flappy")),
)
