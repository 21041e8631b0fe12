"""Compressed request bodies at the receiver: decoded by relay, bounded, refused early.

The receiver's server runs with aiohttp's own decoding off (relay.receiver.app.SERVER_OPTIONS), as
every builder of it does: `relay serve`, `relay dev`'s embedded receiver, these tests. Bodies are
sent over raw loopback sockets where what matters is what the server does before reading them.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from relay.cli.dev.embedded import AppThread
from relay.config.loading import parse_routes
from relay.config.settings import Settings
from relay.core.metrics import UNKNOWN_SOURCE
from relay.core.signatures import ms_signature
from relay.receiver.app import SERVER_OPTIONS, create_app
from relay.receiver.state import METRICS
from tests.support.compressed import raw_deflate, zeros_gzip
from tests.support.raw_http import RawConnection, RawResponse, check_response
from tests.support.receiver import receiver_server
from tests.support.redis_server import free_port
from tests.support.stored import stored_event

FELLOW_TOKEN = "fellow-token-0123456789abcdef"
LEARN_SECRET = "123456789012345678901234567890123456789012345678"
ENV = {"FELLOW_TOKEN": FELLOW_TOKEN, "LEARN_SECRET": LEARN_SECRET}

ROUTES_TOML = """
[sources.fellow]
kind = "form"
token_env = "FELLOW_TOKEN"

[sources.chalk]
kind = "json"
max_body = "64KiB"

[sources.plain]
kind = "json"
content_encodings = []

[sources.postonly]
kind = "json"
methods = ["POST"]

[sources.learn365]
kind = "aspnet"
secret_env = "LEARN_SECRET"

[targets.crm]
url = "http://127.0.0.1:9/crm"

[[routes]]
source = "fellow"
events = ["COURSEMEMBER_*"]
targets = ["crm"]

[[routes]]
source = "chalk"
targets = ["crm"]

[[routes]]
source = "learn365"
targets = ["crm"]
"""

FELLOW = f"/hooks/fellow/{FELLOW_TOKEN}"
FORM_BODY = b"courseId=42&memberId=7&event=COURSEMEMBER_CREATED"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ASPNET_BODY = b'{"Id": "n-1", "Attempt": 1, "Notifications": [{"Action": "a1", "d": 1}]}'

#: 256 MiB of zeros in ~250 KB of gzip: a bomb, made once for the module.
BOMB = zeros_gzip(256 * 1024 * 1024)

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[], Awaitable[Client]]


@pytest.fixture
def make_client(aiohttp_client: Any, redis_url: str) -> MakeClient:
    """A test client on a real loopback server built the way `relay serve` builds it."""

    async def make() -> Client:
        routes = parse_routes(ROUTES_TOML, "routes.toml", ENV)
        app = create_app(Settings(redis_url=redis_url), routes)
        client: Client = await aiohttp_client(await receiver_server(app))
        return client

    return make


def refused(client: Client, source: str, reason: str) -> float:
    """relay_refused_bodies_total{source, reason} of the app under test."""
    registry: CollectorRegistry = client.app[METRICS].registry  # type: ignore[index]
    value = registry.get_sample_value(
        "relay_refused_bodies_total", {"source": source, "reason": reason}
    )
    return value or 0.0


def head_of(method: str, path: str, headers: dict[str, str], length: int) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def send_part_then_read(port: int, head: bytes, part: bytes) -> tuple[RawResponse, bool]:
    """Send a request head and only the start of its body; (the answer, whether the server
    then closed the connection). A server that waited for (or drained) the rest would hang."""
    conn = RawConnection(port, timeout=5.0)
    try:
        conn.send(head + part)
        response = conn.read_response()
        assert response is not None, "no answer before the body was sent"
        try:
            closed = conn.sock.recv(1) == b""
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            closed = False
        return response, closed
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# Accepted: decoded, stored and forwarded decoded, without Content-Encoding


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", raw_deflate),
        ("identity", lambda body: body),
    ],
)
async def test_a_compressed_body_is_stored_decoded(
    make_client: MakeClient,
    redis_client: redis.Redis,
    encoding: str,
    encode: Callable[[bytes], bytes],
) -> None:
    client = await make_client()
    headers = FORM | {"Content-Encoding": encoding}
    response = await client.post(FELLOW, data=encode(FORM_BODY), headers=headers)
    assert response.status == 202, await response.text()
    event = stored_event(redis_client, (await response.json())["id"])
    # Targets get the body as the provider wrote it before encoding it, and no
    # Content-Encoding: relay's re-delivery is never compressed.
    assert event.body == FORM_BODY
    assert event.type == "COURSEMEMBER_CREATED"
    assert "content-encoding" not in dict(event.headers)


async def test_ms_signature_is_over_the_bytes_as_sent(
    make_client: MakeClient, redis_client: redis.Redis
) -> None:
    client = await make_client()
    packed = gzip.compress(ASPNET_BODY)
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    over_decoded = headers | {"ms-signature": ms_signature(LEARN_SECRET, ASPNET_BODY)}
    response = await client.post("/hooks/learn365", data=packed, headers=over_decoded)
    assert response.status == 401
    over_sent = headers | {"ms-signature": ms_signature(LEARN_SECRET, packed)}
    response = await client.post("/hooks/learn365", data=packed, headers=over_sent)
    assert response.status == 202, await response.text()
    event = stored_event(redis_client, (await response.json())["id"])
    assert event.body == ASPNET_BODY
    # Its signature is over bytes that are not forwarded: it would not verify downstream.
    assert "ms-signature" not in dict(event.headers)


async def test_a_missing_ms_signature_is_refused_before_the_body(make_client: MakeClient) -> None:
    client = await make_client()
    assert client.port is not None
    head = head_of("POST", "/hooks/learn365", {"Content-Type": "application/json"}, 100_000)
    response, closed = await asyncio.to_thread(send_part_then_read, client.port, head, b"{")
    assert response.status == 400
    assert response.json() == {"error": "the ms-signature header is missing", "status": 400}
    assert closed
    assert response.closes


# ---------------------------------------------------------------------------------------------
# Refused: 415 for a coding not taken, 413 as soon as the decoded size passes max_body, 400


@pytest.mark.parametrize(
    ("source", "encoding", "names"),
    [
        ("chalk", "br", "gzip, deflate"),
        ("chalk", "zstd", "gzip, deflate"),
        ("chalk", "gzip, gzip", "gzip, deflate"),
        ("plain", "gzip", "uncompressed bodies only"),
    ],
)
async def test_a_coding_not_taken_is_a_json_415(
    make_client: MakeClient, source: str, encoding: str, names: str
) -> None:
    client = await make_client()
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    with capture_logs() as logs:
        response = await client.post(f"/hooks/{source}", data=b"\x00" * 10, headers=headers)
    assert response.status == 415
    document = await response.json()
    assert document["status"] == 415
    assert names in document["error"]
    assert refused(client, source, "encoding") == 1
    lines = [e for e in logs if e["event"] == "compressed_body_refused"]
    assert [(e["source"], e["reason"], e["status"]) for e in lines] == [(source, "encoding", 415)]


@pytest.mark.parametrize(
    ("bomb", "message"),
    [
        # 32 MiB of zeros in ~32 KB, within the compressed bound: refused while decoding,
        # once the first 16 KiB sent decode to more than 64 KiB.
        (zeros_gzip(32 * 1024 * 1024), "decodes to over 65536 bytes"),
        # Its Content-Length alone is over the bound: refused before a byte is read.
        (BOMB, f"the compressed body is {len(BOMB)} bytes"),
    ],
    ids=["decoded", "compressed"],
)
async def test_a_bomb_to_a_valid_source_is_413_without_inflating_it(
    make_client: MakeClient, redis_client: redis.Redis, bomb: bytes, message: str
) -> None:
    client = await make_client()
    assert client.port is not None
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    head = head_of("POST", "/hooks/chalk", headers, len(bomb))
    response, closed = await asyncio.to_thread(
        send_part_then_read, client.port, head, bomb[: 16 * 1024]
    )
    assert response.status == 413
    assert message in response.json()["error"]  # type: ignore[index]
    assert closed
    assert response.closes
    assert refused(client, "chalk", "too_large") == 1
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize(
    "data",
    [b"not gzip at all", gzip.compress(b'{"event": "x"}')[:-6]],
    ids=["corrupt", "truncated"],
)
async def test_a_body_that_does_not_decode_is_a_json_400(
    make_client: MakeClient, data: bytes
) -> None:
    client = await make_client()
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    response = await client.post("/hooks/chalk", data=data, headers=headers)
    assert response.status == 400
    document = await response.json()
    assert "gzip body" in document["error"]
    assert refused(client, "chalk", "corrupt") == 1
    # The whole body was read: the connection may be kept.
    assert response.headers.get("Connection", "").lower() != "close"


# ---------------------------------------------------------------------------------------------
# Refused before the body is needed: answered at once, the connection closed, nothing read


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/hooks/fellow/wrong-token-0123456789", 401),
        ("POST", "/hooks/nosuchsource", 404),
        ("POST", "/nowhere", 404),
        ("PUT", "/hooks/postonly", 405),
        ("POST", "/hooks/chalk", 415),  # Content-Encoding: br, known from the head alone
    ],
)
async def test_a_bomb_refused_early_is_answered_and_the_connection_closed(
    make_client: MakeClient, method: str, path: str, status: int
) -> None:
    client = await make_client()
    assert client.port is not None
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    if status == 415:
        headers["Content-Encoding"] = "br"
    head = head_of(method, path, headers, len(BOMB))
    # Only 1 KiB of the body is sent: an answer proves the server did not wait for the rest,
    # and the close proves it does not drain it (aiohttp lingers for 10 s by default).
    response, closed = await asyncio.to_thread(send_part_then_read, client.port, head, BOMB[:1024])
    assert response.status == status
    check_response(response, head=False, what=path)
    assert response.closes
    assert closed
    source = path.split("/")[2] if path.startswith("/hooks/") else ""
    reason = "encoding" if status == 415 else "refused_early"
    label = source if status in (401, 405, 415) else UNKNOWN_SOURCE
    assert refused(client, label, reason) == 1


# ---------------------------------------------------------------------------------------------
# Every builder of the receiver builds it the same way


def test_relay_devs_embedded_receiver_decodes_once(redis_url: str) -> None:
    """AppThread with SERVER_OPTIONS (as run_embedded builds the receiver) takes a gzip body."""
    routes = parse_routes(ROUTES_TOML, "routes.toml", ENV)
    port = free_port()
    thread = AppThread(
        "receiver",
        lambda: create_app(Settings(redis_url=redis_url), routes),
        "127.0.0.1",
        port,
        SERVER_OPTIONS,
    )
    thread.start()
    try:
        packed = gzip.compress(FORM_BODY)
        headers = FORM | {"Content-Encoding": "gzip"}
        conn = RawConnection(port)
        try:
            conn.send(head_of("POST", FELLOW, headers, len(packed)) + packed)
            response = conn.read_response()
        finally:
            conn.close()
        assert response is not None
        assert response.status == 202, response
    finally:
        thread.stop()


def send_body_in_pieces_then_read(port: int, path: str, size: int) -> int:
    """What most HTTP clients do: send the whole body (here in pieces, as a slower client or
    a busy machine would), and only then read the answer. Its status, or an OSError when the
    server reset the connection under it."""
    piece = b"x" * (128 * 1024)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head_of("POST", path, FORM, size))
        for _ in range(size // len(piece)):
            sock.sendall(piece)
            time.sleep(0.02)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (FELLOW, 413),  # over the source's max_body: refused from Content-Length alone
        ("/hooks/fellow/wrong-token", 401),
        ("/hooks/nobody", 404),
    ],
)
async def test_a_client_that_sends_its_whole_body_first_still_reads_the_refusal(
    make_client: MakeClient, path: str, status: int
) -> None:
    # Refused unread, the body is discarded (never decoded) for a bounded while after the
    # answer before the connection closes: closing at once reset the connection under a client
    # still sending, and it never saw its 413 (a flaky BrokenPipeError in the provider tests).
    client = await make_client()
    assert client.port is not None
    size = 12 * 128 * 1024  # 1.5 MiB, past the fellow source's 1 MiB, sent over about 0.25 s
    answered = await asyncio.to_thread(send_body_in_pieces_then_read, client.port, path, size)
    assert answered == status
