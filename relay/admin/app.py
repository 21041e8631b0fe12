"""The admin listener's application: the management API under /api, the console at /.

`make_admin_app` builds it; `relay serve` (and through it `relay dev`) serves it on
RELAY_ADMIN_HOST:RELAY_ADMIN_PORT, a listener of its own, so the public intake port never serves
a management endpoint. The console (relay.admin.console, when installed) adds its routes here.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable

import redis
from aiohttp import web

from relay.admin.api import add_api_routes
from relay.admin.middleware import api_middleware
from relay.admin.state import REDIS, ROUTES, SETTINGS, TOKENS, RoutesSource
from relay.admin.tokens import TokenSet
from relay.config.model import RouteTable
from relay.config.settings import Settings
from relay.store import clients

#: The largest request body the admin listener reads (filters and reasons are small).
MAX_BODY = 64 * 1024

#: The console package; owned by the console, optional here so the API stands without it.
CONSOLE_MODULE = "relay.admin.console"


def _redis_client(
    settings: Settings, connection: redis.Redis | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        client = connection or clients.sync_client(settings.redis_url, clients.OPERATOR)
        app[REDIS] = client
        yield
        if connection is None:
            client.close()

    return context


def add_console(app: web.Application) -> bool:
    """Add the console's routes when relay.admin.console exists; whether it did."""
    try:
        console = importlib.import_module(CONSOLE_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != CONSOLE_MODULE:
            raise  # the console exists but something it imports is missing: say so
        return False
    add_routes = getattr(console, "add_console_routes", None)
    if add_routes is None:
        return False  # the console package is still being built
    add_routes(app)
    return True


def make_admin_app(
    settings: Settings,
    tokens: TokenSet,
    routes: RouteTable | RoutesSource,
    *,
    connection: redis.Redis | None = None,
    console: bool = True,
) -> web.Application:
    """The admin listener's app; `routes` is a table or a callable giving the current one."""
    app = web.Application(middlewares=[api_middleware], client_max_size=MAX_BODY)
    app[SETTINGS] = settings
    app[TOKENS] = tokens
    app[ROUTES] = routes if callable(routes) else (lambda: routes)
    app.cleanup_ctx.append(_redis_client(settings, connection))
    add_api_routes(app)
    if console:
        add_console(app)
    return app
