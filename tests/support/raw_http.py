"""A raw HTTP/1.1 client for tests: exact bytes out, strict parsing of what comes back.

Used by the hostile-input, slow-client, security and compressed-body tests against a real server.
"""

from __future__ import annotations

import contextlib
import re
import socket
from dataclasses import dataclass

import orjson

#: aiohttp answers in the version the request named (HTTP/2.0 over HTTP/1 framing included).
_STATUS_LINE = re.compile(rb"^HTTP/[0-9]\.[0-9] ([1-5][0-9][0-9])(?: ([^\r\n]*))?$")


class ProtocolViolation(AssertionError):
    """The server sent something that is not a well-formed HTTP/1.x response."""


@dataclass(frozen=True)
class RawResponse:
    """One parsed HTTP response."""

    status: int
    headers: tuple[tuple[str, str], ...]  # names lower-cased, in order
    body: bytes

    def header(self, name: str) -> str | None:
        """The last value of a header, or None."""
        found = [v for k, v in self.headers if k == name.lower()]
        return found[-1] if found else None

    @property
    def closes(self) -> bool:
        """Whether the server said it closes the connection after this response."""
        return (self.header("connection") or "").lower() == "close"

    def json(self) -> object:
        """The body as JSON."""
        return orjson.loads(self.body)


class RawConnection:
    """One TCP connection to the server; requests are written as given, byte for byte."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = bytearray()
        self.eof = False

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def half_close(self) -> None:
        """Tell the server nothing more comes (a truncated request ends here)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def _fill(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self._buffer += chunk
        return True

    def _take_until(self, marker: bytes) -> bytes | None:
        while (at := self._buffer.find(marker)) < 0:
            if len(self._buffer) > 1024 * 1024:
                raise ProtocolViolation("response head over 1 MiB")
            if not self._fill():
                return None
        data = bytes(self._buffer[:at])
        del self._buffer[: at + len(marker)]
        return data

    def _take(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if not self._fill():
                raise ProtocolViolation(f"connection closed {size - len(self._buffer)} bytes early")
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def read_response(self, head: bool = False) -> RawResponse | None:
        """The next final response (1xx skipped); None if the connection closed before it."""
        while True:
            if not self._buffer and (self.eof or not self._fill()):
                return None
            raw_head = self._take_until(b"\r\n\r\n")
            if raw_head is None:
                raise ProtocolViolation(
                    f"connection closed inside a response head: {self._buffer!r}"
                )
            lines = raw_head.split(b"\r\n")
            match = _STATUS_LINE.match(lines[0])
            if not match:
                raise ProtocolViolation(f"bad status line {lines[0]!r}")
            headers = []
            for line in lines[1:]:
                name, sep, value = line.partition(b":")
                if not sep or not re.fullmatch(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                    raise ProtocolViolation(f"bad header line {line!r}")
                headers.append((name.decode().lower(), value.strip().decode("latin-1")))
            status = int(match.group(1))
            if 100 <= status < 200:
                continue  # interim (100 Continue): the final answer follows
            response_headers = tuple(headers)
            probe = RawResponse(status, response_headers, b"")
            if head or status in (204, 304):
                return probe
            if (probe.header("transfer-encoding") or "").lower() == "chunked":
                return RawResponse(status, response_headers, self._read_chunked())
            length = probe.header("content-length")
            if length is not None:
                if not length.isdigit():
                    raise ProtocolViolation(f"bad Content-Length {length!r}")
                return RawResponse(status, response_headers, self._take(int(length)))
            while self._fill():  # no length: the body runs to the end of the connection
                pass
            body = bytes(self._buffer)
            self._buffer.clear()
            return RawResponse(status, response_headers, body)

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_line = self._take_until(b"\r\n")
            if size_line is None:
                raise ProtocolViolation("connection closed inside a chunked body")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while self._take_until(b"\r\n"):  # trailers
                    pass
                return bytes(body)
            body += self._take(size)
            if self._take(2) != b"\r\n":
                raise ProtocolViolation("chunk not followed by CRLF")


def http_request(
    method: str,
    path: str,
    headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> bytes:
    """A well-framed HTTP/1.1 request (Content-Length set) as bytes."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def exchange(port: int, raw: bytes, head: bool = False) -> RawResponse:
    """Send one request on a fresh connection and return the response."""
    conn = RawConnection(port)
    try:
        conn.send(raw)
        response = conn.read_response(head=head)
    finally:
        conn.close()
    if response is None:
        raise ProtocolViolation("the server closed the connection without answering")
    return response


def is_error_from_parser(response: RawResponse) -> bool:
    """aiohttp's own answer before relay's handler runs: plain text.

    400 for bytes that are not HTTP (the connection then closes), 417 for an `Expect` other than
    100-continue (aiohttp's expect handler runs before the application's middleware).
    """
    return response.status in (400, 417) and (response.header("content-type") or "").startswith(
        "text/plain"
    )


def check_response(response: RawResponse, head: bool, what: object) -> None:
    """The claims every answer must meet: 2xx/4xx, never 410, errors as JSON with the status."""
    assert 200 <= response.status < 500, (response, what)
    assert response.status != 410, (response, what)
    if response.status >= 400 and not head and not is_error_from_parser(response):
        assert (response.header("content-type") or "").startswith("application/json"), (
            response,
            what,
        )
        document = response.json()
        assert isinstance(document, dict), (response, what)
        assert document["status"] == response.status, (response, what)
        assert isinstance(document["error"], str), (response, what)
        assert document["error"], (response, what)
