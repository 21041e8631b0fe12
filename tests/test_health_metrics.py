"""The gauges the alert rules watch: the oldest due delivery, live workers, the undrained spool."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry
from rq import Worker

from relay.core.ids import new_event_id
from relay.core.metrics import render
from relay.receiver.spool.drain import SpoolDrainer
from relay.receiver.spool.records import SpooledEvent
from relay.receiver.spool.spool import Spool
from relay.receiver.spool.usage import SpoolCollector, pending_bytes
from relay.store import keys
from relay.store.metrics import RedisCollector
from relay.store.queue import make_queue
from relay.store.records import Event
from tests.support.metrics import Samples, samples, value


def scrape(collector: object) -> Samples:
    registry = CollectorRegistry()
    registry.register(collector)  # type: ignore[arg-type]
    return samples(render(registry).decode())


@pytest.mark.needs_redis_server
def test_oldest_due_delivery_age_counts_only_what_is_due_now(redis_client: redis.Redis) -> None:
    now = time.time()
    redis_client.sadd(keys.DUE_TARGETS, "crm", "later", "empty")
    redis_client.zadd(keys.due_key("crm"), {"e1": now - 120, "e2": now - 30, "e3": now + 60})
    redis_client.zadd(keys.due_key("later"), {"e4": now + 600})  # a retry, or a lease
    found = scrape(RedisCollector(lambda: redis_client))
    crm = value(found, "relay_oldest_due_delivery_age_seconds", target="crm")
    assert crm is not None
    assert 120 <= crm < 130
    assert value(found, "relay_oldest_due_delivery_age_seconds", target="later") == 0
    assert value(found, "relay_oldest_due_delivery_age_seconds", target="empty") == 0


@pytest.mark.needs_redis_server
def test_workers_alive_counts_registered_workers_whose_key_has_not_expired(
    redis_client: redis.Redis,
) -> None:
    queue = make_queue(redis_client)
    assert value(scrape(RedisCollector(lambda: redis_client)), "relay_workers_alive") == 0
    live, dead = Worker([queue], connection=redis_client), Worker([queue], connection=redis_client)
    live.register_birth()
    dead.register_birth()
    redis_client.delete(dead.key)  # its heartbeat key expired: the process is gone
    assert Worker.count(queue=queue) == 2  # RQ's own count still lists it
    assert value(scrape(RedisCollector(lambda: redis_client)), "relay_workers_alive") == 1
    live.register_death()
    assert value(scrape(RedisCollector(lambda: redis_client)), "relay_workers_alive") == 0


def _event(n: int) -> Event:
    return Event(
        id=new_event_id(),
        source="fellow",
        type="COURSEMEMBER_CREATED",
        received_at=1_800_000_000.0 + n,
        content_type="application/x-www-form-urlencoded",
        method="POST",
        headers=(),
        body=f"event=COURSEMEMBER_CREATED&memberId={n}".encode(),
        targets=("crm",),
    )


def test_spool_pending_bytes_are_what_the_drain_has_not_moved_yet(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    collector = SpoolCollector(root)
    assert value(scrape(collector), "relay_spool_pending_bytes") == 0  # no directory yet
    spool = Spool(root)
    try:
        spool.append_many([_event(n) for n in range(5)])
        on_disk = spool.stats().bytes
        assert on_disk > 0
        assert pending_bytes(root) == on_disk
        assert value(scrape(collector), "relay_spool_pending_bytes") == on_disk

        # Two records drained: their bytes are still in the segment on disk, but not pending.
        (directory,) = spool.directories()
        batch = directory.read_batch(2, 1 << 20)
        directory.advance(batch.end)
        assert spool.stats().bytes == on_disk
        assert value(scrape(collector), "relay_spool_pending_bytes") == on_disk - batch.end.offset

        moved: list[SpooledEvent] = []
        drainer = SpoolDrainer(spool, lambda records: moved.extend(records) or len(records))
        assert drainer.drain_pass() == 3
        assert len(moved) == 3
        assert value(scrape(collector), "relay_spool_pending_bytes") == 0

        spool.append(_event(9))
        assert 0 < pending_bytes(root) < on_disk
    finally:
        spool.close()
