"""Traffic and figures of the Sentinel chaos runs.

- `Target`: one HTTP target recording when each `webhook-id` was answered 2xx.
- `Traffic`: a paced stream of events, alternating between the two receivers and between two
  sources: `retrying` (no spool; the provider retries 503s and connection errors, each retry a
  new event) and `once` (`spool = true`; a call-once provider: one attempt, any non-202 is an
  event the provider never sends again).
- `Figures`: acknowledged, delivered, lost (acknowledged, never delivered), duplicates,
  non-202 answers per source, the longest intake gap of the retrying source, and per fault
  how long the intake went without a 202 and how long after the election deliveries resumed.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import orjson
import redis
from aiohttp import web

from relay.store import keys
from relay.store.records import RECEIVED_FIELD, state_field
from tests.chaos.failover_stack import RECEIVERS, FailoverStack, FaultTimes
from tests.support.loopback import LoopbackServer

SOURCES = ("retrying", "once")


class Target(LoopbackServer):
    """Answers 200 to every delivery and notes when each webhook-id arrived."""

    def __init__(self, host: str) -> None:
        self.bind_host = host
        super().__init__()
        self._lock = threading.Lock()
        self.arrivals: list[tuple[str, float]] = []  # (webhook-id, monotonic time)

    @property
    def url(self) -> str:
        return f"http://{self.bind_host}:{self.port}/crm"

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/crm", self._hook)
        return app

    async def _hook(self, request: web.Request) -> web.Response:
        await request.read()
        with self._lock:
            self.arrivals.append((request.headers.get("webhook-id", ""), time.monotonic()))
        return web.Response(text="ok")

    def delivered(self) -> Counter[str]:
        with self._lock:
            return Counter(i for i, _ in self.arrivals)

    def first_after(self, moment: float) -> float | None:
        with self._lock:
            return min((t for _, t in self.arrivals if t >= moment), default=None)


@dataclass
class Answer:
    source: str
    sent: float
    answered: float
    status: int  # 0: connection error or timeout


@dataclass
class Traffic:
    """The provider side of a run."""

    stack: FailoverStack
    answers: list[Answer] = field(default_factory=list)
    acked: dict[str, float] = field(default_factory=dict)  # event id -> when its 202 came
    gave_up: int = 0

    async def run(self, count: int, rate: float, concurrency: int = 48) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        slots = asyncio.Semaphore(concurrency)
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession(timeout=timeout) as session:
            tasks = []
            start = loop.time()
            for n in range(count):
                await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
                await slots.acquire()
                source = SOURCES[n % 2]
                receiver = RECEIVERS[(n // 2) % 2]
                tasks.append(asyncio.create_task(self._send(session, n, source, receiver, slots)))
            await asyncio.gather(*tasks)

    async def _send(
        self,
        session: aiohttp.ClientSession,
        n: int,
        source: str,
        receiver: str,
        slots: asyncio.Semaphore,
    ) -> None:
        try:
            body = orjson.dumps({"n": n})
            headers = {"content-type": "application/json", "x-event-type": "order.paid"}
            rng = random.Random(n)
            attempts = 1 if source == "once" else 40
            for attempt in range(attempts):
                if attempt:
                    await asyncio.sleep(min(1.0, 0.05 * 2**attempt) * rng.uniform(0.5, 1.0))
                url = self.stack.hook_url(receiver, source)
                sent = time.monotonic()
                status, reply = await self._post(session, url, body, headers)
                self.answers.append(Answer(source, sent, time.monotonic(), status))
                if status == 202:
                    self.acked[orjson.loads(reply)["id"]] = time.monotonic()
                    return
            self.gave_up += 1
        finally:
            slots.release()

    @staticmethod
    async def _post(
        session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        try:
            async with session.post(url, data=body, headers=headers) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError):
            return 0, b""


@dataclass(frozen=True)
class FaultFigures:
    what: str
    election_s: float | None  # fault to the new primary being named
    intake_gap_s: float  # longest stretch without a 202 to the retrying source around it
    resumed_s: float | None  # election to the first delivery after it
    lost: int  # acknowledged while the fault lasted, never delivered


@dataclass(frozen=True)
class Figures:
    scenario: str
    sent: int
    acknowledged: int
    delivered: int
    lost: int
    duplicates: int
    non_202: dict[str, int]
    gave_up: int
    longest_gap_s: float
    faults: tuple[FaultFigures, ...]
    stream_s: float
    drain_s: float
    lost_ids: tuple[str, ...] = ()
    lost_detail: tuple[str, ...] = ()  # how the current primary sees the first lost events

    def table(self) -> str:
        lines = [
            f"sentinel chaos: {self.scenario} (stream {self.stream_s:.0f} s, "
            f"drain {self.drain_s:.1f} s)",
            f"  sent {self.sent}  acknowledged {self.acknowledged}  delivered {self.delivered}  "
            f"LOST {self.lost}  duplicates {self.duplicates}  gave up {self.gave_up}",
            "  non-202 answers: " + ", ".join(f"{k} {v}" for k, v in self.non_202.items()),
            f"  longest intake gap (retrying source): {self.longest_gap_s:.2f} s",
        ]
        for f in self.faults:
            election = "-" if f.election_s is None else f"{f.election_s:.2f} s"
            resumed = "-" if f.resumed_s is None else f"{f.resumed_s:.2f} s"
            lines.append(
                f"  {f.what:<55} election {election:>7}  intake gap {f.intake_gap_s:5.2f} s  "
                f"deliveries resumed {resumed:>7} after it  lost {f.lost}"
            )
        lines.extend(f"  lost: {d}" for d in self.lost_detail)
        return "\n".join(lines)


def _gaps(answers: list[Answer]) -> list[tuple[float, float]]:
    """(start, end) of the stretches between consecutive 202s of the retrying source."""
    times = sorted(a.answered for a in answers if a.source == "retrying" and a.status == 202)
    return list(itertools.pairwise(times))


def _fault_figures(
    fault: FaultTimes, gaps: list[tuple[float, float]], target: Target, lost: list[float]
) -> FaultFigures:
    end = fault.whole if fault.whole is not None else fault.began
    around = [b - a for a, b in gaps if b >= fault.began and a <= end]
    elected = fault.elected
    resumed = None
    if elected is not None:
        first = target.first_after(elected)
        resumed = None if first is None else first - elected
    return FaultFigures(
        fault.what,
        None if elected is None else elected - fault.began,
        max(around, default=0.0),
        resumed,
        sum(1 for t in lost if fault.began - 1.0 <= t <= end),
    )


def figures(
    scenario: str,
    traffic: Traffic,
    target: Target,
    sent: int,
    stream_s: float,
    drain_s: float,
) -> Figures:
    delivered = target.delivered()
    acked = set(traffic.acked)
    lost = sorted(i for i in acked if delivered[i] == 0)
    non_202 = Counter(a.source for a in traffic.answers if a.status != 202)
    gaps = _gaps(traffic.answers)
    lost_at = [traffic.acked[i] for i in lost]
    return Figures(
        scenario=scenario,
        sent=sent,
        acknowledged=len(acked),
        delivered=sum(1 for i in acked if delivered[i] > 0),
        lost=len(lost),
        duplicates=sum(max(0, delivered[i] - 1) for i in acked),
        non_202={s: non_202[s] for s in SOURCES},
        gave_up=traffic.gave_up,
        longest_gap_s=max((b - a for a, b in gaps), default=0.0),
        faults=tuple(_fault_figures(f, gaps, target, lost_at) for f in traffic.stack.faults),
        stream_s=stream_s,
        drain_s=drain_s,
        lost_ids=tuple(lost),
        lost_detail=tuple(_describe(traffic.stack, lost[:20])),
    )


def _describe(stack: FailoverStack, ids: list[str]) -> list[str]:
    """Each lost event as the current primary sees it (a hash? its delivery state? due?)."""
    if not ids:
        return []
    try:
        with stack.topology.primary().client() as conn:
            found = []
            for event_id in ids:
                state = conn.hmget(keys.event_key(event_id), [state_field("crm"), RECEIVED_FIELD])
                due = conn.zscore(keys.due_key("crm"), event_id)
                found.append(f"{event_id}: state={state[0]!r} received={state[1]!r} due={due}")
            return found
    except (redis.RedisError, OSError, RuntimeError) as exc:
        return [f"(cannot read the primary: {exc})"]
