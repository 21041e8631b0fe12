"""What the receiver's application and its requests hold: typed keys, no module globals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from aiohttp import web
from prometheus_client import CollectorRegistry

from relay.config.model import RouteTable
from relay.config.settings import Settings
from relay.core.metrics import ReceiverMetrics
from relay.receiver.intake import IntakeWriter
from relay.receiver.spool.drain import SpoolDrainer
from relay.receiver.spool.spool import Spool


@dataclass
class RoutesHolder:
    """The current route table; mutable on purpose so a reload can swap it in place.

    A request reads `table` once and decides with that snapshot (relay.receiver.accept).
    """

    table: RouteTable


SETTINGS = web.AppKey("settings", Settings)
ROUTES = web.AppKey("routes", RoutesHolder)
REDIS = web.AppKey("redis", redis.Redis)
WRITER = web.AppKey("writer", IntakeWriter)
SPOOL = web.AppKey("spool", Spool)
DRAINER = web.AppKey("spool_drainer", SpoolDrainer)
METRICS = web.AppKey("metrics", ReceiverMetrics)
#: What GET /metrics renders: this process's registry, or the sum over `--processes N`.
SCRAPE = web.AppKey("scrape", CollectorRegistry)

#: Per-request facts for the canonical log line, filled in by the handler.
FACTS = web.RequestKey("facts", dict[str, Any])
