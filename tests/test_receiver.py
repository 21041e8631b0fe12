"""The receiver over real HTTP on loopback, against a real redis-server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
import redis
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from relay.config.loading import parse_routes
from relay.config.settings import Settings
from relay.core.signatures import ms_signature
from relay.receiver.app import create_app
from relay.receiver.state import ROUTES, WRITER
from relay.store import keys
from relay.store.queue import KICKS_ENOUGH
from tests.support.raw_http import RawConnection, RawResponse, http_request
from tests.support.receiver import receiver_server
from tests.support.redis_server import free_port
from tests.support.stored import due, indexed, kicks, stored_event

FELLOW_TOKEN = "fellow-token-0123456789abcdef"
LEARN_SECRET = "123456789012345678901234567890123456789012345678"
ENV = {"FELLOW_TOKEN": FELLOW_TOKEN, "LEARN_SECRET": LEARN_SECRET}

ROUTES_TOML = """
[sources.fellow]
kind = "form"
token_env = "FELLOW_TOKEN"

[sources.chalk]
kind = "json"
max_body = "1KiB"

[sources.postonly]
kind = "json"
methods = ["POST"]

[sources.nested]
kind = "json"
event = "data.kind"
dedupe = { key = ["body:id"], window = "1h" }

[sources.strigo]
kind = "resthooks"

[sources.learn365]
kind = "aspnet"
secret_env = "LEARN_SECRET"

[targets.crm]
url = "http://127.0.0.1:9/crm"

[targets.analytics]
url = "http://127.0.0.1:9/analytics"

[[routes]]
source = "fellow"
events = ["COURSEMEMBER_*"]
targets = ["crm", "analytics"]

[[routes]]
source = "chalk"
events = ["element_published"]
targets = ["crm"]

[[routes]]
source = "postonly"
targets = ["crm"]

[[routes]]
source = "nested"
targets = ["crm"]

[[routes]]
source = "strigo"
events = ["enrollment.*"]
targets = ["analytics"]

[[routes]]
source = "learn365"
events = ["a1"]
targets = ["crm"]
"""

# Microsoft's own ms-signature test vector (see PROVIDERS.md): two notifications, CRLF lines.
MS_BODY = (
    b'{\r\n  "Id": "1234567890",\r\n  "Attempt": 1,\r\n  "Properties": {\r\n    "p1": "pv1"\r\n'
    b'  },\r\n  "Notifications": [\r\n    {\r\n      "Action": "a1",\r\n      "d1": "dv1"\r\n'
    b'    },\r\n    {\r\n      "Action": "a1",\r\n      "d2": "http://localhost"\r\n    }\r\n'
    b"  ]\r\n}"
)
MS_SIGNATURE = "sha256=DCDEB62502988CDEDE464AF6A97566D61288C446CFC46F74F341E11173FF30A1"

FELLOW = f"/hooks/fellow/{FELLOW_TOKEN}"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}
JSON_HEADER = (("Content-Type", "application/json"),)

MakeClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
def make_client(aiohttp_client: Any, redis_url: str) -> MakeClient:
    """A test client on a real loopback server for the receiver app."""

    async def make(url: str = redis_url, intake_timeout: float = 3.0) -> Any:
        routes = parse_routes(ROUTES_TOML, "routes.toml", ENV)
        settings = Settings(redis_url=url, intake_timeout=intake_timeout)
        return await aiohttp_client(await receiver_server(create_app(settings, routes)))

    return make


# --- 202: durable intake --------------------------------------------------------------------


async def test_accepted_event_is_durable_when_202_arrives(
    make_client: MakeClient, redis_client: redis.Redis
) -> None:
    client = await make_client()
    body = b"courseId=12&memberId=7&event=COURSEMEMBER_CREATED&note=caf%C3%A9+%26+more"
    resp = await client.post(FELLOW, data=body, headers={**FORM, "X-Custom": "kept"})
    assert resp.status == 202
    reply = await resp.json()
    event_id = reply["id"]
    assert reply["duplicate"] is False
    assert reply["events"] == [
        {"id": event_id, "type": "COURSEMEMBER_CREATED", "targets": ["crm", "analytics"]}
    ]
    # Everything below was written before the 202 was sent: no waiting, no polling.
    event = stored_event(redis_client, event_id)
    assert event.body == body
    assert event.source == "fellow"
    assert event.type == "COURSEMEMBER_CREATED"
    assert event.content_type == "application/x-www-form-urlencoded"
    assert event.method == "POST"
    assert event.targets == ("crm", "analytics")
    assert ("x-custom", "kept") in event.headers
    raw = redis_client.hgetall(keys.event_key(event_id))
    assert raw[b"s:crm"] == b"pending"
    assert raw[b"n:crm"] == b"0"
    assert raw[b"s:analytics"] == b"pending"
    assert raw[b"n:analytics"] == b"0"
    assert 0 < redis_client.ttl(keys.event_key(event_id)) <= Settings().retention
    assert event_id in indexed(redis_client)
    assert redis_client.zscore(keys.UNROUTED, event_id) is None
    assert redis_client.hget(keys.source_stats_key("fellow"), "received") == b"1"
    # Due at once for each routed target, and one kick for the workers.
    assert due(redis_client, "crm") == {event_id: event.received_at}
    assert due(redis_client, "analytics") == {event_id: event.received_at}
    assert redis_client.smembers(keys.DUE_TARGETS) == {b"crm", b"analytics"}
    assert kicks(redis_client) == 1


async def test_put_is_accepted_and_recorded_as_put(
    make_client: MakeClient, redis_client: redis.Redis
) -> None:
    client = await make_client()
    body = b'{"event": "element_published", "id": 5}'
    resp = await client.put("/hooks/chalk", data=body, headers=JSON)
    assert resp.status == 202
    event = stored_event(redis_client, (await resp.json())["id"])
    assert event.method == "PUT"
    assert event.body == body


async def test_unrouted_event_is_acknowledged_and_recorded(
    make_client: MakeClient, redis_client: redis.Redis
) -> None:
    client = await make_client()
    resp = await client.post(FELLOW, data=b"event=SOMETHING_ELSE&memberId=1", headers=FORM)
    assert resp.status == 202
    reply = await resp.json()
    assert reply["events"][0]["targets"] == []
    assert redis_client.zscore(keys.UNROUTED, reply["id"]) is not None
    assert stored_event(redis_client, reply["id"]).targets == ()
    assert kicks(redis_client) == 0
    assert redis_client.exists(keys.DUE_TARGETS) == 0  # due for no target
    assert redis_client.hget(keys.source_stats_key("fellow"), "unrouted") == b"1"


async def test_request_without_event_type_is_unrouted_not_an_error(
    make_client: MakeClient, redis_client: redis.Redis
) -> None:
    client = await make_client()
    resp = await client.post("/hooks/chalk", data=b'{"no_event": true}', headers=JSON)
    assert resp.status == 202
    reply = await resp.json()
    assert reply["events"][0]["type"] is None
    assert redis_client.zscore(keys.UNROUTED, reply["id"]) is not None


async def test_nested_event_path(make_client: MakeClient, redis_client: redis.Redis) -> None:
    client = await make_client()
    body = b'{"id": "n-1", "data": {"kind": "thing.done"}}'
    resp = await client.post("/hooks/nested", data=body, headers=JSON)
    assert resp.status == 202
    assert (await resp.json())["events"][0]["type"] == "thing.done"


async def test_concurrent_requests_are_all_durable_and_batched(
    make_client: MakeClient, redis_client: redis.Redis
) -> None:
    client = await make_client()
    bodies = [f'{{"event": "element_published", "n": {i}}}'.encode() for i in range(40)]
    resps = await asyncio.gather(
        *(client.post("/hooks/chalk", data=b, headers=JSON) for b in bodies)
    )
    assert [r.status for r in resps] == [202] * 40
    ids = [(await r.json())["id"] for r in resps]
    for event_id, body in zip(ids, bodies, strict=True):
        assert stored_event(redis_client, event_id).body == body
    # Every event is due for its target, at its receive time.
    assert due(redis_client, "crm") == {i: stored_event(redis_client, i).received_at for i in ids}
    writer = client.app[WRITER]
    assert writer.events == 40
    # One kick per committed batch until KICKS_ENOUGH wait (no worker runs here); then none.
    assert kicks(redis_client) == min(writer.batches, KICKS_ENOUGH)
    # Each event counted once: a batch committed twice would count it again.
    assert redis_client.hget(keys.source_stats_key("chalk"), "received") == b"40"


def _keep_alive_exchanges(port: int) -> list[RawResponse | None]:
    """On one connection: 40 pipelined POSTs in one write (more than aiohttp's queue of
    parsed requests holds), a body sent in two pieces, a body that is not JSON (400), and one
    more POST after it; the answers in order."""
    conn = RawConnection(port)
    try:
        pipelined = b"".join(
            http_request(
                "POST", "/hooks/chalk", JSON_HEADER, b'{"event": "element_published", "n": %d}' % i
            )
            for i in range(40)
        )
        conn.send(pipelined)
        answers = [conn.read_response() for _ in range(40)]
        whole = http_request("POST", "/hooks/chalk", JSON_HEADER, b'{"event": "element_published"}')
        head, body = whole.split(b"\r\n\r\n", 1)
        conn.send(head + b"\r\n\r\n" + body[:10])
        time.sleep(0.05)
        conn.send(body[10:])
        answers.append(conn.read_response())
        conn.send(http_request("POST", "/hooks/chalk", JSON_HEADER, b"{not json"))
        answers.append(conn.read_response())
        conn.send(
            http_request("POST", "/hooks/chalk", JSON_HEADER, b'{"event": "element_published"}')
        )
        answers.append(conn.read_response())
        return answers
    finally:
        conn.close()


async def test_pipelined_and_piecemeal_bodies_on_one_connection(
    make_client: MakeClient, redis_client: redis.Redis
) -> None:
    # The body of a request that has all arrived is taken from aiohttp's buffer directly
    # (relay.receiver.hook.read_arrived): the connection must go on as after a read.
    client = await make_client()
    assert client.port is not None
    answers = await asyncio.to_thread(_keep_alive_exchanges, client.port)
    assert [a.status if a else None for a in answers] == [202] * 41 + [400, 202]
    assert not any(a.closes for a in answers if a)
    ids = [orjson.loads(a.body)["id"] for a in answers if a and a.status == 202]
    assert len(set(ids)) == 42
    for n, event_id in enumerate(ids[:40]):
        assert (
            stored_event(redis_client, event_id).body
            == b'{"event": "element_published", "n": %d}' % n
        )
    assert stored_event(redis_client, ids[40]).body == b'{"event": "element_published"}'
    assert redis_client.hget(keys.source_stats_key("chalk"), "received") == b"42"


# --- ASP.NET WebHooks (Learn365) -------------------------------------------------------------


async def test_aspnet_known_vector_is_split_per_notification(
    make_client: MakeClient, redis_client: redis.Redis
) -> None:
    client = await make_client()
    headers = {"Content-Type": "application/json; charset=utf-8", "ms-signature": MS_SIGNATURE}
    resp = await client.post("/hooks/learn365", data=MS_BODY, headers=headers)
    assert resp.status == 202
    reply = await resp.json()
    parent = reply["id"]
    assert [e["id"] for e in reply["events"]] == [f"{parent}-0", f"{parent}-1"]
    assert [e["type"] for e in reply["events"]] == ["a1", "a1"]
    for index, entry in enumerate(reply["events"]):
        event = stored_event(redis_client, entry["id"])
        doc = orjson.loads(event.body)
        assert doc["Id"] == "1234567890"
        assert doc["Notifications"] == [json.loads(MS_BODY)["Notifications"][index]]
        # The provider's signature covers the whole original body, not this part of it.
        assert "ms-signature" not in dict(event.headers)
    assert redis_client.exists(keys.event_key(parent)) == 0


async def test_aspnet_single_notification_keeps_body_and_signature(
    make_client: MakeClient, redis_client: redis.Redis
) -> None:
    client = await make_client()
    body = b'{"Id": "abc", "Attempt": 1, "Notifications": [{"Action": "a1", "x": 1}]}'
    signature = ms_signature(LEARN_SECRET, body).lower()  # either hex case is accepted
    headers = {**JSON, "ms-signature": signature}
    resp = await client.post("/hooks/learn365", data=body, headers=headers)
    assert resp.status == 202
    event = stored_event(redis_client, (await resp.json())["id"])
    assert event.body == body
    assert dict(event.headers)["ms-signature"] == signature


@pytest.mark.parametrize(
    ("signature", "status"),
    [
        (None, 400),
        ("sha256=nothex", 400),
        ("md5=" + "0" * 64, 400),
        ("sha256=" + "0" * 64, 401),
    ],
)
async def test_aspnet_signature_problems(
    make_client: MakeClient, redis_client: redis.Redis, signature: str | None, status: int
) -> None:
    client = await make_client()
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if signature is not None:
        headers["ms-signature"] = signature
    resp = await client.post("/hooks/learn365", data=MS_BODY, headers=headers)
    assert resp.status == status
    assert (await resp.json())["status"] == status
    assert redis_client.dbsize() == 0


async def test_aspnet_echo_handshake(make_client: MakeClient, redis_client: redis.Redis) -> None:
    client = await make_client()
    echo = "0123456789abcdef0123456789ABCDEF"
    resp = await client.get("/hooks/learn365", params={"echo": echo})
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    assert await resp.read() == echo.encode()
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize("params", [{}, {"echo": "x" * 257}])
async def test_aspnet_echo_missing_or_too_long_is_400(
    make_client: MakeClient, params: dict[str, str]
) -> None:
    client = await make_client()
    resp = await client.get("/hooks/learn365", params=params)
    assert resp.status == 400
    assert "echo" in (await resp.json())["error"]


# --- REST Hooks (Strigo) ---------------------------------------------------------------------


async def test_resthooks_handshake_echoes_secret_and_records_nothing(
    make_client: MakeClient, redis_client: redis.Redis
) -> None:
    client = await make_client()
    resp = await client.post("/hooks/strigo", data=b"{}", headers={"X-Hook-Secret": "s3cr3t"})
    assert resp.status == 200
    assert resp.headers["X-Hook-Secret"] == "s3cr3t"
    assert redis_client.dbsize() == 0


async def test_resthooks_event_from_header(
    make_client: MakeClient, redis_client: redis.Redis
) -> None:
    client = await make_client()
    body = b'{"id": 1, "name": "enrollment"}'
    headers = {**JSON, "X-Event-Type": "enrollment.create"}
    resp = await client.post("/hooks/strigo", data=body, headers=headers)
    assert resp.status == 202
    reply = await resp.json()
    assert reply["events"][0]["targets"] == ["analytics"]
    event = stored_event(redis_client, reply["id"])
    assert event.body == body
    assert dict(event.headers)["x-event-type"] == "enrollment.create"


# --- dedupe ----------------------------------------------------------------------------------


async def test_duplicate_is_acknowledged_and_marked(
    make_client: MakeClient, redis_client: redis.Redis
) -> None:
    client = await make_client()
    body = b'{"id": "same", "data": {"kind": "k"}}'
    first = await (await client.post("/hooks/nested", data=body, headers=JSON)).json()
    resp = await client.post("/hooks/nested", data=body, headers=JSON)
    assert resp.status == 202
    second = await resp.json()
    assert first["duplicate"] is False
    assert second["duplicate"] is True
    assert second["events"][0]["duplicate_of"] == first["id"]
    assert second["id"] != first["id"]
    assert redis_client.hget(keys.source_stats_key("nested"), "duplicates") == b"1"
    other = await client.post("/hooks/nested", data=b'{"id": "new"}', headers=JSON)
    assert (await other.json())["duplicate"] is False


async def test_aspnet_retry_with_same_id_is_a_duplicate(make_client: MakeClient) -> None:
    client = await make_client()
    replies = []
    for attempt in (1, 2):
        body = f'{{"Id": "x1", "Attempt": {attempt}, "Notifications": [{{"Action": "a1"}}]}}'
        raw = body.encode()
        headers = {**JSON, "ms-signature": ms_signature(LEARN_SECRET, raw)}
        resp = await client.post("/hooks/learn365", data=raw, headers=headers)
        assert resp.status == 202
        replies.append(await resp.json())
    assert [r["duplicate"] for r in replies] == [False, True]


# --- tokens and unknown sources --------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/hooks/fellow", 401),
        ("/hooks/fellow/wrong-token", 401),
        (f"/hooks/fellow/{FELLOW_TOKEN}x", 401),
        ("/hooks/nobody", 404),
        ("/hooks/chalk/some-token", 404),  # a token on a source without one: not revealed
        ("/hooks/fellow/a/b", 404),
        ("/nothing/here", 404),
    ],
)
async def test_token_and_path_errors(
    make_client: MakeClient, redis_client: redis.Redis, path: str, status: int
) -> None:
    client = await make_client()
    resp = await client.post(path, data=b"event=COURSEMEMBER_CREATED", headers=FORM)
    assert resp.status == status
    assert resp.content_type == "application/json"
    assert (await resp.json())["status"] == status
    assert redis_client.dbsize() == 0


async def test_unknown_source_and_tokenless_source_with_token_look_the_same(
    make_client: MakeClient,
) -> None:
    client = await make_client()
    unknown = await (await client.post("/hooks/nobody/tok", data=b"{}", headers=JSON)).json()
    hidden = await (await client.post("/hooks/chalk/tok", data=b"{}", headers=JSON)).json()
    assert unknown["error"].replace("nobody", "X") == hidden["error"].replace("chalk", "X")


# --- 405, 413, 415, 400 ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/hooks/chalk", "POST, PUT"),
        ("DELETE", "/hooks/chalk", "POST, PUT"),
        ("PUT", "/hooks/postonly", "POST"),
        ("PATCH", "/hooks/learn365", "POST, PUT, GET"),
    ],
)
async def test_wrong_method_is_405_with_allow(
    make_client: MakeClient, method: str, path: str, allow: str
) -> None:
    client = await make_client()
    resp = await client.request(method, path, data=b"{}", headers=JSON)
    assert resp.status == 405
    assert resp.headers["Allow"] == allow
    assert (await resp.json())["status"] == 405


async def test_body_over_limit_by_content_length_is_413(
    make_client: MakeClient, redis_client: redis.Redis
) -> None:
    client = await make_client()
    body = b'{"event": "element_published", "pad": "' + b"x" * 1100 + b'"}'
    resp = await client.post("/hooks/chalk", data=body, headers=JSON)
    assert resp.status == 413
    assert redis_client.dbsize() == 0


async def test_streamed_body_over_limit_is_413(
    make_client: MakeClient, redis_client: redis.Redis
) -> None:
    client = await make_client()

    async def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 200  # chunked: no Content-Length to check up front

    resp = await client.post("/hooks/chalk", data=chunks(), headers=JSON)
    assert resp.status == 413
    assert redis_client.dbsize() == 0


async def test_streamed_body_under_limit_is_read_whole(
    make_client: MakeClient, redis_client: redis.Redis
) -> None:
    client = await make_client()
    parts = [b'{"event": "element_published", ', b'"a": "', b"y" * 300, b'"}']

    async def chunks() -> Any:
        for part in parts:
            yield part

    resp = await client.post("/hooks/chalk", data=chunks(), headers=JSON)
    assert resp.status == 202
    assert stored_event(redis_client, (await resp.json())["id"]).body == b"".join(parts)


async def test_default_limit_is_one_mebibyte(make_client: MakeClient) -> None:
    client = await make_client()
    pad = b"x" * (1024 * 1024)
    resp = await client.post("/hooks/postonly", data=b'{"e": "' + pad + b'"}', headers=JSON)
    assert resp.status == 413


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/hooks/chalk", b"event=element_published", FORM),
        (FELLOW, b'{"event": "COURSEMEMBER_CREATED"}', JSON),
        ("/hooks/chalk", b'{"event": "x"}', {"Content-Type": "text/plain"}),
        ("/hooks/learn365", MS_BODY, {"Content-Type": "text/xml", "ms-signature": MS_SIGNATURE}),
    ],
)
async def test_wrong_content_type_is_415(
    make_client: MakeClient, path: str, body: bytes, headers: dict[str, str]
) -> None:
    client = await make_client()
    resp = await client.post(path, data=body, headers=headers)
    assert resp.status == 415
    assert "takes" in (await resp.json())["error"]


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/hooks/chalk", b'{"event": ', JSON),
        ("/hooks/chalk", b"", JSON),
        ("/hooks/chalk", b"\xff\xfe{}", JSON),
        ("/hooks/postonly", b"[" * 5000 + b"]" * 5000, JSON),  # deeper than the parser goes
        (FELLOW, b"event=\xff\xfe&memberId=1", FORM),  # not UTF-8
        (FELLOW, b"&".join(b"f%d=1" % i for i in range(1001)), FORM),  # too many fields
        ("/hooks/learn365", b"[1]", {**JSON, "ms-signature": ms_signature(LEARN_SECRET, b"[1]")}),
    ],
)
async def test_hostile_inputs_are_400_not_500(
    make_client: MakeClient,
    redis_client: redis.Redis,
    path: str,
    body: bytes,
    headers: dict[str, str],
) -> None:
    client = await make_client()
    resp = await client.post(path, data=body, headers=headers)
    assert resp.status == 400
    assert (await resp.json())["status"] == 400
    assert redis_client.dbsize() == 0


async def test_deep_but_parseable_json_is_recorded_whole(
    make_client: MakeClient, redis_client: redis.Redis
) -> None:
    client = await make_client()
    body = b"[" * 600 + b"]" * 600
    resp = await client.post("/hooks/postonly", data=body, headers=JSON)
    assert resp.status == 202
    assert stored_event(redis_client, (await resp.json())["id"]).body == body


async def test_never_410_for_anything(make_client: MakeClient) -> None:
    client = await make_client()
    statuses = set()
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        for path in ("/hooks/chalk", "/hooks/nobody", "/hooks/fellow/x", "/x"):
            resp = await client.request(method, path, data=b"{}", headers=JSON)
            statuses.add(resp.status)
    assert 410 not in statuses
    assert 500 not in statuses


# --- health, logging -------------------------------------------------------------------------


async def test_healthz_and_readyz(make_client: MakeClient) -> None:
    client = await make_client()
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"


async def test_one_canonical_log_line_without_path_or_token(make_client: MakeClient) -> None:
    client = await make_client()
    with capture_logs() as logs:
        resp = await client.post(FELLOW, data=b"event=COURSEMEMBER_CREATED", headers=FORM)
        bad = await client.post("/hooks/fellow/not-the-token", data=b"", headers=FORM)
    reply = await resp.json()
    lines = [entry for entry in logs if entry["event"] == "request"]
    assert len(lines) == 2
    ok, refused = lines
    assert ok["source"] == "fellow"
    assert ok["method"] == "POST"
    assert ok["status"] == 202
    assert ok["event_id"] == reply["id"]
    assert ok["type"] == "COURSEMEMBER_CREATED"
    assert ok["bytes"] == len(b"event=COURSEMEMBER_CREATED")
    assert isinstance(ok["duration_ms"], float)
    assert refused["status"] == 401
    assert bad.status == 401
    text = repr(logs)
    assert FELLOW_TOKEN not in text
    assert "not-the-token" not in text
    assert "/hooks/" not in text


async def test_every_line_of_a_request_carries_its_event_id_and_no_other_request_does(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make_client()
    writer = client.app[WRITER]
    submit = writer.submit

    async def logging_submit(*args: Any, **kwargs: Any) -> Any:
        structlog.get_logger("test").info("inside the commit")
        return await submit(*args, **kwargs)

    monkeypatch.setattr(writer, "submit", logging_submit)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        first = await (await client.post(FELLOW, data=b"event=A", headers=FORM)).json()
        second = await (await client.post(FELLOW, data=b"event=B", headers=FORM)).json()
        refused = await client.post("/hooks/fellow/not-the-token", data=b"", headers=FORM)
    assert refused.status == 401
    inside = [entry.get("event_id") for entry in logs if entry["event"] == "inside the commit"]
    assert inside == [first["id"], second["id"]]
    requests = [entry.get("event_id") for entry in logs if entry["event"] == "request"]
    assert requests == [first["id"], second["id"], None]  # the refused one has none


async def test_routes_can_be_swapped_in_place(make_client: MakeClient) -> None:
    client = await make_client()
    holder = client.app[ROUTES]
    holder.table = parse_routes("[sources.only]\nkind = 'json'\n", "r.toml", {})
    assert (await client.post("/hooks/chalk", data=b"{}", headers=JSON)).status == 404
    assert (await client.post("/hooks/only", data=b"{}", headers=JSON)).status == 202


# --- Redis outages ---------------------------------------------------------------------------


async def test_redis_down_gives_503_then_recovers_by_itself(
    make_client: MakeClient, make_redis: Any
) -> None:
    server = make_redis()
    server.start()
    client = await make_client(url=server.url, intake_timeout=2.0)
    body = b'{"event": "element_published"}'
    assert (await client.post("/hooks/chalk", data=body, headers=JSON)).status == 202
    server.stop()
    with capture_logs() as logs:
        for _ in range(3):
            # A refused connection fails the batch at once; the bound is the intake timeout.
            resp = await asyncio.wait_for(
                client.post("/hooks/chalk", data=body, headers=JSON), timeout=30
            )
            assert resp.status == 503
            assert "retry" in (await resp.json())["error"]
        assert (await client.get("/readyz")).status == 503
        server.start()
        resp = await client.post("/hooks/chalk", data=body, headers=JSON)
        assert resp.status == 202
        event_id = (await resp.json())["id"]
    names = [entry["event"] for entry in logs]
    assert names.count("redis_unavailable") == 1  # one line per outage, not one per request
    assert names.count("redis_available") == 1
    check = redis.Redis.from_url(server.url)
    try:
        assert check.exists(keys.event_key(event_id)) == 1
    finally:
        check.close()
    assert (await client.get("/readyz")).status == 200


async def test_hung_redis_gives_503_at_the_intake_timeout(
    make_client: MakeClient, make_redis: Any
) -> None:
    server = make_redis()
    server.start()
    client = await make_client(url=server.url, intake_timeout=0.5)
    body = b'{"event": "element_published"}'
    assert (await client.post("/hooks/chalk", data=body, headers=JSON)).status == 202
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        resp = await asyncio.wait_for(
            client.post("/hooks/chalk", data=body, headers=JSON), timeout=30
        )
        assert resp.status == 503
        assert "0.5 s" in (await resp.json())["error"]
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    # The stalled commit ends (socket timeout or late reply); then intake works again.
    for _ in range(50):
        resp = await client.post("/hooks/chalk", data=body, headers=JSON)
        if resp.status == 202:
            break
        await asyncio.sleep(0.1)
    assert resp.status == 202


# --- the `relay serve` process ---------------------------------------------------------------


def _serve_env(tmp_path: Any, redis_url: str, routes: str) -> dict[str, str]:
    path = tmp_path / "routes.toml"
    path.write_text(routes)
    return {
        **os.environ,
        **ENV,
        "REDIS_URL": redis_url,
        "RELAY_ROUTES": str(path),
        "RELAY_LOG_FORMAT": "json",
    }


def test_serve_exits_2_listing_every_routes_problem(tmp_path: Any, redis_url: str) -> None:
    broken = "[sources.a]\nkind = 'nope'\n[[routes]]\nsource = 'b'\ntargets = ['c']\n"
    proc = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--port", "1"],
        env=_serve_env(tmp_path, redis_url, broken),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "kind" in proc.stderr
    assert "no source named 'b'" in proc.stderr


def test_serve_process_takes_an_event_and_stops_on_sigterm(
    tmp_path: Any, redis_url: str, redis_client: redis.Redis
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--port", str(port)],
        env=_serve_env(tmp_path, redis_url, ROUTES_TOML),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/hooks/chalk",
            data=b'{"event": "element_published"}',
            headers=JSON,
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 (fixed http URL)
            assert resp.status == 202
            event_id = json.loads(resp.read())["id"]
        assert redis_client.exists(keys.event_key(event_id)) == 1
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert "receiver_starting" in events
    assert "receiver_stopped" in events
    request_lines = [line for line in lines if line["event"] == "request"]
    assert [line["status"] for line in request_lines] == [202]
    assert all("/hooks" not in str(line) for line in lines)
