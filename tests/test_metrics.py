"""Prometheus metrics: exact counts after a known sequence, read with the client's parser."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from relay.config.loading import parse_routes
from relay.config.settings import Settings
from relay.core.metrics import ReceiverMetrics, WorkerMetrics, render
from relay.receiver.app import create_app
from relay.receiver.state import WRITER
from relay.store import keys
from relay.store.metrics import RedisCollector
from relay.store.queue import KICKS_ENOUGH
from tests.support.metrics import samples
from worker.pause import pause_target, resume_target

TOKEN = "chalk-token-0123456789abcdef"
ROUTES = """
[sources.chalk]
kind = "json"
token_env = "CHALK_TOKEN"

[sources.fellow]
kind = "form"

[targets.crm]
url = "http://127.0.0.1:9/crm"

[[routes]]
source = "chalk"
events = ["element_*"]
targets = ["crm"]
"""
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def client(aiohttp_client: Any, redis_url: str) -> Any:
    routes = parse_routes(ROUTES, "routes.toml", {"CHALK_TOKEN": TOKEN})
    return await aiohttp_client(create_app(Settings(redis_url=redis_url), routes))


async def test_receiver_counts_requests_by_source_and_status(client: Any) -> None:
    hooks = f"/hooks/chalk/{TOKEN}"
    for _ in range(3):
        resp = await client.post(hooks, data=b'{"event": "element_published"}', headers=JSON)
        assert resp.status == 202
    assert (await client.post(hooks, data=b"{", headers=JSON)).status == 400
    assert (await client.post("/hooks/chalk/wrong-token-0000000000", data=b"{}")).status == 401
    assert (await client.post("/hooks/nosuch", data=b"{}")).status == 404
    resp = await client.post("/hooks/fellow", data=b"event=X", headers=JSON)
    assert resp.status == 415
    assert (await client.get("/healthz")).status == 200  # not a /hooks request: not counted

    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    found = samples(await resp.text())

    def received(source: str, status: str) -> float:
        return found.get(
            ("relay_events_received_total", (("source", source), ("status", status))), 0.0
        )

    assert received("chalk", "202") == 3
    assert received("chalk", "400") == 1
    assert received("chalk", "401") == 1
    assert received("_unknown", "404") == 1
    assert received("fellow", "415") == 1
    assert sum(v for (n, _), v in found.items() if n == "relay_events_received_total") == 7
    assert found[("relay_ack_duration_seconds_count", (("source", "chalk"),))] == 5
    # Three requests, three commits; no worker runs in this test, so the first two commits each
    # enqueue a kick and the third finds KICKS_ENOUGH waiting and adds none.
    assert client.app[WRITER].batches == 3
    assert KICKS_ENOUGH == 2
    assert found[("relay_queue_jobs", (("state", "queued"),))] == 2
    assert found[("relay_queue_jobs", (("state", "scheduled"),))] == 0
    assert found[("relay_dead_letters_stored", ())] == 0
    assert found[("relay_redis_up", ())] == 1


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["chalk", "fellow", "_unknown"]),
            st.sampled_from([202, 400, 503]),
            st.floats(0, 10) | st.sampled_from([0.001, 0.0025, 5.0, 30.0]),  # on the bounds too
        ),
        max_size=30,
    )
)
def test_observe_request_counts_as_the_clients_own_inc_and_observe(
    requests: list[tuple[str, int, float]],
) -> None:
    fast = ReceiverMetrics(CollectorRegistry())
    plain = ReceiverMetrics(CollectorRegistry())
    for source, status, seconds in requests:
        fast.observe_request(source, status, seconds)
        plain.events_received.labels(source, str(status)).inc()
        plain.ack_seconds.labels(source).observe(seconds)
    # Exposition without the _created timestamps, which differ by when each child was made.
    exposed = [render(m.registry).decode().splitlines() for m in (fast, plain)]
    assert [[line for line in lines if "_created" not in line] for lines in exposed] == [
        [line for line in exposed[1] if "_created" not in line]
    ] * 2


def test_redis_collector_reports_down_instead_of_failing_the_scrape() -> None:
    registry = CollectorRegistry()
    dead = redis.Redis(port=1, socket_connect_timeout=0.2)  # nothing listens on port 1
    registry.register(RedisCollector(lambda: dead))
    found = samples(render(registry).decode())
    assert found == {("relay_redis_up", ()): 0.0}


def test_worker_metrics_count_outcomes_and_latencies() -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    metrics.observe_attempt("crm", "delivered", 0.02, since_receipt=0.05)
    metrics.observe_attempt("crm", "retry", 0.5, since_receipt=None)
    metrics.observe_attempt("crm", "retry", 0.5, since_receipt=None)
    metrics.observe_attempt("crm", "dead", 0.5, since_receipt=None)
    metrics.observe_attempt("erp", "gone", 0.01, since_receipt=None)
    found = samples(render(metrics.registry).decode())
    attempts = "relay_delivery_attempts_total"
    assert found[(attempts, (("outcome", "delivered"), ("target", "crm")))] == 1
    assert found[(attempts, (("outcome", "retry"), ("target", "crm")))] == 2
    assert found[("relay_retries_scheduled_total", (("target", "crm"),))] == 2
    assert found[("relay_dead_letters_total", (("reason", "dead"), ("target", "crm")))] == 1
    assert found[("relay_dead_letters_total", (("reason", "gone"), ("target", "erp")))] == 1
    assert found[("relay_delivery_latency_seconds_count", (("target", "crm"),))] == 1
    assert found[("relay_delivery_attempt_duration_seconds_count", (("target", "crm"),))] == 4


def test_receiver_metrics_have_no_event_ids_in_labels() -> None:
    metrics = ReceiverMetrics(CollectorRegistry())
    metrics.observe_request("chalk", 202, 0.001)
    for family in text_string_to_metric_families(render(metrics.registry).decode()):
        for sample in family.samples:
            assert set(sample.labels) <= {"source", "status", "le"}


def test_due_deliveries_are_reported_per_target(redis_client: redis.Redis) -> None:
    now = time.time()
    redis_client.sadd(keys.DUE_TARGETS, "crm", "erp")
    redis_client.zadd(keys.due_key("crm"), {"evt_a": now - 5, "evt_b": now - 1, "evt_c": now + 60})
    redis_client.zadd(keys.due_key("erp"), {"evt_d": now + 600})
    registry = CollectorRegistry()
    registry.register(RedisCollector(lambda: redis_client))
    found = samples(render(registry).decode())
    due = "relay_deliveries_due"
    assert found[(due, (("target", "crm"), ("when", "now")))] == 2
    assert found[(due, (("target", "crm"), ("when", "later")))] == 1
    assert found[(due, (("target", "erp"), ("when", "now")))] == 0
    assert found[(due, (("target", "erp"), ("when", "later")))] == 1


async def test_receiver_metrics_report_a_paused_target(
    client: Any, redis_client: redis.Redis
) -> None:
    # Issue 12: relay_target_paused existed only on the worker's endpoint, which `relay dev`
    # does not start. The receiver's /metrics reads it from Redis at scrape time.
    hooks = f"/hooks/chalk/{TOKEN}"
    resp = await client.post(hooks, data=b'{"event": "element_published"}', headers=JSON)
    assert resp.status == 202  # crm now has a delivery due
    assert pause_target(redis_client, "crm", "maintenance window", now=1_790_000_000.5)
    found = samples(await (await client.get("/metrics")).text())
    assert found[("relay_target_paused", (("target", "crm"),))] == 1
    assert found[("relay_target_pause_start_time_seconds", (("target", "crm"),))] == (
        1_790_000_000.5
    )

    assert resume_target(redis_client, "crm")
    found = samples(await (await client.get("/metrics")).text())
    assert found[("relay_target_paused", (("target", "crm"),))] == 0
    assert ("relay_target_pause_start_time_seconds", (("target", "crm"),)) not in found


async def test_receiver_metrics_report_a_target_paused_before_any_delivery(
    client: Any, redis_client: redis.Redis
) -> None:
    assert pause_target(redis_client, "crm", "not live yet", now=1_790_000_000.0)
    found = samples(await (await client.get("/metrics")).text())
    assert found[("relay_target_paused", (("target", "crm"),))] == 1


def test_redis_collector_reports_configured_targets_paused_or_not(
    redis_client: redis.Redis,
) -> None:
    # A configured target is reported before it ever had a delivery; one Redis knows only from
    # its due set is reported too; a hand-written pause (no time) has no start time.
    redis_client.sadd(keys.DUE_TARGETS, "erp")
    redis_client.set(keys.paused_key("bi"), "1")
    registry = CollectorRegistry()
    registry.register(RedisCollector(lambda: redis_client, targets=lambda: ("crm", "bi")))
    found = samples(render(registry).decode())
    paused = {
        labels[0][1]: value
        for (name, labels), value in found.items()
        if name == "relay_target_paused"
    }
    assert paused == {"bi": 1, "crm": 0, "erp": 0}
    assert not any(name == "relay_target_pause_start_time_seconds" for name, _ in found)
