"""The console's test helpers: an admin app with two tokens, signing in, reading CSRF tokens."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

import redis
from aiohttp import web
from aiohttp.test_utils import TestClient

from relay.admin import make_admin_app, parse_tokens
from relay.config.loading import parse_routes
from relay.config.settings import Settings

WRITE_TOKEN = "w" * 20 + "rite-token-0123456789"
READ_TOKEN = "r" * 20 + "ead-token-01234567890"
TOKENS_ENV = f"alice:write:{WRITE_TOKEN} ci:read:{READ_TOKEN}"

ROUTES_TOML = """
[sources.shop]
kind = "json"

[sources.fellow]
kind = "form"
event = "event"

[targets.crm]
url = "http://127.0.0.1:9/crm"

[targets.analytics]
url = "http://127.0.0.1:9/analytics"

[targets.billing]
url = "http://127.0.0.1:9/billing"

[[routes]]
source = "shop"
targets = ["crm", "analytics", "billing"]

[[routes]]
source = "fellow"
targets = ["crm"]
"""

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def console_app(
    redis_url: str,
    connection: redis.Redis | None = None,
    *,
    routes_toml: str = ROUTES_TOML,
    env: Mapping[str, str] | None = None,
) -> web.Application:
    """The admin app (API and console) with a write token `alice` and a read token `ci`."""
    settings = Settings.from_env(
        {"REDIS_URL": redis_url, "RELAY_ADMIN_TOKENS": TOKENS_ENV, **(env or {})}
    )
    routes = parse_routes(routes_toml, "routes.toml", {})
    return make_admin_app(settings, parse_tokens(TOKENS_ENV), routes, connection=connection)


def csrf_of(html: str) -> str:
    """The first CSRF token a page's forms carry."""
    found = _CSRF.search(html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


async def sign_in(client: TestClient[web.Request, web.Application], token: str) -> str:
    """Sign the client's cookie jar in with `token` (afresh); the session's CSRF token."""
    client.session.cookie_jar.clear()
    form = await (await client.get("/sign-in")).text()
    answer = await client.post(
        "/sign-in",
        data={"token": token, "csrf": csrf_of(form), "next": "/"},
        allow_redirects=False,
    )
    assert answer.status == 303, await answer.text()
    page = await (await client.get("/")).text()
    return csrf_of(page)


def now() -> float:
    """The wall clock (a name the tests read well)."""
    return time.time()
