"""The admin listener in tests: tokens, a routes table, and the app served on loopback."""

from __future__ import annotations

from aiohttp import web

from relay.admin import make_admin_app, parse_tokens
from relay.admin.tokens import TokenSet
from relay.config.loading import parse_routes
from relay.config.model import RouteTable
from relay.config.settings import Settings
from tests.support.loopback import LoopbackServer

#: A write token and a read token (at least 32 characters, as relay.admin.tokens wants).
WRITE_TOKEN = "w" * 20 + "-write-token-0123456789"
READ_TOKEN = "r" * 20 + "-read-token-0123456789"
TOKENS_ENV = f"alice:write:{WRITE_TOKEN} ci:read:{READ_TOKEN}"

WRITE = {"Authorization": f"Bearer {WRITE_TOKEN}"}
READ = {"Authorization": f"Bearer {READ_TOKEN}"}

ADMIN_ROUTES = """
[sources.fellow]
kind = "form"
event = "event"
token_env = "FELLOW_TOKEN"

[sources.shop]
kind = "header"

[targets.crm]
url = "http://127.0.0.1:9/crm"
signing_secret_env = "CRM_WHSEC"
headers = { "x-api-key" = "${CRM_KEY}" }

[targets.analytics]
url = "http://127.0.0.1:9/analytics"

[[routes]]
source = "fellow"
events = ["COURSEMEMBER_*"]
targets = ["crm", "analytics"]

[[routes]]
source = "shop"
events = ["*"]
targets = ["crm"]
"""

#: The secret values the routes above take from the environment: never in an answer.
ROUTE_SECRETS = {
    "FELLOW_TOKEN": "fellow-path-token-0123456789",
    "CRM_WHSEC": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "CRM_KEY": "crm-api-key-value-0123456789",
}


def admin_routes() -> RouteTable:
    """The routes table of ADMIN_ROUTES with its secrets set."""
    return parse_routes(ADMIN_ROUTES, "routes.toml", ROUTE_SECRETS)


def admin_tokens() -> TokenSet:
    """The tokens of TOKENS_ENV."""
    return parse_tokens(TOKENS_ENV)


def admin_app(redis_url: str, **settings: object) -> web.Application:
    """The admin app on `redis_url` with the test tokens and routes (no console)."""
    return make_admin_app(
        Settings(redis_url=redis_url, **settings),  # type: ignore[arg-type]
        admin_tokens(),
        admin_routes(),
        console=False,
    )


class AdminServer(LoopbackServer):
    """The admin app served on a free loopback port (for Schemathesis, which needs a URL)."""

    def __init__(self, redis_url: str) -> None:
        super().__init__()
        self.redis_url = redis_url

    @property
    def url(self) -> str:
        """The base URL."""
        return f"http://127.0.0.1:{self.port}"

    def build_app(self) -> web.Application:
        return admin_app(self.redis_url)
