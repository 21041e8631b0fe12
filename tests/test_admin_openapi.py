"""The OpenAPI document against the app: every admin path in it answers 401 without a token,
it lists exactly the routes the app serves, and real answers match its schemas."""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
import orjson
import pytest
import redis
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient

from relay.admin.api import OPERATIONS, openapi_document
from relay.core.states import DeliveryState
from relay.store.breakers import Breakers
from relay.store.control import ControlSettings, publish_settings
from relay.store.pauses import pause_target
from tests.support.admin import READ, WRITE, admin_app
from tests.support.seed_states import NOW, attempt_record, seed_dead, seed_event

pytestmark = pytest.mark.needs_redis_server

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(aiohttp_client: Any, redis_url: str) -> Client:
    return await aiohttp_client(admin_app(redis_url))  # type: ignore[no-any-return]


async def served_document(client: Client) -> dict[str, Any]:
    response = await client.get("/api/openapi.json")  # no token: the document holds no data
    assert response.status == 200
    return orjson.loads(await response.read())  # type: ignore[no-any-return]


def concrete(path: str) -> str:
    """A path of the document with each `{param}` filled in."""
    return re.sub(r"\{[^}]+\}", "x1", path)


async def test_every_path_of_the_document_answers_401_without_a_token(client: Client) -> None:
    document = await served_document(client)
    walked = []
    for path, methods in document["paths"].items():
        for method in methods:
            for headers in ({}, {"Authorization": "Bearer " + "z" * 40}):
                response = await client.request(method.upper(), concrete(path), headers=headers)
                body = orjson.loads(await response.read())
                assert response.status == 401, (method, path, body)
                assert body["error"]["code"] == "unauthorized"
            walked.append((method, path))
    assert len(walked) == len(OPERATIONS) >= 12


async def test_the_document_lists_exactly_the_routes_the_app_serves(client: Client) -> None:
    document = await served_document(client)
    documented = {(m.upper(), p) for p, ms in document["paths"].items() for m in ms}
    served = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith("/api/v1")
    }
    assert documented == served
    required = {
        ("GET", "/api/v1/events"),
        ("GET", "/api/v1/events/{id}"),
        ("POST", "/api/v1/events/{id}/replay"),
        ("GET", "/api/v1/dead-letters"),
        ("POST", "/api/v1/dead-letters/replay"),
        ("GET", "/api/v1/targets"),
        ("POST", "/api/v1/targets/{name}/pause"),
        ("POST", "/api/v1/targets/{name}/resume"),
        ("GET", "/api/v1/sources"),
        ("GET", "/api/v1/status"),
        ("GET", "/api/v1/routes"),
    }
    assert required <= documented


def test_the_document_is_openapi_3_1_that_schemathesis_reads_whole() -> None:
    document = openapi_document(OPERATIONS)
    assert document["openapi"] == "3.1.0"
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(OPERATIONS)
    components = document["components"]
    for component in components["schemas"].values():
        # Each component is a valid JSON Schema (2020-12, the dialect of OpenAPI 3.1) whose
        # references all resolve.
        whole = {"$schema": "https://json-schema.org/draft/2020-12/schema", **component}
        jsonschema_rs.meta.validate(whole)
        jsonschema_rs.Draft202012Validator({**component, "components": components})


def response_validator(status: int, method: str, path: str) -> Any:
    """A validator of the answer the document declares for this operation and status."""
    document = openapi_document(OPERATIONS)
    declared = document["paths"][path][method.lower()]["responses"][str(status)]
    schema = declared["content"]["application/json"]["schema"]
    return jsonschema_rs.Draft202012Validator(
        {**schema, "components": document["components"]}, validate_formats=True
    )


async def test_real_answers_match_their_declared_schemas(
    client: Client, redis_client: redis.Redis
) -> None:
    dead = seed_dead(redis_client, "crm")
    busy = seed_event(
        redis_client,
        deliveries={"crm": (DeliveryState.RETRYING, 2, "HTTP 500")},
        attempts=[attempt_record("crm", 1), attempt_record("crm", 2, status=None)],
    )
    seed_event(redis_client, source="shop", event_type=None, deliveries={}, body=b"\xff\x00")
    pause_target(redis_client, "analytics", "maintenance")
    # crm's breaker open and its delivery control published: targets and status show both.
    for _ in range(2):
        Breakers(redis_client).record("crm", True, 2, 30.0, "HTTP 503", NOW)
    publish_settings(redis_client, {"crm": ControlSettings("10/s", 0.1, 0.1, 2, "target")})
    calls = [
        ("GET", "/api/v1/events", "/api/v1/events?limit=2", None, 200),
        ("GET", "/api/v1/events/{id}", f"/api/v1/events/{busy}", None, 200),
        ("GET", "/api/v1/events/{id}", f"/api/v1/events/{dead}", None, 200),
        ("GET", "/api/v1/dead-letters", "/api/v1/dead-letters", None, 200),
        ("GET", "/api/v1/targets", "/api/v1/targets", None, 200),
        ("GET", "/api/v1/sources", "/api/v1/sources", None, 200),
        ("GET", "/api/v1/status", "/api/v1/status", None, 200),
        ("GET", "/api/v1/routes", "/api/v1/routes", None, 200),
        ("POST", "/api/v1/events/{id}/replay", f"/api/v1/events/{busy}/replay", None, 409),
        ("POST", "/api/v1/events/{id}/replay", f"/api/v1/events/{dead}/replay", {}, 200),
        ("POST", "/api/v1/dead-letters/replay", "/api/v1/dead-letters/replay",
         {"all": True, "dry_run": True}, 200),
        ("POST", "/api/v1/dead-letters/replay", "/api/v1/dead-letters/replay", {"all": True}, 202),
        ("POST", "/api/v1/targets/{name}/pause", "/api/v1/targets/crm/pause", {"reason": "r"}, 200),
        ("POST", "/api/v1/targets/{name}/resume", "/api/v1/targets/crm/resume", None, 200),
        ("GET", "/api/v1/events", "/api/v1/events?limit=999", None, 400),
    ]  # fmt: skip
    for method, path, url, body, status in calls:
        response = await client.request(method, url, headers=WRITE, json=body)
        data = orjson.loads(await response.read())
        assert response.status == status, (url, data)
        errors = [str(e) for e in response_validator(status, method, path).iter_errors(data)]
        assert errors == [], (url, errors)
    response = await client.post("/api/v1/dead-letters/replay", headers=WRITE, json={"all": True})
    job_id = orjson.loads(await response.read())["job"]["id"]
    polled = orjson.loads(await (await client.get(f"/api/v1/jobs/{job_id}", headers=READ)).read())
    assert response_validator(200, "GET", "/api/v1/jobs/{id}").is_valid(polled)
