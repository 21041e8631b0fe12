"""Graceful shutdown of the receiver: SIGTERM in the middle of a steady stream of POSTs.

A real `relay serve` takes a bounded stream (TOTAL requests from CLIENTS concurrent clients,
some on keep-alive connections, some opening a new connection per request). Mid-stream, Redis
writes are paused for a moment (CLIENT PAUSE WRITE) so that every client certainly has a request
in flight, waiting for its intake commit, when SIGTERM lands. Then:

- new connections are refused at once, while the requests in flight keep the process alive;
- the requests in flight at the signal get their answers: 202 when Redis takes the writes again
  within the intake timeout, a clean 503 when it does not (a second run holds the pause longer);
- the process exits 0 within aiohttp's bound (twice the shutdown timeout, which is the intake
  timeout plus relay.cli.serve.SHUTDOWN_GRACE), after its clean-up ran (`receiver_stopped`) and
  with none of its Redis connections left open;
- exact reconciliation: every 202 is an event in Redis holding that request's body; an event
  committed without a 202 is counted and allowed (at-least-once: the provider retries), a 202
  without an event never; every answer is a 202 or a clean JSON 503, never another 5xx; every
  answer the receiver logged is the answer its client got.

A second test pins what happens to a request whose body is still arriving at the signal: aiohttp
stops reading from every connection at once, so it gets no answer and is not recorded.

Every wait is bounded; no assertion is a timing threshold (the exit bound is a liveness check
with generous slack).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis

from relay.cli.serve import SHUTDOWN_GRACE
from tests.support.processes import relay_env, relay_processes
from tests.support.stored import indexed, stored_event

TOKEN = "shutdown-token-" + "4b" * 12
TOTAL = 2000  # requests in the stream (bounded)
CLIENTS = 48  # concurrent clients: KEEPALIVE_CLIENTS reuse connections, the rest open new ones
KEEPALIVE_CLIENTS = 32
SIGNAL_AFTER = 600  # 202s received before Redis is paused and SIGTERM sent
#: Redis unpauses by itself after this long (ms) should the test fail before it unpauses.
PAUSE_MS = 10_000
#: Slack for a loaded CI machine on top of the bound: this is a liveness check, not a timing.
SLACK = 20.0
#: Every wait in this test ends: the stream, the first 202s, the refusal, the exit.
STREAM_LIMIT = 120.0


@dataclass(frozen=True)
class Reply:
    """What one request of the stream got: an HTTP answer or a connection-level error."""

    n: int
    sent_after_signal: bool
    answered_after_signal: bool
    status: int | None = None
    event_id: str | None = None
    body: bytes = b""
    error: str = ""


def write_routes(tmp_path: Path) -> Path:
    path = tmp_path / "routes.toml"
    path.write_text(
        '[sources.shop]\nkind = "header"\ntoken_env = "SHUTDOWN_SHOP_TOKEN"\n\n'
        # Nothing listens there and no worker runs: events simply wait in Redis.
        '[targets.crm]\nurl = "http://127.0.0.1:9/unused"\n\n'
        '[[routes]]\nsource = "shop"\nevents = ["*"]\ntargets = ["crm"]\n'
    )
    return path


def receiver_env(tmp_path: Path, redis_url: str, intake_timeout: float) -> dict[str, str]:
    return relay_env(
        redis_url,
        write_routes(tmp_path),
        SHUTDOWN_SHOP_TOKEN=TOKEN,
        RELAY_INTAKE_TIMEOUT=str(intake_timeout),
    )


def request_body(n: int) -> bytes:
    return orjson.dumps({"n": n, "pad": "x" * 200})


def redis_ports_of(pid: int, redis_port: int) -> set[int]:
    """Local ports of the TCP connections process `pid` holds to `redis_port` (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    with open(f"/proc/{pid}/net/tcp") as table:
        next(table)
        for row in table:
            fields = row.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.split(":")[1], 16) == redis_port:
                ports.add(int(local.split(":")[1], 16))
    return ports


def client_ports(conn: redis.Redis) -> set[int]:
    """Ports of every client connected to the test's redis-server (CLIENT LIST)."""
    return {int(str(c["addr"]).rsplit(":", 1)[1]) for c in conn.client_list()}


class Stream:
    """CLIENTS concurrent clients posting numbered events until TOTAL are sent (bounded)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.numbers = itertools.count()
        self.replies: list[Reply] = []
        self.signalled = False
        self.acked = 0
        self.deadline = time.monotonic() + STREAM_LIMIT

    async def client(self, session: aiohttp.ClientSession) -> None:
        headers = {"content-type": "application/json", "x-event-type": "order.paid"}
        while time.monotonic() < self.deadline:
            n = next(self.numbers)
            if n >= TOTAL:
                return
            sent_after = self.signalled
            try:
                async with session.post(self.url, data=request_body(n), headers=headers) as resp:
                    body = await resp.read()
                    event_id = orjson.loads(body)["id"] if resp.status == 202 else None
                    reply = Reply(n, sent_after, self.signalled, resp.status, event_id, body)
                    self.acked += resp.status == 202
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                reply = Reply(n, sent_after, self.signalled, error=type(exc).__name__)
            self.replies.append(reply)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        keepalive = aiohttp.TCPConnector(limit=KEEPALIVE_CLIENTS)
        fresh = aiohttp.TCPConnector(force_close=True)  # a new connection per request
        async with (
            aiohttp.ClientSession(connector=keepalive, timeout=timeout) as reuse,
            aiohttp.ClientSession(connector=fresh, timeout=timeout) as new,
        ):
            await asyncio.gather(
                *(self.client(reuse) for _ in range(KEEPALIVE_CLIENTS)),
                *(self.client(new) for _ in range(CLIENTS - KEEPALIVE_CLIENTS)),
            )


async def refused(port: int) -> bool:
    """Whether a new connection to the port is refused."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        # Caught in the backlog as the listening socket closed: reset, not yet refused.
        return False
    writer.close()
    return False


async def poll(condition: object, limit: float) -> bool:
    """Await an async condition every 10 ms until it holds or `limit` seconds pass."""
    assert callable(condition)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await condition():
            return True
        await asyncio.sleep(0.01)
    return bool(await condition())


def logged_requests(output: str) -> list[dict[str, object]]:
    """The receiver's canonical request lines for /hooks requests, from its output."""
    records = [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [r for r in records if r.get("event") == "request" and r.get("source") == "shop"]


def stored_events(conn: redis.Redis) -> dict[str, int]:
    """Every event in Redis (index and hash both present): event id -> the request's number."""
    stored = {}
    for event_id in indexed(conn):
        # Through the codec: a body over 64 bytes is stored in parts.
        event = stored_event(conn, event_id)
        stored[event_id] = int(orjson.loads(event.body)["n"])
    return stored


def redis_port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def exit_bound(intake_timeout: float) -> float:
    """Longest a receiver takes to exit after SIGTERM, plus slack for a loaded machine.

    aiohttp waits up to shutdown_timeout (intake timeout + SHUTDOWN_GRACE) for handlers in
    flight, then cancels them and waits up to shutdown_timeout again
    (aiohttp.web_protocol.RequestHandler.shutdown).
    """
    return 2 * (intake_timeout + SHUTDOWN_GRACE) + SLACK


@pytest.mark.parametrize(
    ("intake_timeout", "hold", "in_flight_status"),
    [
        pytest.param(3.0, 0.0, 202, id="redis-back-within-the-intake-timeout"),
        pytest.param(1.0, 2.0, 503, id="redis-stuck-past-the-intake-timeout"),
    ],
)
async def test_sigterm_mid_stream_loses_nothing_acknowledged(
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    intake_timeout: float,
    hold: float,
    in_flight_status: int,
) -> None:
    env = receiver_env(tmp_path, redis_url, intake_timeout)
    with relay_processes(tmp_path, env) as procs:
        serve, base = procs.serve()
        port = int(base.rsplit(":", 1)[1])
        stream = Stream(f"{base}/hooks/shop/{TOKEN}")
        streaming = asyncio.create_task(stream.run())

        async def halfway() -> bool:
            return stream.acked >= SIGNAL_AFTER or streaming.done()

        assert await poll(halfway, STREAM_LIMIT)
        assert stream.acked >= SIGNAL_AFTER, stream.replies[-5:]
        ports = redis_ports_of(serve.pid, redis_port_of(redis_url))
        assert ports, "the receiver holds no Redis connection mid-stream"
        assert ports <= client_ports(redis_client)

        # Hold every commit for a moment: each client now has a request in flight.
        redis_client.client_pause(PAUSE_MS, all=False)
        try:
            await asyncio.sleep(0.2)  # let the clients' next requests reach their handlers
            acked_before_signal = stream.acked
            stream.signalled = True
            serve.process.send_signal(signal.SIGTERM)
            assert await poll(lambda: refused(port), 10), "new connections still accepted"
            assert serve.alive(), "the receiver exited with requests in flight"
            await asyncio.sleep(hold)  # Redis stays stuck this much longer
        finally:
            redis_client.client_unpause()

        await asyncio.wait_for(streaming, STREAM_LIMIT)
        code = await asyncio.to_thread(serve.process.wait, exit_bound(intake_timeout))
        output = serve.output()

    assert code == 0, output[-3000:]
    assert '"receiver_stopped"' in output  # run_app returned: writer and Redis client closed
    assert not ports & client_ports(redis_client)

    replies = stream.replies
    assert sorted(r.n for r in replies) == list(range(TOTAL))
    statuses = {r.status for r in replies if r.status is not None}
    assert statuses <= {202, 503}, statuses
    for reply in replies:
        if reply.status == 503:
            assert orjson.loads(reply.body)["status"] == 503  # a clean JSON 503
    # Requests in flight at the signal got their answers after it.
    in_flight = [r for r in replies if not r.sent_after_signal and r.answered_after_signal]
    answered = [r for r in in_flight if r.status is not None]
    assert answered, "no request was answered across the signal"
    assert {r.status for r in answered} == {in_flight_status}
    assert (stream.acked > acked_before_signal) == (in_flight_status == 202)

    # Exact reconciliation against Redis.
    acked = {r.event_id: r.n for r in replies if r.status == 202}
    stored = stored_events(redis_client)
    assert set(acked) <= set(stored), "a 202 without its event in Redis"
    assert all(stored[i] == n for i, n in acked.items())
    unacked = {i: n for i, n in stored.items() if i not in acked}
    assert not set(unacked.values()) & set(acked.values())
    assert len(set(stored.values())) == len(stored)  # one event per request, at most

    # Every answer the receiver logged reached its client, and nothing else was answered.
    logged = logged_requests(output)
    assert {str(r["event_id"]) for r in logged if r["status"] == 202} == set(acked)
    assert sum(1 for r in logged if r["status"] == 503) == sum(
        1 for r in replies if r.status == 503
    )

    errors = [r for r in replies if r.error]
    print(
        f"\nshutdown: {len(replies)} requests; {len(acked)} x 202 "
        f"({len(answered)} requests in flight at the signal answered {in_flight_status}), "
        f"{sum(1 for r in replies if r.status == 503)} x 503, "
        f"{len(errors)} connection errors ({sum(1 for r in errors if r.sent_after_signal)} sent "
        f"after the signal); {len(unacked)} committed without a 202 (at-least-once)"
    )


async def test_a_body_still_arriving_at_sigterm_gets_no_answer_and_is_not_recorded(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    intake_timeout = 1.0
    env = receiver_env(tmp_path, redis_url, intake_timeout)
    body = request_body(1)
    with relay_processes(tmp_path, env) as procs:
        serve, base = procs.serve()
        port = int(base.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"POST /hooks/shop/{TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nX-Event-Type: order.paid\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
        )
        writer.write(head.encode() + body[:10])
        await writer.drain()
        # aiohttp answers 100 Continue once it has routed the request, as its handler starts.
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert interim.startswith(b"HTTP/1.1 100 Continue"), interim

        serve.process.send_signal(signal.SIGTERM)
        assert await poll(lambda: refused(port), 10), "new connections still accepted"
        writer.write(body[10:])  # too late: aiohttp no longer reads this connection
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), exit_bound(intake_timeout))
        writer.close()
        code = await asyncio.to_thread(serve.process.wait, exit_bound(intake_timeout))
        output = serve.output()

    assert rest == b""  # the connection closed without an answer: the provider will retry
    assert code == 0, output[-3000:]
    assert '"receiver_stopped"' in output
    assert stored_events(redis_client) == {}
    assert logged_requests(output) == []
