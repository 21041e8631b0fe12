"""When the workers run a reconciliation pass: `every`, backoff after failures, once per due."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from relay.config.loading import parse_routes
from relay.config.model import Reconcile, RouteTable
from relay.core.secrets import Secret
from relay.store.reconcile import PassRecord, read_pass
from tests.support.fellow_api import KEY, FellowApiServer
from worker.fellow.schedule import FIRST_RETRY, is_due, next_due, reconcile_due

CONFIG = Reconcile(api="https://a.example", api_key=Secret("k" * 20), every=900.0)


def test_first_pass_is_due_at_once_then_every() -> None:
    assert is_due(PassRecord(), CONFIG, 1.0)
    ok = PassRecord(at=1000.0, outcome="ok")
    assert next_due(ok, CONFIG) == 1900.0
    assert not is_due(ok, CONFIG, 1899.0)
    assert is_due(ok, CONFIG, 1900.0)


@pytest.mark.parametrize(("failures", "wait"), [(1, 30.0), (2, 60.0), (4, 240.0), (9, 900.0)])
def test_failed_passes_back_off_up_to_every(failures: int, wait: float) -> None:
    record = PassRecord(at=1000.0, outcome="boom", failures=failures)
    assert next_due(record, CONFIG) == 1000.0 + wait
    assert FIRST_RETRY == 30.0


ROUTES = """
[sources.fellow]
kind = "form"
[sources.fellow.reconcile]
api = "{api}"
api_key_env = "FELLOW_API_KEY"
every = "15m"

[targets.crm]
url = "http://127.0.0.1:9/none"

[[routes]]
source = "fellow"
events = ["*"]
targets = ["crm"]
"""


@pytest.fixture
def table(fellow_api: FellowApiServer) -> RouteTable:
    return parse_routes(ROUTES.format(api=fellow_api.url), "routes.toml", {"FELLOW_API_KEY": KEY})


@pytest.mark.needs_redis_server
def test_workers_run_a_due_pass_once_and_retry_a_failed_one_after_backoff(
    redis_client: redis.Redis, fellow_api: FellowApiServer, table: RouteTable, use_routes: Any
) -> None:
    use_routes(table)
    fellow_api.enrol("course", "1", "m1")
    assert reconcile_due() == 1
    first = read_pass(redis_client, "fellow")
    assert first.outcome == "baseline"
    assert reconcile_due() == 0  # not due again before `every`
    assert reconcile_due(now=first.at + 901) == 1
    fellow_api.fault = "401"
    assert reconcile_due(now=first.at + 2000) == 1
    failed = read_pass(redis_client, "fellow")
    assert failed.failures == 1
    assert reconcile_due(now=failed.at + FIRST_RETRY - 1) == 0
    fellow_api.fault = None
    assert reconcile_due(now=failed.at + FIRST_RETRY) == 1
    assert read_pass(redis_client, "fellow").failures == 0
