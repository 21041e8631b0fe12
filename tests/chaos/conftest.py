"""Fixtures of the chaos suite: a private redis-server with AOF and `appendfsync always`, a seed."""

from __future__ import annotations

import os
import random

import pytest

from tests.support.redis_server import RedisServer


@pytest.fixture
def chaos_redis(make_redis: type[RedisServer]) -> RedisServer:
    """A private redis-server that persists every write before answering (AOF, fsync always)."""
    server = make_redis(appendonly=True, fsync="always")
    server.start()
    return server


@pytest.fixture
def chaos_seed() -> int:
    """The run's random seed (CHAOS_SEED to repeat one); printed with the figures."""
    raw = os.environ.get("CHAOS_SEED")
    return int(raw) if raw else random.SystemRandom().randrange(1, 1_000_000)
