"""What the admin application holds: typed keys, no module globals."""

from __future__ import annotations

from collections.abc import Callable

import redis
from aiohttp import web

from relay.admin.tokens import TokenSet
from relay.config.model import RouteTable
from relay.config.settings import Settings

#: The current route table (the receiver's, when both run in one process, so reloads show).
RoutesSource = Callable[[], RouteTable]

SETTINGS = web.AppKey("admin_settings", Settings)
TOKENS = web.AppKey("admin_tokens", TokenSet)
REDIS = web.AppKey("admin_redis", redis.Redis)
ROUTES: web.AppKey[RoutesSource] = web.AppKey("admin_routes")
