"""Hostile and malformed input against a real `relay serve`, over raw sockets.

Hypothesis generates raw HTTP requests (methods, paths, headers, content types, bodies, framing,
encodings); they go over real sockets to a `relay serve` subprocess with its own Redis, with
valid "canary" events interleaved about every 100 requests. A real `relay worker` delivers to a
loopback target. The claims: every answer is a well-formed HTTP response, no 5xx (Redis is up),
never 410, JSON error bodies from the application, the process stays alive with a bounded RSS,
and every canary is acknowledged and delivered exactly once.

The raw client is tests/support/raw_http.py.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import hmac
import secrets
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.processes import RelayProcess, relay_env, relay_processes
from tests.support.raw_http import (
    RawConnection,
    RawResponse,
    check_response,
    exchange,
    http_request,
    is_error_from_parser,
)
from tests.support.targets import TargetServer

# ---------------------------------------------------------------------------------------------
# Helpers


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


# ---------------------------------------------------------------------------------------------
# The relay under attack: sources of every kind, some with tokens, one canary route per source.

TOKENS = {
    "jsn": "json-token-" + "a1" * 12,
    "frm": "form-token-" + "b2" * 12,
    "asp": "aspnet-token-" + "c3" * 12,
}
ASP_SECRET = "aspnet-secret-" + "d4" * 20
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ENV = {
    "HOSTILE_JSON_TOKEN": TOKENS["jsn"],
    "HOSTILE_FORM_TOKEN": TOKENS["frm"],
    "HOSTILE_ASP_TOKEN": TOKENS["asp"],
    "HOSTILE_ASP_SECRET": ASP_SECRET,
    "HOSTILE_WHSEC": WHSEC,
}
SOURCES = ("jsn", "frm", "either", "hdr", "asp", "rh")


def hostile_routes(target_url: str, run: str) -> str:
    """routes.toml: json, form, json_or_form, header, aspnet and resthooks sources."""
    text = f"""
[sources.jsn]
kind = "json"
token_env = "HOSTILE_JSON_TOKEN"
max_body = "4KiB"
dedupe = {{ key = ["body:id"], window = "1h" }}

[sources.frm]
kind = "form"
token_env = "HOSTILE_FORM_TOKEN"

[sources.either]
kind = "json_or_form"

[sources.hdr]
kind = "header"
methods = ["POST"]

[sources.asp]
kind = "aspnet"
secret_env = "HOSTILE_ASP_SECRET"
token_env = "HOSTILE_ASP_TOKEN"

[sources.rh]
kind = "resthooks"

[targets.sink]
url = "{target_url}"
signing_secret_env = "HOSTILE_WHSEC"
timeout = "5s"
retry = {{ attempts = 5, first = "500ms", max = "2s" }}
"""
    for source in SOURCES:
        text += f'\n[[routes]]\nsource = "{source}"\nevents = ["canary-{run}-*"]\n'
        text += 'targets = ["sink"]\n'
    return text


@dataclass
class Relay:
    """A running receiver and worker with the loopback target they deliver to."""

    serve: RelayProcess
    port: int
    target: TargetServer
    run: str  # this run's canary prefix: no generated request can guess it
    canaries: dict[str, bytes] = field(default_factory=dict)  # event type -> body sent

    def canary_path(self, source: str) -> str:
        token = TOKENS.get(source)
        return f"/hooks/{source}/{token}" if token else f"/hooks/{source}"


@pytest.fixture
def relay(tmp_path: Path, redis_url: str) -> Iterator[Relay]:
    """`relay serve` and `relay worker` on this test's Redis, delivering to a loopback target."""
    run = secrets.token_hex(6)
    with TargetServer() as target:
        routes = tmp_path / "routes.toml"
        routes.write_text(hostile_routes(target.url("/ok/sink"), run))
        env = relay_env(redis_url, routes, **ENV, RELAY_READ_TIMEOUT="2")
        with relay_processes(tmp_path, env) as procs:
            serve, base = procs.serve()
            procs.worker()
            yield Relay(serve, int(base.rsplit(":", 1)[1]), target, run)


def ms_sig(body: bytes) -> str:
    digest = hmac.new(ASP_SECRET.encode(), body, hashlib.sha256).hexdigest().upper()
    return f"sha256={digest}"


def send_canary(relay: Relay) -> None:
    """One valid event, rotating over the source kinds; it must be acknowledged (202)."""
    n = len(relay.canaries)
    etype = f"canary-{relay.run}-{n}"
    source = SOURCES[n % len(SOURCES)]
    headers: list[tuple[str, str]] = []
    if source == "jsn":
        body = orjson.dumps({"event": etype, "id": etype, "n": n, "text": "caf\u00e9 \u2603"})
        headers.append(("Content-Type", "application/json"))
    elif source == "frm":
        body = f"event={etype}&memberId={n}&memberId=again&courseId=%E2%98%83".encode()
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
    elif source == "either":
        body = f"event={etype}&n={n}".encode()
        headers.append(("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"))
    elif source in ("hdr", "rh"):
        body = b"\xff\xfe not UTF-8, not JSON \x00 " + etype.encode()
        headers += [("Content-Type", "application/octet-stream"), ("X-Event-Type", etype)]
    else:
        document = {"Id": secrets.token_hex(16), "Attempt": 1, "Notifications": [{"Action": etype}]}
        body = orjson.dumps(document, option=orjson.OPT_INDENT_2).replace(b"\n", b"\r\n")
        headers += [
            ("Content-Type", "application/json; charset=utf-8"),
            ("ms-signature", ms_sig(body)),
        ]
    response = exchange(relay.port, http_request("POST", relay.canary_path(source), headers, body))
    assert response.status == 202, (response, source)
    reply = response.json()
    assert isinstance(reply, dict)
    assert [e["targets"] for e in reply["events"]] == [["sink"]], reply
    relay.canaries[etype] = body


# ---------------------------------------------------------------------------------------------
# Hypothesis strategies for raw requests.


@dataclass(frozen=True)
class Hostile:
    """One generated request: its exact bytes and how to send it."""

    raw: bytes
    # Framed so that the server and we agree where it ends: safe on a kept-alive connection.
    # Anything else goes on a connection of its own, half-closed after the bytes.
    reusable: bool
    head: bool  # a HEAD request: the response has no body
    # Incomplete on purpose (truncated body, unfinished chunks): we half-close after the bytes,
    # which also means the server may close without answering.
    half_close: bool
    label: str  # what the request was meant to be, for failure messages

    def __repr__(self) -> str:
        return f"Hostile({self.label}, {self.raw[:300]!r}{'...' if len(self.raw) > 300 else ''})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))  # Hypothesis prints failing examples with this: keep them short


_TCHAR = "!#$%&'*+.^_`|~-" + "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/%"

methods = st.sampled_from(
    ["POST", "POST", "POST", "PUT", "GET", "HEAD", "DELETE", "PATCH", "OPTIONS"]
)
#: Methods aiohttp's parser refuses or that no route takes.
unusual_methods = st.one_of(
    st.sampled_from(["TRACE", "post", "FOO", "M-SEARCH", "PROPFIND", "QUERY"]),
    st.text(alphabet=_TCHAR, min_size=1, max_size=12),
)
#: Methods that may confuse framing (CONNECT, HTTP/2 preface) or are not tokens at all.
odd_methods = st.sampled_from(["CONNECT", "PRI", "G ET", "", "P\x00ST", "PÖST", "\x16\x03\x01"])

wrong_tokens = st.one_of(
    st.text(alphabet=_PATH_CHARS.replace("/", ""), min_size=1, max_size=40),
    st.sampled_from([t[:-1] for t in TOKENS.values()] + [t.upper() for t in TOKENS.values()]),
)


@st.composite
def paths(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(request target, whether it is plain ASCII without spaces)."""
    source = draw(st.sampled_from([*SOURCES, "nope", "", "status", "..", "%2e%2e"]))
    kind = draw(st.integers(0, 9))
    if kind <= 2:
        path = f"/hooks/{source}/{TOKENS.get(source, 'x' * 32)}"
    elif kind <= 4:
        path = f"/hooks/{source}"
    elif kind == 5:
        path = f"/hooks/{source}/{draw(wrong_tokens)}"
    elif kind == 6:
        path = "/" + draw(st.text(alphabet=_PATH_CHARS, max_size=60))
    elif kind == 7:
        path = draw(
            st.sampled_from(
                [
                    "/healthz",
                    "/readyz",
                    "/status",
                    "/status.json",
                    "/metrics",
                    "*",
                    "http://evil.example/hooks/jsn",
                    "//hooks//jsn",
                    "/hooks/../status",
                    "/hooks/jsn/%00",
                    "/hooks/%E2%98%83",
                    "/HOOKS/JSN",
                ]
            )
        )
    elif kind == 8:
        path = "/hooks/" + source + "/" + "a" * draw(st.integers(100, 9000))
    else:
        raw = b"/hooks/" + draw(st.binary(min_size=1, max_size=30))
        return raw, False
    if draw(st.booleans()):
        query = draw(
            st.one_of(
                st.just("echo=" + "e" * draw(st.integers(0, 300))),
                st.text(alphabet=_PATH_CHARS + "?", max_size=60),
                st.just("token=" + draw(wrong_tokens)),
            )
        )
        path += "?" + query
    return path.encode(), True


header_names = st.one_of(
    st.sampled_from(
        [
            "X-Event-Type",
            "x-event-type",
            "ms-signature",
            "X-Hook-Secret",
            "Accept",
            "Authorization",
            "Cookie",
            "X-Relay-Target",
            "X-Relay-Source",
            "X-Forwarded-Host",
            "X-Request-Id",
            "Referer",
        ]
    ),
    st.text(alphabet=_TCHAR, min_size=1, max_size=40),
)
#: Header names that decide how the body is framed: only on connections of their own.
framing_names = st.sampled_from(
    ["Content-Length", "Transfer-Encoding", "Connection", "Upgrade", "TE", "Trailer"]
)
header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60),
    st.sampled_from(
        [
            "100-continue",
            "gzip",
            "deflate",
            "br",
            "identity, gzip",
            "sha256=" + "0" * 64,
            "sha256=zz",
            "Bearer nope",
            "application/json",
            "",
            " leading and trailing ",
        ]
    ),
)
#: Values that are not valid header text (controls, bare CR/LF, non-ASCII): parser errors.
bad_header_values = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"a\rb", b"a\nX-Injected: 1", b"\x00", b"caf\xc3\xa9", b"\xff\xfe"]),
)

content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "text/json",
            "application/vnd.api+json",
            "application/x-www-form-urlencoded",
            "application/x-www-form-urlencoded; charset=latin-1",
            "multipart/form-data; boundary=xyz",
            "multipart/form-data",
            "text/plain",
            "application/octet-stream",
            "application/json; charset=utf-16",
            ";;;",
            "*/*",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["event", "id", "Id", "Action", "x"]) | st.text(max_size=8),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Request bodies: random bytes, broken and valid JSON, forms, deep nesting, big ones."""
    kind = draw(st.integers(0, 12))
    if kind == 0:
        return draw(st.binary(max_size=300))
    if kind == 1:  # invalid UTF-8 inside something that looks like JSON
        return b'{"event": "' + draw(st.binary(max_size=20)) + b'\xff\xfe"}'
    if kind == 2:
        return orjson.dumps(draw(json_values))
    if kind == 3:  # an event type of any shape
        return orjson.dumps({"event": draw(json_values), "id": draw(json_values)})
    if kind == 4:  # deeply nested (orjson stops at 1024 levels)
        depth = draw(st.integers(1, 5000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        return opener * depth + b"1" + closer * depth
    if kind == 5:  # duplicate keys
        keys = draw(st.lists(st.sampled_from(["event", "id", "Id", "Notifications"]), max_size=6))
        parts = [f'"{k}": {orjson.dumps(draw(json_values)).decode()}' for k in keys]
        return ("{" + ", ".join(parts) + "}").encode()
    if kind == 6:  # forms with repeated fields, broken escapes, many fields
        fields = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["event", "memberId", "courseId", "", "%zz", "a%"]),
                    st.text(max_size=15),
                ),
                max_size=8,
            )
        )
        text = "&".join(f"{k}={v}" for k, v in fields)
        extra = draw(st.sampled_from(["", "&&&", "%", "%e9", "=", "&event", "+%2B"]))
        return (text + extra).encode("utf-8", "surrogatepass")
    if kind == 7:  # too many form fields
        return b"&".join(b"f%d=1" % i for i in range(draw(st.integers(990, 1100))))
    if kind == 8:  # ASP.NET shapes
        notifications = draw(st.one_of(json_values, st.lists(json_values, max_size=3)))
        return orjson.dumps({"Id": draw(json_values), "Notifications": notifications})
    if kind == 9:  # large bodies: over the 4 KiB source limit, or over the 1 MiB default
        size = draw(st.sampled_from([4095, 4097, 70_000, 1024 * 1024 + 1]))
        return b'{"event": "' + b"x" * size + b'"}'
    if kind == 10:
        return b""
    if kind == 11:
        return draw(st.text(max_size=100)).encode("utf-8", "surrogatepass")
    return b"event=" + draw(st.binary(max_size=40))


PLAUSIBLE_TYPES = {"json": "application/json", "form": "application/x-www-form-urlencoded"}
event_types = st.one_of(
    st.sampled_from(["COURSEMEMBER_CREATED", "release_course", "Course*", "canary-", "*", ""]),
    st.text(max_size=30),
)


@st.composite
def plausible_bodies(draw: st.DrawFn, kind: str) -> bytes:
    """Bodies a provider might send: an event field of any text, extra fields, Notifications."""
    if kind == "form":
        fields = [("event", draw(event_types)), ("memberId", draw(st.text(max_size=10)))]
        fields += draw(st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=3))
        return urlencode(fields).encode()
    document = {"event": draw(event_types), "id": draw(st.text(max_size=12))}
    if draw(st.booleans()):
        actions = draw(st.lists(event_types, min_size=1, max_size=3))
        document = {
            "Id": draw(st.text(max_size=12)),
            "Notifications": [{"Action": a} for a in actions],
        }
    document |= draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))
    return orjson.dumps(document)


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    out, at = bytearray(), 0
    for size in [*sizes, len(body)]:
        piece = body[at : at + max(size, 1)]
        if not piece:
            break
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
        at += len(piece)
    return bytes(out) + b"0\r\n\r\n"


@st.composite
def hostile_requests(draw: st.DrawFn) -> Hostile:
    """One raw request; most are well framed, some are deliberately not."""
    reusable = True
    labels = []
    # Rare branches are taken on the largest value: Hypothesis starts from the smallest.
    if draw(st.integers(0, 14)) == 14:
        method = draw(odd_methods)
        reusable = False
        labels.append("odd-method")
    elif draw(st.integers(0, 9)) == 9:
        method = draw(unusual_methods)
    else:
        method = draw(methods)
    target, plain = draw(paths())
    reusable &= plain
    # A third are close to valid (a real source, its token, its content type, a sensible body)
    # so that the generated bytes also reach parsing, signature checks and Redis.
    plausible = draw(st.integers(0, 2)) == 2
    if plausible:
        source = draw(st.sampled_from(SOURCES))
        method = draw(st.sampled_from(["POST", "PUT"]))
        target = (
            f"/hooks/{source}/{TOKENS[source]}" if source in TOKENS else f"/hooks/{source}"
        ).encode()
        reusable = True
        labels.append(f"plausible-{source}")
    version = b"HTTP/1.1"
    if draw(st.integers(0, 19)) == 19:
        version = draw(st.sampled_from([b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.1 x", b""]))
        reusable = False
        labels.append("version")
    headers: list[bytes] = [b"Host: 127.0.0.1"]
    if plausible:
        kind = "form" if source == "frm" or (source == "either" and draw(st.booleans())) else "json"
        headers.append(b"Content-Type: " + PLAUSIBLE_TYPES[kind].encode())
    elif draw(st.integers(0, 3)):
        headers.append(b"Content-Type: " + draw(content_types).encode())
    if b"/hooks/hdr" in target or b"/hooks/rh" in target:
        headers.append(b"X-Event-Type: " + draw(st.text(alphabet=_TCHAR, max_size=30)).encode())
    for name, value in draw(st.lists(st.tuples(header_names, header_values), max_size=6)):
        headers.append(name.encode() + b": " + value.encode())
    if draw(st.integers(0, 9)) == 9:  # headers aiohttp takes once, or whose value it acts on
        name = draw(
            st.sampled_from(["Expect", "Content-Encoding", "Host", "Content-Type", "User-Agent"])
        )
        headers.append(name.encode() + b": " + draw(header_values).encode())
        labels.append("singleton-header")
    if draw(st.integers(0, 14)) == 14:  # a huge header: over 8190 bytes is aiohttp's 400
        name = draw(header_names)
        headers.append(name.encode() + b": " + b"v" * draw(st.integers(1000, 9000)))
        labels.append("huge-header")
    if draw(st.integers(0, 9)) == 9:
        name = draw(st.one_of(framing_names, header_names))
        headers.append(name.encode() + b": " + draw(bad_header_values))
        reusable = False
        labels.append("bad-header")
    if draw(st.integers(0, 29)) == 29:
        headers += [b"X-Many-%d: 1" % i for i in range(draw(st.integers(100, 200)))]
        labels.append("many-headers")
    body = draw(plausible_bodies(kind) if plausible and draw(st.integers(0, 3)) else bodies())
    if b"asp" in target and draw(st.booleans()):
        headers.append(b"ms-signature: " + ms_sig(body).encode())  # past the signature check
    framing = draw(
        st.sampled_from(
            ["length"] * 8
            + ["chunked", "gzip", "deflate", "none"]
            + ["truncated", "overlong", "bad-chunked", "both", "negative", "twice", "broken-gzip"]
        )
    )
    labels.append(framing)
    if framing == "length":
        headers.append(b"Content-Length: %d" % len(body))
    elif framing == "chunked":
        headers.append(b"Transfer-Encoding: chunked")
        body = _chunked(body, draw(st.lists(st.integers(1, 50), max_size=5)))
    elif framing in ("gzip", "deflate"):
        packed = gzip.compress(body) if framing == "gzip" else zlib.compress(body)
        headers += [b"Content-Encoding: " + framing.encode(), b"Content-Length: %d" % len(packed)]
        body = packed
    elif framing == "none":
        body = b""  # no length header: the request has no body
    else:
        reusable = False
        if framing == "truncated":
            headers.append(b"Content-Length: %d" % (len(body) + draw(st.integers(1, 1000))))
        elif framing == "overlong":
            headers.append(b"Content-Length: %d" % max(0, len(body) - draw(st.integers(1, 10))))
        elif framing == "bad-chunked":
            headers.append(b"Transfer-Encoding: chunked")
            body = draw(st.sampled_from([b"zz\r\nabc\r\n", b"5\r\nab\r\n0\r\n\r\n", b"3\r\nabc"]))
        elif framing == "both":
            headers += [b"Content-Length: %d" % len(body), b"Transfer-Encoding: chunked"]
        elif framing == "negative":
            headers.append(b"Content-Length: -1")
        elif framing == "twice":
            headers += [b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + 1)]
        else:  # broken-gzip: a body that does not decode
            headers += [b"Content-Encoding: gzip", b"Content-Length: %d" % len(body)]
    raw = b" ".join([method.encode("utf-8"), target, version]).rstrip(b" ")
    raw += b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + body
    half_close = framing in ("truncated", "bad-chunked")
    return Hostile(raw, reusable, method == "HEAD", half_close, label="+".join(labels))


# ---------------------------------------------------------------------------------------------
# Sending them.


@dataclass
class Attack:
    """Sends generated requests to one relay, checking every answer, with canaries between."""

    relay: Relay
    canary_every: int
    sent: int = 0
    answered: Counter[int] = field(default_factory=Counter)
    parser_errors: int = 0  # answered by aiohttp before relay's code (text/plain 400 or 417)
    unanswered: int = 0
    _conn: RawConnection | None = None

    def send(self, request: Hostile) -> None:
        send = self._send_kept_alive if request.reusable else self._send_alone
        response = send(request)
        self.sent += 1
        if response is None:
            self.unanswered += 1
        else:
            self.answered[response.status] += 1
            self.parser_errors += is_error_from_parser(response)
            check_response(response, request.head, request)
        if self.sent % self.canary_every == 0:
            send_canary(self.relay)

    def _send_kept_alive(self, request: Hostile) -> RawResponse:
        if self._conn is None:
            self._conn = RawConnection(self.relay.port)
        conn = self._conn
        conn.send(request.raw)
        response = conn.read_response(head=request.head)
        if response is None:
            self._conn = None
            conn.close()
        # A well-framed request always gets an answer, even on a connection it then closes.
        assert response is not None, request
        # aiohttp closes after its own 400 without saying "Connection: close".
        if response.closes or is_error_from_parser(response):
            conn.close()
            self._conn = None
        return response

    def _send_alone(self, request: Hostile) -> RawResponse | None:
        conn = RawConnection(self.relay.port)
        try:
            # The server may refuse the head early and close: what it sent is still checked.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                conn.send(request.raw)
            if request.half_close:
                conn.half_close()
            response = conn.read_response(head=request.head)
            # Only a request we cut short may go unanswered.
            assert response is not None or request.half_close, request
            return response
        finally:
            conn.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


#: The RSS the receiver may reach after the attack (it starts near 50 MiB).
RSS_LIMIT_KIB = 256 * 1024


def attack(relay: Relay, examples: int, per_example: int, canary_every: int) -> Attack:
    """Run `examples` Hypothesis examples of `per_example` requests each against `relay`."""
    state = Attack(relay, canary_every)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,  # examples depend on the server run; replaying old ones proves little
        suppress_health_check=list(HealthCheck),
    )
    @given(batch=st.lists(hostile_requests(), min_size=per_example, max_size=per_example))
    def run(batch: list[Hostile]) -> None:
        for request in batch:
            state.send(request)

    try:
        run()
    finally:
        state.close()
    return state


def check_aftermath(relay: Relay, state: Attack, at_least: int) -> None:
    """Alive, bounded memory, no error logged, every canary delivered exactly once."""
    assert state.sent >= at_least, state.sent
    assert relay.serve.alive(), relay.serve.output()[-3000:]
    assert exchange(relay.port, http_request("GET", "/healthz")).status == 200
    rss = rss_kib(relay.serve.pid)
    assert rss < RSS_LIMIT_KIB, f"relay serve RSS {rss} KiB after {state.sent} requests"
    assert state.answered, "no request got an answer"
    assert 202 in state.answered, state.answered
    assert 400 in state.answered, state.answered
    # Every canary: acknowledged (checked when sent) and delivered exactly once, byte for byte.
    expected = set(relay.canaries)
    assert len(expected) >= state.sent // state.canary_every

    relay.target.wait_for(
        lambda got: expected <= {r.headers.get("x-relay-event", "") for r in got}, timeout=60
    )
    deliveries = relay.target.by_name("sink")
    counts = Counter(r.headers.get("x-relay-event", "") for r in deliveries)
    assert {k for k in counts if k in expected} == expected, expected - set(counts)
    assert all(counts[k] == 1 for k in expected), {k: counts[k] for k in expected if counts[k] != 1}
    assert set(counts) == expected, set(counts) - expected  # nothing but canaries was routed
    for delivery in deliveries:
        assert delivery.body == relay.canaries[delivery.headers["x-relay-event"]]
    # No error logged: every failure was an input problem answered as such.
    log = relay.serve.output()
    for line in log.splitlines():
        assert '"level":"error"' not in line, line
        assert "request_failed" not in line, line


@pytest.mark.timeout(60)
def test_hostile_requests_fast(relay: Relay) -> None:
    """A small run (~400 requests) of the attack below, for every test run."""
    state = attack(relay, examples=40, per_example=10, canary_every=50)
    check_aftermath(relay, state, at_least=400)
    print(f"{dict(state.answered)}, parser {state.parser_errors}, cut {state.unanswered}")


@pytest.mark.slow
@pytest.mark.timeout(300)  # about 100 s
def test_ten_thousand_hostile_requests(relay: Relay) -> None:
    """10,000 generated requests, a canary every 100: nothing lost, nothing crashed."""
    started = time.monotonic()
    state = attack(relay, examples=1000, per_example=10, canary_every=100)
    check_aftermath(relay, state, at_least=10_000)
    print(
        f"{state.sent} requests in {time.monotonic() - started:.1f} s: {dict(state.answered)}, "
        f"{state.parser_errors} answered by aiohttp's parser, {state.unanswered} cut short"
    )
