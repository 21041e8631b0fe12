"""Fixtures shared by several test modules (registered for all of them in tests/conftest.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
import redis
import structlog

from relay.config.model import RouteTable
from relay.config.settings import Settings
from relay.core.metrics import WorkerMetrics
from tests.support.fellow_api import FellowApiServer
from tests.support.targets import TargetServer
from worker.context import build_context, configure
from worker.runtime import shutdown_runtime

#: `use_routes(routes, metrics=None)`: run the delivery job in this process with these routes.
UseRoutes = Callable[..., None]


@pytest.fixture
def targets() -> Iterator[TargetServer]:
    """Loopback HTTP targets that answer as their path says (tests/support/targets.py)."""
    with TargetServer() as server:
        yield server


@pytest.fixture
def fellow_api() -> Iterator[FellowApiServer]:
    """A fake Fellow Digitals API on loopback (tests/support/fellow_api.py)."""
    with FellowApiServer() as server:
        yield server


@pytest.fixture
def use_routes(redis_client: redis.Redis, redis_url: str) -> Iterator[UseRoutes]:
    """Configure the worker's context in this process; torn down (and its runtime) after."""

    def install(routes: RouteTable, metrics: WorkerMetrics | None = None) -> None:
        configure(build_context(Settings(redis_url=redis_url), routes, redis_client, metrics))

    yield install
    configure(None)
    shutdown_runtime(2.0)


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Put the test process's logging back after a test whose command configured its own.

    A command configures logging onto the test's captured stderr, which is closed after it: left
    in place, later tests of the same run would log into a closed file.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)
