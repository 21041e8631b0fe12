"""Slow clients against a real `relay serve`: cut off by timeouts, never blocking others.

- A body trickled byte by byte gets 408 once RELAY_READ_TIMEOUT has passed (relay.receiver.app).
- A connection that sends nothing, or never finishes its headers, or idles after a request, is
  closed after RELAY_KEEPALIVE_TIMEOUT (aiohttp's keep-alive timer, set by relay serve).
- While 20 such clients are held open, other requests are served.

No timing thresholds: waits are bounded generously and the claims are about what happened
(who was cut, who was answered), not how fast.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from relay.config.settings import Settings
from relay.core.errors import ConfigError
from tests.support.processes import relay_env, relay_processes
from tests.support.raw_http import RawConnection, RawResponse, exchange, http_request

ROUTES = """
[sources.shop]
kind = "json"

[targets.nowhere]
url = "http://127.0.0.1:9/never-called"

[[routes]]
source = "shop"
targets = ["nowhere"]
"""

#: How long a trickle may go on before the test gives up on being cut off (bounded loops).
TRICKLE_LIMIT = 30.0
TRICKLE_STEP = 0.1

Serve = Callable[[float, float], int]


@pytest.fixture
def serve(tmp_path: Path, redis_url: str) -> Iterator[Serve]:
    """Start `relay serve` with given read and keep-alive timeouts; returns its port."""
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    with relay_processes(tmp_path, relay_env(redis_url, routes)) as procs:

        def start(read_timeout: float, keepalive_timeout: float) -> int:
            procs.env["RELAY_READ_TIMEOUT"] = f"{read_timeout}s"
            procs.env["RELAY_KEEPALIVE_TIMEOUT"] = f"{keepalive_timeout}s"
            _, base = procs.serve()
            return int(base.rsplit(":", 1)[1])

        yield start


def valid_request() -> bytes:
    return http_request(
        "POST", "/hooks/shop", [("Content-Type", "application/json")], b'{"event": "x"}'
    )


def readable(conn: RawConnection, wait: float) -> bool:
    """Whether the server sent something (or closed) within `wait` seconds."""
    ready, _, _ = select.select([conn.sock], [], [], wait)
    return bool(ready)


def still_open(conn: RawConnection) -> bool:
    """Whether the server has neither answered nor closed this connection (non-blocking peek)."""
    conn.sock.setblocking(False)
    try:
        return not conn.sock.recv(1, socket.MSG_PEEK)  # b"" would be a close; data an answer
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        conn.sock.setblocking(True)


def trickle_until_cut(conn: RawConnection, data: bytes) -> tuple[int, bool]:
    """Send `data` one byte per step until the server answers or closes.

    Returns (bytes sent, whether the server spoke or closed before the trickle ended).
    """
    sent = 0
    steps = int(TRICKLE_LIMIT / TRICKLE_STEP)
    for byte in data[:steps]:
        if readable(conn, TRICKLE_STEP):
            return sent, True
        try:
            conn.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return sent, True
        sent += 1
    return sent, readable(conn, TRICKLE_STEP)


def test_body_trickled_byte_by_byte_gets_408_and_nothing_is_stored(
    serve: Serve, redis_client: redis.Redis
) -> None:
    port = serve(1, 60)
    body = b'{"event": "slow", "padding": "' + b"x" * 1000 + b'"}'
    head = (
        b"POST /hooks/shop HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    conn = RawConnection(port)
    try:
        conn.send(head)
        sent, cut = trickle_until_cut(conn, body)
        assert cut, "the server let a trickled body run on"
        assert sent < len(body)
        response = conn.read_response()
    finally:
        conn.close()
    assert response is not None
    assert response.status == 408
    assert response.json() == {"error": "the body did not arrive within 1 s", "status": 408}
    assert not redis_client.keys("relay:ev:*")


def test_connection_that_sends_nothing_is_closed(serve: Serve) -> None:
    port = serve(60, 1)
    conn = RawConnection(port, timeout=TRICKLE_LIMIT)
    try:
        assert conn.read_response() is None  # EOF: closed by the server, not by our timeout
    finally:
        conn.close()


def test_headers_that_never_end_are_cut_off(serve: Serve) -> None:
    port = serve(60, 1)
    conn = RawConnection(port)
    try:
        conn.send(b"POST /hooks/shop HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        header = b"X-Slow: " + b"s" * 1000
        sent, cut = trickle_until_cut(conn, header)
        assert cut, "the server waited for ever for the end of the headers"
        assert sent < len(header)
        assert conn.read_response() is None  # closed without an answer
    finally:
        conn.close()


def test_idle_keep_alive_connection_is_closed_after_its_request(serve: Serve) -> None:
    port = serve(60, 1)
    conn = RawConnection(port, timeout=TRICKLE_LIMIT)
    try:
        conn.send(valid_request())
        response = conn.read_response()
        assert response is not None
        assert response.status == 202
        assert conn.read_response() is None  # then closed while idle
    finally:
        conn.close()


def test_twenty_slow_clients_do_not_block_others(serve: Serve, redis_client: redis.Redis) -> None:
    # Long timeouts: the slow clients must still be held while the fast requests are served.
    port = serve(60, 60)
    slow: list[RawConnection] = []
    try:
        for i in range(10):  # a body promised and never sent
            conn = RawConnection(port)
            conn.send(
                b"POST /hooks/shop HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n" + b"{" * i
            )
            slow.append(conn)
        for _ in range(10):  # connected, silent
            slow.append(RawConnection(port))
        answers: list[RawResponse] = [exchange(port, valid_request()) for _ in range(50)]
        assert [r.status for r in answers] == [202] * 50
        # The slow ones were held the whole time: neither answered nor closed.
        assert all(still_open(conn) for conn in slow)
    finally:
        for conn in slow:
            conn.close()
    assert len(redis_client.keys("relay:ev:*")) == 50


def test_timeouts_come_from_the_environment_and_must_be_positive() -> None:
    settings = Settings.from_env({"RELAY_READ_TIMEOUT": "5s", "RELAY_KEEPALIVE_TIMEOUT": "2m"})
    assert (settings.read_timeout, settings.keepalive_timeout) == (5.0, 120.0)
    defaults = Settings.from_env({})
    assert (defaults.read_timeout, defaults.keepalive_timeout) == (10.0, 75.0)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"RELAY_READ_TIMEOUT": "0", "RELAY_KEEPALIVE_TIMEOUT": "soon"})
    assert sorted(p.key for p in caught.value.problems) == [
        "RELAY_KEEPALIVE_TIMEOUT",
        "RELAY_READ_TIMEOUT",
    ]
