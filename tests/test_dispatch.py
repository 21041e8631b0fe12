"""relay.receiver.dispatch: /hooks requests past the router, answered as the router would."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from aiohttp.web_urldispatcher import UrlDispatcher
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs
from yarl import URL

from relay.config.loading import parse_routes
from relay.config.settings import Settings
from relay.receiver.app import create_app
from relay.receiver.dispatch import HOOK_PATH
from relay.receiver.hook import hook
from tests.support.receiver import receiver_server

TOKEN = "tok-en_0.9~x-0123456789"
ROUTES_TOML = """
[sources.chalk]
kind = "json"

[sources.fellow]
kind = "form"
token_env = "FELLOW_TOKEN"

[targets.crm]
url = "http://127.0.0.1:9/crm"

[[routes]]
source = "chalk"
targets = ["crm"]

[[routes]]
source = "fellow"
targets = ["crm"]
"""
ENV = {"FELLOW_TOKEN": TOKEN}
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

Client = TestClient[web.Request, web.Application]


def receiver() -> web.Application:
    return create_app(Settings(), parse_routes(ROUTES_TOML, "routes.toml", ENV))


def routed(app: web.Application, target: str) -> tuple[str, str | None] | None:
    """(source, token) the router gives a request target (as aiohttp's parser reads an
    origin-form target), or None when it does not route it to the hook."""
    path, _, query = target.partition("?")
    url = URL.build(path=path, query_string=query, encoded=True)
    request = make_mocked_request("POST", "/", app=app).clone(rel_url=url)
    match_info = asyncio.run(app.router.resolve(request))
    if match_info.handler is not hook:
        return None
    return match_info["source"], match_info.get("token")


_APP = receiver()
_PART = st.text(alphabet="abcAZ09._-~%2F?=&+:@!/", max_size=12)


@given(st.one_of(_PART.map(lambda p: "/hooks/" + p), _PART.map(lambda p: "/hooks" + p)))
def test_a_path_taken_past_the_router_is_routed_to_the_hook_with_the_same_parts(
    target: str,
) -> None:
    found = HOOK_PATH.fullmatch(target)
    if found is not None:
        assert routed(_APP, target) == (found[1], found[2])


@pytest.mark.parametrize(
    ("target", "parts"),
    [
        ("/hooks/chalk", ("chalk", None)),
        ("/hooks/chalk?x=1&y=/2", ("chalk", None)),
        (f"/hooks/fellow/{TOKEN}", ("fellow", TOKEN)),
        ("/hooks/v1.2_a-b/t", ("v1.2_a-b", "t")),
    ],
)
def test_the_plain_hook_paths_are_taken_past_the_router(
    target: str, parts: tuple[str, str | None]
) -> None:
    found = HOOK_PATH.fullmatch(target)
    assert found is not None
    assert (found[1], found[2]) == parts == routed(_APP, target)


@pytest.mark.parametrize(
    "target",
    [
        "/hooks/ch%61lk",  # escaped: the router unescapes it
        "/hooks/chalk/",  # no token: the router answers 404
        "/hooks/chalk/a/b",
        "/hooks/../hooks/chalk",
        "/hooks/.x",
        "/hooks/chalk/.",
        "/hooks/chalk#frag",
        "/hooks/chalk/a=b",  # a token of other characters: left to the router
        "/hooksx/chalk",
        "http://example.com/hooks/chalk",
        "/healthz",
    ],
)
def test_anything_else_goes_the_routers_way(target: str) -> None:
    assert HOOK_PATH.fullmatch(target) is None


@pytest.fixture
def resolves(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the receiver's router resolves, in order."""
    seen: list[str] = []
    resolve = UrlDispatcher.resolve

    async def counting(self: UrlDispatcher, request: web.Request) -> Any:
        seen.append(request.path)
        return await resolve(self, request)

    monkeypatch.setattr(UrlDispatcher, "resolve", counting)
    return seen


MakeClient = Callable[[], Awaitable[Client]]


@pytest.fixture
def make_client(aiohttp_client: Any, redis_url: str) -> MakeClient:
    async def make() -> Client:
        app = create_app(Settings(redis_url=redis_url), parse_routes(ROUTES_TOML, "r.toml", ENV))
        client: Client = await aiohttp_client(await receiver_server(app))
        return client

    return make


async def test_hooks_requests_skip_the_router_and_the_rest_do_not(
    make_client: MakeClient, resolves: list[str]
) -> None:
    client = await make_client()
    assert (await client.post("/hooks/chalk", data=b"{}", headers=JSON)).status == 202
    assert (await client.post(f"/hooks/fellow/{TOKEN}", data=b"a=1", headers=FORM)).status == 202
    assert (await client.post("/hooks/nobody", data=b"{}", headers=JSON)).status == 404
    assert resolves == []
    escaped = URL("/hooks/ch%61lk", encoded=True)  # as sent: the router unescapes it
    assert (await client.post(escaped, data=b"{}", headers=JSON)).status == 202
    expecting = {**JSON, "Expect": "100-continue"}
    assert (await client.post("/hooks/chalk", data=b"{}", headers=expecting)).status == 202
    assert (await client.get("/healthz")).status == 200
    assert resolves == ["/hooks/chalk", "/hooks/chalk", "/healthz"]


def _same(line: Mapping[str, Any]) -> dict[str, Any]:
    """A canonical log line without what differs from one request to the next."""
    return {k: v for k, v in line.items() if k not in ("duration_ms", "event_id")}


async def _answer(client: Client, path: str, body: bytes, headers: dict[str, str]) -> Any:
    with capture_logs() as logs:
        resp = await client.post(URL(path, encoded=True), data=body, headers=headers)
        reply = orjson.loads(await resp.read())
    lines = [_same(entry) for entry in logs if entry["event"] == "request"]
    reply.pop("id", None)
    for event in reply.get("events", ()):
        event.pop("id")
    content_type = resp.headers["Content-Type"]
    return resp.status, content_type, reply, lines


@pytest.mark.parametrize(
    ("fast", "routed_path", "body", "headers"),
    [
        ("/hooks/chalk", "/hooks/ch%61lk", b'{"event": "x"}', JSON),
        ("/hooks/chalk", "/hooks/chalk", b"not json", JSON),
        ("/hooks/chalk", "/hooks/chalk", b"a=1", FORM),
        ("/hooks/fellow/wrong", "/hooks/fellow/wr%6Fng", b"a=1", FORM),
        ("/hooks/fellow", "/hooks/fel%6Cow", b"a=1", FORM),
        ("/hooks/nobody", "/hooks/nob%6Fdy", b"{}", JSON),
    ],
)
async def test_a_request_past_the_router_is_answered_and_logged_as_a_routed_one(
    make_client: MakeClient, fast: str, routed_path: str, body: bytes, headers: dict[str, str]
) -> None:
    client = await make_client()
    past = await _answer(client, fast, body, headers)
    # An Expect header sends a request the router's way (100 Continue first), as does `%`.
    through = await _answer(client, routed_path, body, {**headers, "Expect": "100-continue"})
    escaped = await _answer(client, routed_path, body, headers)
    assert past == through == escaped
    status, _, reply, lines = past
    assert len(lines) == 1
    assert lines[0]["status"] == status
    assert status == 202 or reply["status"] == status
