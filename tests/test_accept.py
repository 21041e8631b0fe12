"""relay.receiver.accept: the receiver's decisions as pure functions, known answers per function
(gidgethub's tests/test_sansio.py style), then the two callers agreeing: the HTTP handler and
`relay check --body` give the same status and events for generated requests, and a reload while a
body arrives cannot pair an old source with new routes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import http.client
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from relay.cli.check_dry_run import SAMPLE_ECHO, default_content_type, dry_run
from relay.config.loading import parse_routes
from relay.config.model import RouteTable
from relay.config.settings import Settings
from relay.core.errors import NotFound, Unauthorized, UnsupportedMediaType
from relay.core.headers import Coding
from relay.core.signatures import ms_signature
from relay.receiver.accept import (
    Accepted,
    Handshake,
    ReadBody,
    Refused,
    Request,
    Step,
    accept,
    accept_body,
    accept_head,
)
from relay.receiver.app import SERVER_OPTIONS, create_app
from relay.receiver.batch import Committed
from relay.receiver.handshakes import SUBSCRIBED, HandshakeKind
from relay.receiver.hook import _reply, reply_body
from relay.receiver.state import ROUTES
from relay.store import keys
from tests.support.receiver import receiver_server

FELLOW_TOKEN = "fellow-token-0123456789abcdef"
LEARN_SECRET = "123456789012345678901234567890123456789012345678"
ENV = {"FELLOW_TOKEN": FELLOW_TOKEN, "LEARN_SECRET": LEARN_SECRET}

ROUTES_TOML = """
[sources.elucidat]
kind = "json_or_form"

[sources.digitalchalk]
kind = "json"
max_body = "1KiB"

[sources.fellow]
kind = "form"
token_env = "FELLOW_TOKEN"

[sources.learn365]
kind = "aspnet"
secret_env = "LEARN_SECRET"
dedupe = { key = ["body:Id"] }

[sources.strigo]
kind = "resthooks"
methods = ["POST"]

[targets.crm]
url = "http://127.0.0.1:9/crm"

[targets.analytics]
url = "http://127.0.0.1:9/analytics"

[[routes]]
source = "elucidat"
events = ["release_*"]
targets = ["crm"]

[[routes]]
source = "digitalchalk"
events = ["element_published"]
targets = ["crm", "analytics"]

[[routes]]
source = "fellow"
events = ["COURSEMEMBER_*"]
targets = ["crm", "analytics"]

[[routes]]
source = "learn365"
events = ["a1"]
targets = ["crm"]

[[routes]]
source = "strigo"
events = ["enrollment.*"]
targets = ["analytics"]
"""

# Microsoft's ms-signature known answer (PROVIDERS.md): two notifications, CRLF line ends.
MS_BODY = (
    b'{\r\n  "Id": "1234567890",\r\n  "Attempt": 1,\r\n  "Properties": {\r\n    "p1": "pv1"\r\n'
    b'  },\r\n  "Notifications": [\r\n    {\r\n      "Action": "a1",\r\n      "d1": "dv1"\r\n'
    b'    },\r\n    {\r\n      "Action": "a1",\r\n      "d2": "http://localhost"\r\n    }\r\n'
    b"  ]\r\n}"
)
MS_SIGNATURE = "sha256=DCDEB62502988CDEDE464AF6A97566D61288C446CFC46F74F341E11173FF30A1"
JSON = "application/json"
IDS: dict[str, Any] = {"event_id": "evt_3", "received_at": 2.0}
FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return parse_routes(ROUTES_TOML, "routes.toml", ENV)


def request(
    source: str,
    headers: dict[str, str] | None = None,
    *,
    method: str = "POST",
    token: str | None = None,
    query: dict[str, str] | None = None,
) -> Request:
    return Request(method, source, token, headers or {}, query or {})


def decide(table: RouteTable, req: Request, body: bytes) -> Refused | Handshake | Accepted:
    return accept(table, req, body, event_id="evt_test", received_at=1.5)


def refused(outcome: object, step: Step, status: int) -> Refused:
    assert isinstance(outcome, Refused), outcome
    assert (outcome.step, outcome.status) == (step, status), outcome
    return outcome


def accepted(outcome: object) -> Accepted:
    assert isinstance(outcome, Accepted), outcome
    return outcome


# --- accept_head: source, token, handshakes, method, signature present, coding -----------------


def test_head_unknown_source_is_404_without_a_source_name(table: RouteTable) -> None:
    out = refused(accept_head(table, request("nope")), Step.SOURCE, 404)
    assert isinstance(out.error, NotFound)
    assert out.message == "no source named 'nope'"
    assert out.source is None


@pytest.mark.parametrize(
    ("source", "token", "status", "message"),
    [
        ("fellow", None, 401, "this source needs its token in the path: /hooks/<source>/<token>"),
        ("fellow", "wrong-token-0123456789abcdef", 401, "the token in the path is wrong"),
        ("fellow", FELLOW_TOKEN[:-1], 401, "the token in the path is wrong"),
        ("digitalchalk", "any", 404, "no source named 'digitalchalk'"),  # as if unknown
    ],
)
def test_head_token(
    table: RouteTable, source: str, token: str | None, status: int, message: str
) -> None:
    out = refused(accept_head(table, request(source, token=token)), Step.TOKEN, status)
    assert out.message == message
    assert out.source == source  # known to the logs and metrics, never to the caller
    assert isinstance(out.error, Unauthorized if status == 401 else NotFound)


def test_head_right_token_reads_the_body_with_the_same_table(table: RouteTable) -> None:
    head = accept_head(table, request("fellow", {"content-type": FORM}, token=FELLOW_TOKEN))
    assert isinstance(head, ReadBody)
    assert head.table is table
    assert head.source is table.sources["fellow"]
    assert head.coding is None
    assert not head.keeps_sent  # no signature: the bytes as sent are not needed


def test_head_aspnet_echo_handshake(table: RouteTable) -> None:
    head = accept_head(table, request("learn365", method="GET", query={"echo": "abc123"}))
    assert head == Handshake(
        HandshakeKind.ASPNET,
        "learn365",
        "abc123",
        "text/plain",
        (("X-Content-Type-Options", "nosniff"),),
    )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "an ASP.NET WebHooks handshake needs ?echo=<value>"),
        ({"echo": "x" * 257}, "the echo value is longer than 256 characters"),
    ],
)
def test_head_aspnet_echo_refusals(table: RouteTable, query: dict[str, str], message: str) -> None:
    out = refused(
        accept_head(table, request("learn365", method="GET", query=query)), Step.HANDSHAKE, 400
    )
    assert out.message == message


def test_head_resthooks_handshake_echoes_the_secret(table: RouteTable) -> None:
    head = accept_head(table, request("strigo", {"x-hook-secret": "hs-123"}))
    assert head == Handshake(
        HandshakeKind.RESTHOOKS, "strigo", SUBSCRIBED, JSON, (("X-Hook-Secret", "hs-123"),)
    )
    assert orjson.loads(SUBSCRIBED) == {"status": "subscribed"}


@pytest.mark.parametrize("secret", ["", "s" * 1025])
def test_head_resthooks_handshake_refusals(table: RouteTable, secret: str) -> None:
    out = refused(
        accept_head(table, request("strigo", {"x-hook-secret": secret})), Step.HANDSHAKE, 400
    )
    assert out.message == "the X-Hook-Secret header is empty or too long"


@pytest.mark.parametrize(
    ("source", "method", "allow"),
    [
        ("fellow", "DELETE", "POST, PUT"),
        ("strigo", "PUT", "POST"),
        ("learn365", "PATCH", "POST, PUT, GET"),  # GET: its handshake
        ("digitalchalk", "GET", "POST, PUT"),
    ],
)
def test_head_wrong_method_is_405_with_allow(
    table: RouteTable, source: str, method: str, allow: str
) -> None:
    token = FELLOW_TOKEN if source == "fellow" else None
    out = refused(accept_head(table, request(source, method=method, token=token)), Step.METHOD, 405)
    assert out.message == f"source '{source}' takes {allow}, not {method}"
    assert out.headers == (("Allow", allow),)


def test_head_aspnet_without_ms_signature_is_400_before_the_body(table: RouteTable) -> None:
    out = refused(
        accept_head(table, request("learn365", {"content-type": JSON})), Step.SIGNATURE, 400
    )
    assert out.message == "the ms-signature header is missing"
    head = accept_head(table, request("learn365", {"content-type": JSON}), signatures=False)
    assert isinstance(head, ReadBody)


@pytest.mark.parametrize(
    ("encoding", "coding"),
    [
        ("gzip", Coding.GZIP),
        ("x-gzip", Coding.GZIP),
        ("Deflate", Coding.DEFLATE),
        ("identity", None),
    ],
)
def test_head_content_encoding_taken(
    table: RouteTable, encoding: str, coding: Coding | None
) -> None:
    head = accept_head(table, request("elucidat", {"content-encoding": encoding}))
    assert isinstance(head, ReadBody)
    assert head.coding == coding


@pytest.mark.parametrize("encoding", ["br", "gzip, gzip", "zstd"])
def test_head_content_encoding_refused_is_415(table: RouteTable, encoding: str) -> None:
    out = refused(
        accept_head(table, request("elucidat", {"content-encoding": encoding})), Step.ENCODING, 415
    )
    assert isinstance(out.error, UnsupportedMediaType)


def test_head_decisions_come_in_order(table: RouteTable) -> None:
    """Token before method before signature before coding: each later refusal is masked."""
    everything_wrong = {"content-encoding": "br"}
    out = accept_head(table, request("fellow", everything_wrong, method="DELETE"))
    assert isinstance(out, Refused)
    assert out.step is Step.TOKEN
    out = accept_head(table, request("learn365", everything_wrong, method="DELETE"))
    assert isinstance(out, Refused)
    assert out.step is Step.METHOD
    out = accept_head(table, request("learn365", everything_wrong))
    assert isinstance(out, Refused)
    assert out.step is Step.SIGNATURE


# --- accept_body: size, signature, parsing, dedupe, routes -------------------------------------


def _read(table: RouteTable, source: str, headers: dict[str, str], **kw: Any) -> ReadBody:
    head = accept_head(table, request(source, headers, **kw))
    assert isinstance(head, ReadBody), head
    return head


def test_body_learn365_known_vector_split_per_notification(table: RouteTable) -> None:
    read = _read(table, "learn365", {"content-type": JSON, "ms-signature": MS_SIGNATURE})
    out = accepted(accept_body(read, MS_BODY, MS_BODY, event_id="evt_1", received_at=2.0))
    assert out.id == "evt_1"
    assert [(e.id, e.type, e.targets) for e in out.events] == [
        ("evt_1-0", "a1", ("crm",)),
        ("evt_1-1", "a1", ("crm",)),
    ]
    assert [p.dedupe_value for p in out.parsed] == ["1234567890#0", "1234567890#1"]
    assert out.events[0].dedupe_key == keys.dedupe_key("learn365", "1234567890#0")
    # A split body is relay's, not the provider's: its signature is not forwarded.
    assert all(name != "ms-signature" for e in out.events for name, _ in e.headers)
    assert b'"d1": "dv1"' in out.events[0].body
    assert b"d2" not in out.events[0].body


@pytest.mark.parametrize("spooled", [False, True])
@pytest.mark.parametrize("first", [None, "evt_0"])
def test_the_202_body_is_the_reply_as_json_on_every_path(
    table: RouteTable, first: str | None, spooled: bool
) -> None:
    # reply_body's shortcut for one new event must give `_reply`'s bytes exactly.
    single = _read(table, "digitalchalk", {"content-type": JSON})
    one = accepted(accept_body(single, b"{}", b'{"event": "element_published"}', **IDS))
    untyped = accepted(accept_body(single, b"{}", b"{}", **IDS))
    read = _read(table, "learn365", {"content-type": JSON, "ms-signature": MS_SIGNATURE})
    two = accepted(accept_body(read, MS_BODY, MS_BODY, **IDS))
    for out in (one, untyped, two):
        committed = Committed((first,) + (None,) * (len(out.events) - 1))
        body = reply_body(out, committed, spooled)
        assert body == orjson.dumps(_reply(out, committed, spooled))
        assert orjson.loads(body)["events"][0]["id"] == out.events[0].id
    assert orjson.loads(reply_body(one, Committed((None,)), False)) == {
        "id": "evt_3",
        "events": [{"id": "evt_3", "type": "element_published", "targets": ["crm", "analytics"]}],
        "duplicate": False,
    }


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.none() | st.text(),
    targets=st.lists(st.text(), max_size=3).map(tuple),
    ids=st.tuples(st.text(max_size=40), st.text(max_size=40)),
)
def test_the_one_new_events_202_body_is_the_reply_as_json_whatever_its_values(
    table: RouteTable, kind: str | None, targets: tuple[str, ...], ids: tuple[str, str]
) -> None:
    single = _read(table, "digitalchalk", {"content-type": JSON})
    one = accepted(accept_body(single, b"{}", b'{"event": "element_published"}', **IDS))
    event = dataclasses.replace(one.events[0], id=ids[1], type=kind, targets=targets)
    out = one._replace(id=ids[0], events=(event,))
    committed = Committed((None,))
    assert reply_body(out, committed, False) == orjson.dumps(_reply(out, committed, False))


def test_body_learn365_single_notification_keeps_bytes_and_signature(table: RouteTable) -> None:
    body = b'{"Id": "x1", "Notifications": [{"Action": "a1"}]}'
    signature = ms_signature(LEARN_SECRET, body).replace("sha256", "SHA256").lower()
    read = _read(table, "learn365", {"content-type": JSON, "ms-signature": signature})
    out = accepted(accept_body(read, body, body, event_id="evt_2", received_at=2.0))
    (event,) = out.events
    assert (event.id, event.body, event.received_at, event.method) == ("evt_2", body, 2.0, "POST")
    assert ("ms-signature", signature) in event.headers


@pytest.mark.parametrize(
    ("signature", "status", "message"),
    [
        ("sha256=" + "0" * 64, 401, "the ms-signature does not match the body"),
        ("md5=abc", 400, "the ms-signature header must be 'sha256=<64 hex digits>'"),
    ],
)
def test_body_learn365_signature_refusals(
    table: RouteTable, signature: str, status: int, message: str
) -> None:
    read = _read(table, "learn365", {"content-type": JSON, "ms-signature": signature})
    out = refused(
        accept_body(read, MS_BODY, MS_BODY, event_id="e", received_at=0), Step.SIGNATURE, status
    )
    assert out.message == message
    unsigned = accept_body(read, MS_BODY, MS_BODY, event_id="e", received_at=0, signatures=False)
    assert len(accepted(unsigned).events) == 2


def test_body_over_max_body_is_413(table: RouteTable) -> None:
    read = _read(table, "digitalchalk", {"content-type": JSON})
    body = b'{"event": "x", "pad": "' + b"x" * 1024 + b'"}'
    out = refused(accept_body(read, body, body, event_id="e", received_at=0), Step.SIZE, 413)
    assert out.message == f"the body is {len(body)} bytes; this source takes at most 1024"


@pytest.mark.parametrize(
    ("source", "headers", "body", "status", "start"),
    [
        ("digitalchalk", {"content-type": FORM}, b"event=x", 415, "source 'digitalchalk' takes"),
        ("digitalchalk", {"content-type": JSON}, b"{not json", 400, "the body is not valid JSON"),
        ("digitalchalk", {"content-type": JSON}, b"  ", 400, "the body is empty"),
        ("elucidat", {"content-type": "text/plain"}, b"event=x", 415, "source 'elucidat' takes"),
        ("fellow", {"content-type": FORM}, b"event=\xff", 400, "the form body is not valid UTF-8"),
    ],
)
def test_body_parse_refusals(
    table: RouteTable, source: str, headers: dict[str, str], body: bytes, status: int, start: str
) -> None:
    token = FELLOW_TOKEN if source == "fellow" else None
    read = _read(table, source, headers, token=token)
    out = refused(accept_body(read, body, body, event_id="e", received_at=0), Step.BODY, status)
    assert out.message.startswith(start)


# --- accept: the providers' wire forms (PROVIDERS.md), whole bodies ----------------------------


@pytest.mark.parametrize(
    ("source", "method", "headers", "body", "etype", "targets"),
    [
        # Elucidat: JSON in the docs, a form in their own sample receiver; numbers as strings.
        (
            "elucidat",
            "POST",
            {"content-type": JSON},
            b'{"event": "release_course", "release_views": "0"}',
            "release_course",
            ("crm",),
        ),
        (
            "elucidat",
            "POST",
            {"content-type": FORM},
            b"event=release_course&project_code=p1",
            "release_course",
            ("crm",),
        ),
        (
            "elucidat",
            "POST",
            {"content-type": JSON},
            b'{"event": "project_created"}',
            "project_created",
            (),
        ),
        # DigitalChalk: POST or PUT, JSON.
        (
            "digitalchalk",
            "PUT",
            {"content-type": JSON},
            b'{"event": "element_published", "id": 1}',
            "element_published",
            ("crm", "analytics"),
        ),
        # Fellow: a form, its token in the path.
        (
            "fellow",
            "POST",
            {"content-type": FORM},
            b"courseId=1&memberId=2&event=COURSEMEMBER_COMPLETED",
            "COURSEMEMBER_COMPLETED",
            ("crm", "analytics"),
        ),
        # Strigo (REST Hooks): the bare entity, the type in x-event-type.
        (
            "strigo",
            "POST",
            {"content-type": JSON, "x-event-type": "enrollment.create"},
            b'{"id": "e1"}',
            "enrollment.create",
            ("analytics",),
        ),
        ("strigo", "POST", {"content-type": JSON}, b'{"id": "e1"}', None, ()),
        # Learn365: the ASP.NET WebHooks known answer, the first of its two events.
        (
            "learn365",
            "POST",
            {"content-type": "application/json; charset=utf-8", "ms-signature": MS_SIGNATURE},
            MS_BODY,
            "a1",
            ("crm",),
        ),
    ],
)
def test_accept_provider_vectors(
    table: RouteTable,
    source: str,
    method: str,
    headers: dict[str, str],
    body: bytes,
    etype: str | None,
    targets: tuple[str, ...],
) -> None:
    token = FELLOW_TOKEN if source == "fellow" else None
    out = accepted(decide(table, request(source, headers, method=method, token=token), body))
    first = out.events[0]
    assert (first.type, first.targets, first.source, first.method) == (
        etype,
        targets,
        source,
        method,
    )
    assert first.content_type == headers["content-type"]
    assert first.received_at == 1.5


def test_accept_gzip_body_is_decoded_and_verified_as_sent(table: RouteTable) -> None:
    sent = gzip.compress(MS_BODY)
    headers = {
        "content-type": JSON,
        "content-encoding": "gzip",
        "ms-signature": ms_signature(LEARN_SECRET, sent),  # over the bytes as sent
    }
    out = accepted(decide(table, request("learn365", headers), sent))
    assert [e.type for e in out.events] == ["a1", "a1"]
    assert all(
        name not in ("ms-signature", "content-encoding")
        for e in out.events
        for name, _ in e.headers
    )


# mtime=0: gzip bytes without a timestamp, so that every pytest-xdist worker collects the same ids.
@pytest.mark.parametrize(
    ("sent", "step", "status"),
    [
        (gzip.compress(b"x", mtime=0)[:-4], Step.ENCODING, 400),  # cut short
        (b"not gzip at all", Step.ENCODING, 400),
        # Over 1 KiB once decoded:
        (gzip.compress(b'{"event": "' + b"x" * 4096 + b'"}', mtime=0), Step.SIZE, 413),
    ],
)
def test_accept_bad_coded_bodies(table: RouteTable, sent: bytes, step: Step, status: int) -> None:
    headers = {"content-type": JSON, "content-encoding": "gzip"}
    refused(decide(table, request("digitalchalk", headers), sent), step, status)


# --- one snapshot per request -------------------------------------------------------------------

RELOADED_TOML = ROUTES_TOML.replace(
    'targets = ["crm", "analytics"]\n\n[[routes]]\nsource = "fellow"',
    'targets = ["analytics"]\n\n[[routes]]\nsource = "fellow"',
)


def test_the_body_phase_routes_with_the_heads_table(table: RouteTable) -> None:
    reloaded = parse_routes(RELOADED_TOML, "routes.toml", ENV)
    assert reloaded.match("digitalchalk", "element_published") == ("analytics",)
    read = _read(table, "digitalchalk", {"content-type": JSON})
    body = b'{"event": "element_published"}'
    # A reload between the phases swaps the holder's table; the request keeps its own.
    out = accepted(accept_body(read, body, body, event_id="e", received_at=0))
    assert out.events[0].targets == ("crm", "analytics")


async def test_a_reload_while_the_body_arrives_keeps_the_requests_routes(
    aiohttp_client: Any, redis_url: str, table: RouteTable
) -> None:
    reloaded = parse_routes(RELOADED_TOML, "routes.toml", ENV)
    app = create_app(Settings(redis_url=redis_url), table)
    client = await aiohttp_client(await receiver_server(app))
    head_decided = asyncio.Event()

    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"event": '
        await asyncio.sleep(0.2)  # the handler has decided the head and waits for the rest
        app[ROUTES].table = reloaded
        head_decided.set()
        yield b'"element_published"}'

    response = await client.post(
        "/hooks/digitalchalk", data=trickle(), headers={"Content-Type": JSON}
    )
    assert head_decided.is_set()
    assert response.status == 202
    reply = await response.json()
    assert reply["events"][0]["targets"] == ["crm", "analytics"]  # the old table's routes
    again = await client.post(
        "/hooks/digitalchalk",
        data=b'{"event": "element_published"}',
        headers={"Content-Type": JSON},
    )
    assert (await again.json())["events"][0]["targets"] == ["analytics"]  # the next one: new


# --- the HTTP handler and `relay check --body` agree ---------------------------------------------


@pytest.fixture
def served(redis_url: str, table: RouteTable) -> Iterator[int]:
    """The receiver on a loopback port, served from a thread of its own (sync clients)."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(Settings(redis_url=redis_url), table), **SERVER_OPTIONS)
    started = threading.Event()
    port: list[int] = []

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    assert started.wait(10)
    yield port[0]
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


BODIES = [
    b'{"event": "element_published"}',
    b'{"event": "release_course"}',
    b"event=COURSEMEMBER_CREATED&memberId=2",
    b'{"id": "e1"}',
    b'{"Id": "x1", "Notifications": [{"Action": "a1"}]}',
    MS_BODY,
    b'{"Notifications": []}',
    b"{broken",
    b"",
]


@st.composite
def sample_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A request as a provider (or a stranger) might send it, with the source's right token."""
    body = draw(st.sampled_from(BODIES))
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        headers["content-type"] = draw(st.sampled_from([JSON, FORM, "text/plain"]))
    if draw(st.booleans()):
        headers["x-event-type"] = draw(st.sampled_from(["enrollment.create", "other"]))
    if draw(st.booleans()):
        headers["x-hook-secret"] = draw(st.sampled_from(["hs-123", ""]))
    coded = draw(st.booleans())
    sent = gzip.compress(body) if coded else body
    if coded:
        headers["content-encoding"] = "gzip"
    signature = draw(st.sampled_from(["none", "right", "wrong"]))
    if signature != "none":
        signed = sent if signature == "right" else b"other"
        headers["ms-signature"] = ms_signature(LEARN_SECRET, signed)
    return {
        "source": draw(
            st.sampled_from(["elucidat", "digitalchalk", "fellow", "learn365", "strigo", "nope"])
        ),
        "method": draw(st.sampled_from(["POST", "POST", "PUT", "GET", "DELETE"])),
        "headers": headers,
        "sent": sent,
    }


def _over_http(
    port: int, table: RouteTable, sample: dict[str, Any], ctype: str
) -> tuple[int, list[Any]]:
    source = table.sources.get(sample["source"])
    path = f"/hooks/{sample['source']}"
    if source is not None and source.token is not None:
        path += f"/{source.token.reveal()}"
    headers = {**sample["headers"], "content-type": ctype} if ctype else sample["headers"]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(
            sample["method"], f"{path}?echo={SAMPLE_ECHO}", body=sample["sent"], headers=headers
        )
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    if response.status != 202:
        return response.status, []
    return 202, [(e["type"], e["targets"]) for e in orjson.loads(payload)["events"]]


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sample=sample_requests())
def test_the_dry_run_and_the_handler_agree(
    served: int, table: RouteTable, sample: dict[str, Any]
) -> None:
    source = table.sources.get(sample["source"])
    ctype = ""
    if source is not None:
        ctype = sample["headers"].get("content-type") or default_content_type(
            source, sample["sent"]
        )
    run = dry_run(
        table, sample["source"], sample["sent"], sample["headers"], ctype or None, sample["method"]
    )
    status, events = _over_http(served, table, sample, ctype)
    event(f"status {status}")
    assert status == run.status, (run.message, sample)
    if status == 202:
        assert events == [(e.type, list(e.targets)) for e in run.events]


def test_a_bad_head_is_refused_by_both_before_any_body() -> None:
    """The dry run's head refusals are the handler's: a wrong method never parses the body."""
    table = parse_routes(ROUTES_TOML, "routes.toml", ENV)
    run = dry_run(table, "strigo", b"{broken", {"content-type": JSON}, None, "PUT")
    assert (run.status, run.message) == (405, "source 'strigo' takes POST, not PUT")
