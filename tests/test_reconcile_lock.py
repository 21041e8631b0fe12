"""The pass lock's heartbeat: a pass outlasting its TTL keeps the lock; a lost lock commits nothing.

The fake Fellow API answers every request after `hang` seconds (its "timeout" fault, with a
pass timeout longer than that), so a pass lasts several lock TTLs; a second pass tried meanwhile
must find the lock held. Without the heartbeat the lock would expire after one TTL and the
second pass would run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import redis
from structlog.testing import capture_logs

from relay.config.loading import parse_routes
from relay.config.model import RouteTable
from relay.store import keys
from relay.store.reconcile import read_pass
from relay.store.reconcile_snapshot import read_snapshot
from tests.support.fellow_api import KEY, FellowApiServer
from tests.support.processes import wait_until
from tests.support.stored import indexed
from worker.fellow.lock import PassLock
from worker.fellow.reconcile import PassBusy, PassResult, run_pass

pytestmark = pytest.mark.needs_redis_server

ROUTES = """
[sources.fellow]
kind = "form"
[sources.fellow.reconcile]
api = "{api}"
api_key_env = "FELLOW_API_KEY"
timeout = "10s"

[targets.crm]
url = "http://127.0.0.1:9/crm"

[[routes]]
source = "fellow"
events = ["*"]
targets = ["crm"]
"""
TTL = 0.6  # seconds: the pass below lasts several of these
LOCK = keys.reconcile_lock_key("fellow")


@pytest.fixture
def table(fellow_api: FellowApiServer) -> RouteTable:
    return parse_routes(ROUTES.format(api=fellow_api.url), "routes.toml", {"FELLOW_API_KEY": KEY})


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(1) as executor:
        yield executor


def slow_pass(
    pool: ThreadPoolExecutor,
    conn: redis.Redis,
    table: RouteTable,
    api: FellowApiServer,
    backfill: bool = False,
) -> Future[PassResult]:
    """A pass in a thread whose every API request takes 0.4 s (about 2 s in all)."""
    for member in ("m2", "m3"):
        api.enrol("course", "7", member)
    api.enrol("program", "p1", "m1")
    api.fault, api.hang = "timeout", 0.4
    return pool.submit(
        run_pass,
        conn,
        table,
        table.sources["fellow"],
        retention=86400,
        lock_ttl=TTL,
        backfill=backfill,
    )


def test_a_pass_longer_than_the_lock_ttl_keeps_the_lock_and_frees_it_at_the_end(
    redis_client: redis.Redis,
    fellow_api: FellowApiServer,
    table: RouteTable,
    pool: ThreadPoolExecutor,
) -> None:
    started = time.monotonic()
    running = slow_pass(pool, redis_client, table, fellow_api)
    assert wait_until(lambda: redis_client.exists(LOCK), 5, 0.01)
    token = redis_client.get(LOCK)
    # Well past one TTL, the same holder still has it, and a second pass is refused.
    time.sleep(2.5 * TTL)
    assert not running.done(), "the pass must outlast the lock's TTL for this test to mean much"
    assert redis_client.get(LOCK) == token
    with pytest.raises(PassBusy):
        run_pass(redis_client, table, table.sources["fellow"], retention=86400, lock_ttl=TTL)
    result = running.result(timeout=20)
    assert time.monotonic() - started > 2 * TTL
    assert result.error is None
    assert result.baseline
    assert result.memberships == 3
    assert not redis_client.exists(LOCK)  # released on exit, not left to expire
    assert read_pass(redis_client, "fellow").outcome == "baseline"


def test_a_pass_that_lost_its_lock_commits_nothing(
    redis_client: redis.Redis,
    fellow_api: FellowApiServer,
    table: RouteTable,
    pool: ThreadPoolExecutor,
) -> None:
    fellow_api.enrol("course", "7", "m1")
    first = run_pass(redis_client, table, table.sources["fellow"], retention=86400, backfill=True)
    assert len(first.synthesized) == 1
    snapshot, record = read_snapshot(redis_client, "fellow"), read_pass(redis_client, "fellow")
    with capture_logs() as logs:
        # New members and a removal, which a backfill pass would synthesize at once.
        fellow_api.remove("course", "7", "m1")
        running = slow_pass(pool, redis_client, table, fellow_api, backfill=True)
        assert wait_until(lambda: redis_client.exists(LOCK), 5, 0.01)
        # As if the lock had expired and another process had taken it.
        redis_client.set(LOCK, "another-process", px=60_000)
        with pytest.raises(PassBusy):
            running.result(timeout=20)
    assert redis_client.get(LOCK) == b"another-process"  # not released: it is not ours
    assert read_pass(redis_client, "fellow") == record  # no record of this pass
    assert read_snapshot(redis_client, "fellow") == snapshot
    assert len(indexed(redis_client)) == 1  # the first pass's event only
    assert [e["log_level"] for e in logs if "lock lost" in e["event"]] == ["error"]


def test_lock_is_one_holder_at_a_time_and_extended_by_its_heartbeat(
    redis_client: redis.Redis,
) -> None:
    first = PassLock(redis_client, "fellow", ttl=0.3, beat=0.05)
    assert first.acquire()
    try:
        assert not PassLock(redis_client, "fellow", ttl=0.3).acquire()
        time.sleep(1.0)  # over three TTLs
        assert redis_client.get(LOCK) == first.token.encode()
        assert 0 < redis_client.pttl(LOCK) <= 300
        assert first.held()
    finally:
        first.release()
    assert not redis_client.exists(LOCK)
    second = PassLock(redis_client, "fellow", ttl=0.3)
    assert second.acquire()
    second.release()


def test_without_its_holder_the_lock_expires_within_one_ttl(redis_client: redis.Redis) -> None:
    holder = PassLock(redis_client, "fellow", ttl=0.3, beat=0.05)
    assert holder.acquire()
    holder._stop.set()  # the holder died: no more heartbeats (and no release)
    assert wait_until(lambda: not redis_client.exists(LOCK), 2, 0.02)
    assert not holder.held()
    other = PassLock(redis_client, "fellow", ttl=5)
    assert other.acquire()
    holder.release()  # a late release by the old holder frees nothing of the new one's
    assert redis_client.get(LOCK) == other.token.encode()
    other.release()
