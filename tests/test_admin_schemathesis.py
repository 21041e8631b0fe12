"""Schemathesis over every operation of the management API, with a write token.

The API is served on a real loopback listener over a real redis-server holding events, dead
letters and a paused target; Schemathesis reads /api/openapi.json, generates requests for every
operation (valid ones and, for the negative-data check, invalid ones) and checks each answer: no
5xx, a status the document lists, the content type and body schema it declares, and invalid
input refused with a 4xx.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from schemathesis import GenerationMode, checks

from relay.admin.api import OPERATIONS
from relay.store.pauses import pause_target
from tests.support.admin import WRITE, AdminServer
from tests.support.seed_states import attempt_record, seed_dead, seed_event

pytestmark = [pytest.mark.needs_redis_server, pytest.mark.timeout(300)]

#: Generated requests per operation and mode.
EXAMPLES = 60

#: What "no answer outside the schema" means, check by check.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.negative_data_rejection,
]


def _seed(conn: redis.Redis) -> None:
    for n in range(5):
        seed_dead(conn, "crm", source="fellow", event_type=f"COURSEMEMBER_{n}")
    seed_event(
        conn,
        source="shop",
        event_type="order.paid",
        deliveries={"crm": ("retrying", 2, "HTTP 500")},
        attempts=[attempt_record("crm", 1), attempt_record("crm", 2, status=None)],
    )
    seed_event(conn, source="shop", event_type=None, deliveries={}, body=b"\xff\xfe binary")
    pause_target(conn, "analytics", "maintenance")


@pytest.fixture
def api_schema(redis_url: str, redis_client: redis.Redis) -> Iterator[schemathesis.BaseSchema]:
    """The API's own document, loaded from a running admin listener."""
    _seed(redis_client)
    with AdminServer(redis_url) as server:
        yield schemathesis.openapi.from_url(f"{server.url}/api/openapi.json")


# Schemathesis' pytest plugin (`from_fixture`/`parametrize`) does not run under pytest 9 yet
# (it reads a private attribute pytest 9 removed), so each operation is a test of ours driving
# the operation's Hypothesis strategies directly: the same cases and the same checks.
def _sent(name: str, value: object) -> bool:
    """Whether a query parameter surely reaches the server as `name=...`."""
    if not name:
        return False
    if isinstance(value, list):
        return bool(value) and all(isinstance(v, str | int | float | bool) for v in value)
    return isinstance(value, str | int | float | bool)


@pytest.mark.parametrize("operation_id", [op.operation_id for op in OPERATIONS])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_answers_within_its_schema(
    api_schema: schemathesis.BaseSchema, operation_id: str, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_id(operation_id)  # type: ignore[attr-defined]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        # A query value that is empty, or a nested object, is sent as nothing at all (and an
        # empty name is dropped by the URL parser): a negative case whose only fault is such an
        # "unknown parameter" reaches the API as a valid request, and its 200 is no fault of the
        # API (seen: `?id_prefix=0` reported as schema-violating).
        assume(all(_sent(name, value) for name, value in (case.query or {}).items()))
        case.call_and_validate(headers=WRITE, checks=CHECKS)

    run()
