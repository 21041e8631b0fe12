"""Signing out of the console ends the session everywhere (aiohttp's test client, a real Redis):
a copy of the cookie is refused afterwards by pages, actions and the API, other sessions of the
same token go on, the revocation expires with the session, and Redis being away is never taken
as a valid session."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from relay.admin import parse_tokens
from relay.admin.console.session import CLOCK_SKEW, COOKIE, SESSION_SECONDS, Session
from relay.store import keys
from tests.support.console import TOKENS_ENV, WRITE_TOKEN, console_app, sign_in

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(aiohttp_client: Callable[..., AsyncIterator[Client]], redis_url: str) -> Client:
    """A test client of the admin app on the test Redis."""
    return await aiohttp_client(console_app(redis_url))  # type: ignore[no-any-return, misc]


def cookie_of(client: Client) -> str:
    """The session cookie's value in the client's jar (a copy another browser could hold)."""
    found = client.session.cookie_jar.filter_cookies(client.make_url("/")).get(COOKIE)
    assert found is not None, "the client is not signed in"
    assert found.value
    return found.value


def nonce_of(cookie: str) -> str:
    """The nonce a session cookie carries (`name|issued|nonce|mac`)."""
    return cookie.split("|")[2]


async def sign_out(client: Client, csrf: str) -> Any:
    """POST /sign-out with the session's CSRF token; the answer (not followed)."""
    answer = await client.post("/sign-out", data={"csrf": csrf}, allow_redirects=False)
    assert answer.status == 303
    assert answer.headers["Location"] == "/sign-in"
    cleared = [h for h in answer.headers.getall("Set-Cookie", []) if h.startswith(f"{COOKIE}=")]
    assert len(cleared) == 1
    assert "Max-Age=0" in cleared[0]
    return answer


async def status_with(client: Client, method: str, path: str, cookie: str, **kw: Any) -> int:
    """The status of a request carrying `cookie` as the session (nothing else of the jar's)."""
    client.session.cookie_jar.clear()
    answer = await client.request(
        method, path, cookies={COOKIE: cookie}, allow_redirects=False, **kw
    )
    return answer.status


async def test_a_copy_of_the_cookie_is_refused_after_sign_out(
    client: Client, redis_client: redis.Redis
) -> None:
    csrf = await sign_in(client, WRITE_TOKEN)
    copy = cookie_of(client)
    # The copy works before: the refusals below are the sign-out's doing.
    assert await status_with(client, "GET", "/", copy) == 200
    assert await status_with(client, "GET", "/api/v1/status", copy) == 200
    client.session.cookie_jar.update_cookies({COOKIE: copy})
    with capture_logs() as logs:
        await sign_out(client, csrf)
    # A page: to the sign-in form, as for an expired session.
    client.session.cookie_jar.clear()
    page = await client.get("/targets", cookies={COOKIE: copy}, allow_redirects=False)
    assert page.status == 303
    assert page.headers["Location"] == "/sign-in?next=%2Ftargets"
    # The sign-in form is shown to it (no loop back to the page).
    assert await status_with(client, "GET", "/sign-in?next=/targets", copy) == 200
    # An action: 401, and nothing done.
    pause = {"data": {"csrf": csrf, "reason": "x"}}
    assert await status_with(client, "POST", "/targets/crm/pause", copy, **pause) == 401
    # The API, reading and writing with the CSRF header: 401 in the API's shape.
    client.session.cookie_jar.clear()
    api = await client.get("/api/v1/status", cookies={COOKIE: copy})
    assert api.status == 401
    assert (await api.json())["error"]["code"] == "unauthorized"
    write = {"json": {"reason": "x"}, "headers": {"X-CSRF-Token": csrf}}
    assert await status_with(client, "POST", "/api/v1/targets/crm/pause", copy, **write) == 401
    assert redis_client.get(keys.paused_key("crm")) is None
    # One audit line of the revocation, naming the token, never its value or the cookie.
    revoked = [line for line in logs if line["event"] == "session_revoked"]
    assert [line["principal"] for line in revoked] == ["alice"]
    assert WRITE_TOKEN not in repr(logs)
    assert copy not in repr(logs)


async def test_another_session_of_the_same_token_goes_on(client: Client) -> None:
    await sign_in(client, WRITE_TOKEN)
    other = cookie_of(client)
    csrf = await sign_in(client, WRITE_TOKEN)  # a second session of alice (another browser)
    signed_out = cookie_of(client)
    assert nonce_of(other) != nonce_of(signed_out)
    await sign_out(client, csrf)
    assert await status_with(client, "GET", "/", signed_out) == 303
    assert await status_with(client, "GET", "/", other) == 200
    assert await status_with(client, "GET", "/api/v1/status", other) == 200


async def test_the_revocation_expires_when_the_session_would_have(
    client: Client, redis_client: redis.Redis
) -> None:
    # A session that began an hour ago: its revocation is kept for the 11 hours left (and the
    # clock skew), not for a whole session's length.
    tokens = parse_tokens(TOKENS_ENV)
    session = Session(name="alice", issued=int(time.time()) - 3600, nonce="n" * 22)
    cookie = session.cookie_value(tokens.sign)
    assert cookie is not None
    client.session.cookie_jar.update_cookies({COOKIE: cookie})
    assert (await client.get("/", allow_redirects=False)).status == 200
    await sign_out(client, session.csrf_token(tokens.sign))
    key = keys.revoked_session_key(session.nonce)
    assert redis_client.get(key) == b"alice"  # the token's name, never its value
    left = session.expires() - time.time()
    ttl = redis_client.ttl(key)
    assert left < ttl <= left + CLOCK_SKEW + 1
    assert ttl < SESSION_SECONDS
    assert await status_with(client, "GET", "/", cookie) == 303


async def test_signing_out_a_copy_again_keeps_the_first_revocation(
    client: Client, redis_client: redis.Redis
) -> None:
    csrf = await sign_in(client, WRITE_TOKEN)
    copy = cookie_of(client)
    await sign_out(client, csrf)
    key = keys.revoked_session_key(nonce_of(copy))
    redis_client.expire(key, 1000)  # marks the first revocation's expiry
    client.session.cookie_jar.update_cookies({COOKIE: copy})
    with capture_logs() as logs:
        await sign_out(client, csrf)
    assert redis_client.ttl(key) <= 1000
    assert [line["event"] for line in logs] == ["console_signed_out"]


async def signed_in_then_redis_gone(
    aiohttp_client: Callable[..., AsyncIterator[Client]], make_redis: Any
) -> tuple[Any, Client, str, str]:
    """A console signed in (its Redis server, client, CSRF token and a copy of the cookie) whose
    Redis then stops."""
    server = make_redis()
    server.start()
    client: Client = await aiohttp_client(console_app(server.url))  # type: ignore[misc]
    csrf = await sign_in(client, WRITE_TOKEN)
    copy = cookie_of(client)
    server.stop()
    return server, client, csrf, copy


async def test_redis_away_at_the_check_is_a_503_never_access(
    aiohttp_client: Callable[..., AsyncIterator[Client]], make_redis: Any
) -> None:
    _, client, csrf, copy = await signed_in_then_redis_gone(aiohttp_client, make_redis)
    with capture_logs() as logs:
        page = await client.get("/", cookies={COOKIE: copy}, allow_redirects=False)
        api = await client.get("/api/v1/events?limit=5", cookies={COOKIE: copy})
        action = await client.post(
            "/targets/crm/pause",
            data={"csrf": csrf, "reason": "x"},
            cookies={COOKIE: copy},
            allow_redirects=False,
        )
    assert page.status == 503
    assert "Redis did not answer" in await page.text()
    assert api.status == 503
    assert (await api.json())["error"]["code"] == "redis_unavailable"
    assert action.status == 503
    assert "nothing was changed" in await action.text()
    assert {line["event"] for line in logs} >= {"console_unavailable", "admin_redis_error"}
    # The sign-in form needs no Redis: it is shown rather than a redirect or an error.
    form = await client.get("/sign-in", cookies={COOKIE: copy}, allow_redirects=False)
    assert form.status == 200


async def test_redis_away_at_sign_out_clears_the_cookie_and_says_the_copies_live_on(
    aiohttp_client: Callable[..., AsyncIterator[Client]], make_redis: Any
) -> None:
    server, client, csrf, copy = await signed_in_then_redis_gone(aiohttp_client, make_redis)
    with capture_logs() as logs:
        await sign_out(client, csrf)
    assert [line["principal"] for line in logs if line["event"] == "session_not_revoked"] == [
        "alice"
    ]
    assert not [line for line in logs if line["event"] == "session_revoked"]
    form = await client.get("/sign-in")
    assert form.status == 200
    text = await form.text()
    assert "Signed out in this browser only" in text
    assert "stays valid until" in text
    # The notice is shown once.
    assert "Signed out in this browser only" not in await (await client.get("/sign-in")).text()
    # What the notice says is so: once Redis is back, the copy is still a session.
    server.start()
    assert await status_with(client, "GET", "/", copy) == 200
