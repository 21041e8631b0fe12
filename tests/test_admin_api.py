"""The management API over HTTP (aiohttp's test client, a real redis-server): what each endpoint
answers, its filters and pages, replay and pause, and how it refuses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from relay.admin import Principal, Scope, SessionRefused, make_admin_app, set_session_resolver
from relay.admin.tokens import TokenSet
from relay.config.loading import parse_routes
from relay.config.settings import Settings
from relay.core.states import DeliveryState
from relay.store import keys
from relay.store.breakers import Breakers
from relay.store.control import publish_settings
from relay.store.pauses import pause_target
from tests.support.admin import (
    READ,
    READ_TOKEN,
    ROUTE_SECRETS,
    WRITE,
    WRITE_TOKEN,
    admin_app,
    admin_routes,
    admin_tokens,
)
from tests.support.seed_states import NOW, attempt_record, seed_dead, seed_event
from tests.test_events_index import commit as commit_events
from tests.test_events_index import event as index_event
from worker.control import settings_of

pytestmark = pytest.mark.needs_redis_server

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], AsyncIterator[Client]]


@pytest.fixture
async def client(aiohttp_client: Any, redis_url: str) -> Client:
    """A test client of the admin app (API only) on the flushed test Redis."""
    return await aiohttp_client(admin_app(redis_url))  # type: ignore[no-any-return]


async def answer(response: Any, status: int) -> Any:
    """The JSON body of a response that must have `status`."""
    body = await response.read()
    assert response.status == status, body
    assert response.headers["Content-Type"].startswith("application/json")
    return orjson.loads(body)


def assert_error(body: Any, code: str, field: str | None = None) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["code"] == code
    assert body["error"]["field"] == field
    assert body["error"]["message"]


# -- authentication ------------------------------------------------------------------------------


async def test_no_token_or_a_wrong_one_is_401_in_the_error_shape(client: Client) -> None:
    for headers in ({}, {"Authorization": "Bearer " + "x" * 40}, {"Authorization": "Basic eA=="}):
        response = await client.get("/api/v1/status", headers=headers)
        body = await answer(response, 401)
        assert_error(body, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_an_unknown_api_path_is_401_without_a_token_and_404_with_one(client: Client) -> None:
    assert_error(await answer(await client.get("/api/v1/nothing"), 401), "unauthorized")
    body = await answer(await client.get("/api/v1/nothing", headers=READ), 404)
    assert_error(body, "not_found")


async def test_a_read_token_reads_but_a_write_is_403(client: Client) -> None:
    await answer(await client.get("/api/v1/status", headers=READ), 200)
    response = await client.post("/api/v1/targets/crm/pause", headers=READ)
    assert_error(await answer(response, 403), "insufficient_scope")


async def test_a_wrong_method_is_405_with_allow(client: Client) -> None:
    response = await client.delete("/api/v1/events", headers=WRITE)
    assert_error(await answer(response, 405), "method_not_allowed")
    assert "GET" in response.headers["Allow"]


async def test_without_configured_tokens_everything_is_401_and_says_why(
    aiohttp_client: Any, redis_url: str
) -> None:
    app = make_admin_app(Settings(redis_url=redis_url), TokenSet(), admin_routes(), console=False)
    client = await aiohttp_client(app)
    body = await answer(await client.get("/api/v1/status", headers=WRITE), 401)
    assert "RELAY_ADMIN_TOKENS" in body["error"]["message"]


def session_app(redis_url: str, resolver: Any) -> web.Application:
    app = make_admin_app(
        Settings(redis_url=redis_url), admin_tokens(), admin_routes(), console=False
    )
    set_session_resolver(app, resolver)
    return app


async def test_the_session_hook_authenticates_requests_without_a_header(
    aiohttp_client: Any, redis_url: str
) -> None:
    seen: list[str] = []

    async def resolver(request: web.Request, tokens: TokenSet) -> Principal | None:
        seen.append(request.method)
        if request.cookies.get("s") != "ok":
            return None
        if request.method == "POST" and request.headers.get("x-csrf") != "yes":
            raise SessionRefused("the CSRF token is missing")
        return Principal("bob", Scope.WRITE)

    client = await aiohttp_client(session_app(redis_url, resolver))
    assert_error(await answer(await client.get("/api/v1/status"), 401), "unauthorized")
    await answer(await client.get("/api/v1/status", cookies={"s": "ok"}), 200)
    refused = await client.post("/api/v1/targets/crm/pause", cookies={"s": "ok"})
    assert_error(await answer(refused, 403), "csrf_failed")
    passed = await client.post(
        "/api/v1/targets/crm/pause", cookies={"s": "ok"}, headers={"x-csrf": "yes"}
    )
    assert (await answer(passed, 200))["pause"]["reason"] == "paused by bob through the API"
    # A bearer header decides alone: a wrong one is refused whatever the cookie says.
    calls = len(seen)
    wrong = {"Authorization": "Bearer " + "x" * 40}
    await answer(await client.get("/api/v1/status", cookies={"s": "ok"}, headers=wrong), 401)
    assert len(seen) == calls


# -- events --------------------------------------------------------------------------------------


def seed_listing(conn: redis.Redis) -> dict[str, str]:
    """Five events of two sources, in several states, one minute apart (the newest last)."""
    return {
        "added": seed_event(conn, received=NOW - 300, event_type="COURSEMEMBER_ADDED"),
        "dead": seed_dead(
            conn, "crm", received=NOW - 240, event_type="COURSEMEMBER_REMOVED", at=NOW - 100
        ),
        "order": seed_event(
            conn,
            source="shop",
            event_type="order.paid",
            received=NOW - 180,
            deliveries={"crm": (DeliveryState.DELIVERED, 1, "")},
        ),
        "unrouted": seed_event(
            conn, source="shop", event_type="order.viewed", received=NOW - 120, deliveries={}
        ),
        "analytics": seed_event(
            conn,
            received=NOW - 60,
            event_type="COURSEMEMBER_ADDED",
            deliveries={"analytics": (DeliveryState.RETRYING, 2, "HTTP 503")},
        ),
    }


async def listed(client: Client, query: str) -> list[str]:
    body = await answer(await client.get(f"/api/v1/events?{query}", headers=READ), 200)
    return [e["id"] for e in body["events"]]


async def test_events_are_listed_newest_first_and_each_filter_narrows(
    client: Client, redis_client: redis.Redis
) -> None:
    ids = seed_listing(redis_client)
    newest_first = [ids[k] for k in ("analytics", "unrouted", "order", "dead", "added")]
    assert await listed(client, "") == newest_first
    assert await listed(client, "source=shop") == [ids["unrouted"], ids["order"]]
    assert await listed(client, "type=COURSEMEMBER_*") == [
        ids["analytics"],
        ids["dead"],
        ids["added"],
    ]
    assert await listed(client, "type=order.p%3Fid") == [ids["order"]]
    assert await listed(client, "target=analytics") == [ids["analytics"]]
    assert await listed(client, "state=dead") == [ids["dead"]]
    assert await listed(client, "state=unrouted") == [ids["unrouted"]]
    assert await listed(client, "state=delivered&target=crm") == [ids["order"]]
    since = "2026-09-21T14:10:00Z"  # NOW - 200 s
    assert await listed(client, f"received_from={since}") == newest_first[:3]
    assert await listed(client, f"received_to={since}") == newest_first[3:]
    assert await listed(client, f"id_prefix={ids['order'][:-3]}") == [ids["order"]]


async def test_cursor_pages_walk_every_event_once_even_with_equal_times(
    client: Client, redis_client: redis.Redis
) -> None:
    # Seven events received at the same instant (ties in the index), then three more.
    seeded = [seed_event(redis_client, received=NOW) for _ in range(7)]
    seeded += [seed_event(redis_client, received=NOW + n) for n in (1, 2, 3)]
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        query = "limit=3" + (f"&cursor={cursor}" if cursor else "")
        body = await answer(await client.get(f"/api/v1/events?{query}", headers=READ), 200)
        seen += [e["id"] for e in body["events"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(seeded)
    assert len(seen) == len(set(seen))


async def test_one_event_has_its_record_headers_body_states_and_attempts(
    client: Client, redis_client: redis.Redis
) -> None:
    event_id = seed_event(
        redis_client,
        headers=(("content-type", "application/json"), ("x-event-type", "A")),
        deliveries={"crm": (DeliveryState.RETRYING, 2, "HTTP 500")},
        attempts=[attempt_record("crm", 1), attempt_record("crm", 2, status=None)],
    )
    body = await answer(await client.get(f"/api/v1/events/{event_id}", headers=READ), 200)
    assert body["id"] == event_id
    assert body["headers"] == [["content-type", "application/json"], ["x-event-type", "A"]]
    assert body["body"] == {
        "size": 40,
        "encoding": "utf-8",
        "data": '{"event": "COURSEMEMBER_ADDED", "id": 7}',
        "truncated": False,
    }
    [crm] = body["deliveries"]
    assert (crm["target"], crm["state"], crm["attempts_made"]) == ("crm", "retrying", 2)
    assert [a["status"] for a in crm["attempts"]] == [500, None]
    assert crm["attempts"][1]["error"] == "connection refused"


async def test_a_binary_body_comes_as_base64_whole(
    client: Client, redis_client: redis.Redis
) -> None:
    raw = bytes(range(256)) * 20
    event_id = seed_event(redis_client, body=raw)
    body = await answer(await client.get(f"/api/v1/events/{event_id}", headers=READ), 200)
    assert body["body"]["encoding"] == "base64"
    assert body["body"]["size"] == len(raw)
    assert not body["body"]["truncated"]


async def test_an_unknown_or_malformed_event_id_is_404(client: Client) -> None:
    for event_id in ("evt_01M81QVJ30T6VERVHSBVNNV830", "not%20an%20id"):
        response = await client.get(f"/api/v1/events/{event_id}", headers=READ)
        assert_error(await answer(response, 404), "event_not_found")


# -- replay --------------------------------------------------------------------------------------


async def test_replaying_a_dead_event_puts_it_back_with_one_audit_line(
    client: Client, redis_client: redis.Redis
) -> None:
    event_id = seed_dead(redis_client, "crm")
    with capture_logs() as logs:
        response = await client.post(f"/api/v1/events/{event_id}/replay", headers=WRITE)
        body = await answer(response, 200)
    assert body["event_id"] == event_id
    assert (body["replayed"], body["failed"]) == (1, 0)
    assert body["results"][0]["attempt"] == 11
    assert redis_client.hget(keys.event_key(event_id), "s:crm") == b"pending"
    assert redis_client.zcard(keys.DEAD) == 0
    audits = [entry for entry in logs if entry["event"] == "admin_audit"]
    assert len(audits) == 1
    assert audits[0]["principal"] == "alice"
    assert audits[0]["action"] == "replay_event"
    assert audits[0]["what"] == event_id
    assert audits[0]["result"].startswith("replayed 1")
    assert WRITE_TOKEN not in repr(logs)


async def test_a_dry_run_says_what_it_would_replay_and_changes_nothing(
    client: Client, redis_client: redis.Redis
) -> None:
    event_id = seed_dead(redis_client, "crm")
    response = await client.post(
        f"/api/v1/events/{event_id}/replay", headers=WRITE, json={"dry_run": True}
    )
    body = await answer(response, 200)
    assert body["would_replay"] == 1
    assert redis_client.zcard(keys.DEAD) == 1


async def test_replay_refusals_are_409_or_404_with_the_reason(
    client: Client, redis_client: redis.Redis
) -> None:
    pending = seed_event(redis_client)
    body = await answer(await client.post(f"/api/v1/events/{pending}/replay", headers=WRITE), 409)
    assert_error(body, "not_dead")
    assert "crm: pending" in body["error"]["message"]
    dead = seed_dead(redis_client, "crm")
    response = await client.post(
        f"/api/v1/events/{dead}/replay", headers=WRITE, json={"target": "billing"}
    )
    assert_error(await answer(response, 409), "unknown_target")
    unknown = "evt_01M81QVJ30T6VERVHSBVNNV830"
    response = await client.post(f"/api/v1/events/{unknown}/replay", headers=WRITE)
    assert_error(await answer(response, 404), "event_not_found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        (b'{"dry_run": "yes"}', "dry_run"),
        (b'{"target": 7}', "target"),
        (b'{"targets": ["crm"]}', "targets"),
    ],
)
async def test_a_bad_replay_body_is_400_naming_the_field(
    client: Client, redis_client: redis.Redis, body: bytes, field: str
) -> None:
    event_id = seed_dead(redis_client, "crm")
    response = await client.post(f"/api/v1/events/{event_id}/replay", headers=WRITE, data=body)
    assert_error(await answer(response, 400), "invalid_field", field)


# -- dead letters --------------------------------------------------------------------------------


async def test_dead_letters_are_listed_with_the_same_filters_and_pages(
    client: Client, redis_client: redis.Redis
) -> None:
    old = seed_dead(redis_client, "crm", at=NOW - 500, received=NOW - 900)
    gone = seed_dead(
        redis_client, "analytics", at=NOW - 400, state=DeliveryState.GONE, received=NOW - 450
    )
    shop = seed_dead(
        redis_client, "crm", at=NOW - 300, source="shop", event_type="order.paid", received=NOW
    )

    async def dead(query: str) -> list[str]:
        response = await client.get(f"/api/v1/dead-letters?{query}", headers=READ)
        return [d["event_id"] for d in (await answer(response, 200))["dead_letters"]]

    assert await dead("") == [shop, gone, old]
    assert await dead("target=crm") == [shop, old]
    assert await dead("state=gone") == [gone]
    assert await dead("source=shop") == [shop]
    assert await dead("type=COURSE*") == [gone, old]
    assert await dead("dead_from=2026-09-21T14:07:00Z") == [shop]  # NOW - 380 s
    assert await dead("dead_to=2026-09-21T14:06:00Z") == [old]  # NOW - 440 s
    assert await dead("received_to=2026-09-21T14:00:00Z") == [old]  # NOW - 800 s
    assert await dead(f"id_prefix={gone}") == [gone]
    first = await answer(await client.get("/api/v1/dead-letters?limit=2", headers=READ), 200)
    assert [d["event_id"] for d in first["dead_letters"]] == [shop, gone]
    assert first["dead_letters"][0]["dead"] == "2026-09-21T14:08:20.000Z"
    rest = await answer(
        await client.get(f"/api/v1/dead-letters?cursor={first['next_cursor']}", headers=READ), 200
    )
    assert [d["event_id"] for d in rest["dead_letters"]] == [old]
    assert rest["next_cursor"] is None


async def poll_job(client: Client, location: str) -> Any:
    for _ in range(200):
        job = (await answer(await client.get(location, headers=READ), 200))["job"]
        if job["state"] != "running":
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job still running: {job}")


async def test_a_bulk_replay_counts_in_a_dry_run_then_runs_as_a_job(
    client: Client, redis_client: redis.Redis
) -> None:
    crm = [seed_dead(redis_client, "crm", at=NOW - n) for n in range(150)]
    other = seed_dead(redis_client, "analytics")
    request = {"filter": {"target": "crm"}, "dry_run": True}
    counted = await answer(
        await client.post("/api/v1/dead-letters/replay", headers=WRITE, json=request), 200
    )
    assert counted == {"dry_run": True, "selected": 150, "more": False}
    assert redis_client.zcard(keys.DEAD) == 151
    with capture_logs() as logs:
        response = await client.post(
            "/api/v1/dead-letters/replay", headers=WRITE, json={"filter": {"target": "crm"}}
        )
        started = (await answer(response, 202))["job"]
    assert response.headers["Location"] == f"/api/v1/jobs/{started['id']}"
    assert (started["total"], started["by"]) == (150, "alice")
    job = await poll_job(client, response.headers["Location"])
    assert (job["state"], job["done"], job["replayed"], job["failed"]) == ("finished", 150, 150, 0)
    assert job["selection"] == {"filter": {"target": "crm"}, "all": False}
    assert redis_client.zrange(keys.DEAD, 0, -1) == [keys.dead_member(other, "analytics").encode()]
    assert all(redis_client.hget(keys.event_key(e), "s:crm") == b"pending" for e in crm)
    audits = [e for e in logs if e["event"] == "admin_audit"]
    assert len(audits) == 1
    assert audits[0]["job"] == started["id"]


async def test_a_bulk_replay_must_name_what_it_replays(client: Client) -> None:
    for body, field in (
        ({}, "filter"),
        ({"filter": {}}, "filter"),
        ({"filter": {"target": "crm"}, "all": True}, "all"),
        ({"filter": {"colour": "red"}}, "filter.colour"),
        ({"filter": {"dead_from": "yesterday"}}, "filter.dead_from"),
        ({"filter": "crm"}, "filter"),
    ):
        response = await client.post("/api/v1/dead-letters/replay", headers=WRITE, json=body)
        assert_error(await answer(response, 400), "invalid_field", field)


async def test_an_unknown_job_is_404(client: Client) -> None:
    for job_id in ("job_" + "0" * 20, "nope"):
        response = await client.get(f"/api/v1/jobs/{job_id}", headers=READ)
        assert_error(await answer(response, 404), "job_not_found")


# -- targets, sources, status, routes -----------------------------------------------------------


async def test_targets_show_pauses_figures_and_settings_without_secrets(
    client: Client, redis_client: redis.Redis
) -> None:
    seed_dead(redis_client, "crm")
    pause_target(redis_client, "analytics", "their maintenance")
    response = await client.get("/api/v1/targets", headers=READ)
    text = (await response.read()).decode()
    body = orjson.loads(text)
    crm, analytics = body["targets"]
    assert (crm["name"], crm["dead_letters"], crm["paused"]) == ("crm", 1, None)
    assert crm["config"]["signing_secret_env"] == ["CRM_WHSEC"]
    assert crm["config"]["headers"] == [{"name": "x-api-key", "env": "CRM_KEY"}]
    assert analytics["paused"]["reason"] == "their maintenance"
    assert not any(value in text for value in ROUTE_SECRETS.values())


CONTROLLED_ROUTES = """
[sources.shop]
kind = "json"

[targets.crm]
url = "http://127.0.0.1:9/crm"
rate = "10/s"
concurrency = 2
order = "target"
breaker = { failures = 2, probe = 45 }
enrich = "fellow"

[targets.analytics]
url = "http://127.0.0.1:9/analytics"

[[routes]]
source = "shop"
events = ["order.*"]  # no Fellow completion: enrichment needs no reconcile table here
targets = ["crm", "analytics"]
"""


async def test_targets_and_status_show_breaker_control_and_their_settings(
    aiohttp_client: Any, redis_url: str, redis_client: redis.Redis
) -> None:
    routes = parse_routes(CONTROLLED_ROUTES, "routes.toml", {})
    app = make_admin_app(Settings(redis_url=redis_url), admin_tokens(), routes, console=False)
    client = await aiohttp_client(app)
    crm_settings = settings_of(routes.targets["crm"])
    assert crm_settings is not None
    publish_settings(redis_client, {"crm": crm_settings})  # as the workers do
    for _ in range(2):
        Breakers(redis_client).record("crm", True, 2, 45.0, "HTTP 503", NOW)
    listed = await answer(await client.get("/api/v1/targets", headers=READ), 200)
    crm, analytics = listed["targets"]
    assert crm["breaker"]["state"] == "open"
    assert (crm["breaker"]["failures"], crm["breaker"]["last_error"]) == (2, "HTTP 503")
    assert 0 < crm["breaker"]["next_probe_in"] <= 45
    assert crm["control"]["rate"] == "10/s"
    assert (crm["control"]["concurrency"], crm["control"]["order"]) == (2, "target")
    assert set(crm["control"]["held"]) == {"rate", "concurrency", "order"}
    assert {k: crm["config"][k] for k in ("rate", "concurrency", "order", "enrich")} == {
        "rate": "10/s",
        "concurrency": 2,
        "order": "target",
        "enrich": "fellow",
    }
    assert crm["config"]["breaker"] == {"failures": 2, "probe_s": 45.0}
    assert (analytics["breaker"], analytics["control"]) == (None, None)
    assert {k: analytics["config"][k] for k in ("rate", "concurrency", "order", "breaker")} == {
        "rate": None,
        "concurrency": None,
        "order": None,
        "breaker": None,
    }
    status = await answer(await client.get("/api/v1/status", headers=READ), 200)
    by_name = {t["name"]: t for t in status["targets"]}
    assert by_name["crm"]["breaker"] == crm["breaker"] | {
        "next_probe_in": by_name["crm"]["breaker"]["next_probe_in"]
    }
    assert by_name["crm"]["control"] == crm["control"]
    assert (by_name["analytics"]["breaker"], by_name["analytics"]["control"]) == (None, None)


async def test_pause_and_resume_a_target_with_audit_lines(
    client: Client, redis_client: redis.Redis
) -> None:
    with capture_logs() as logs:
        first = await client.post(
            "/api/v1/targets/crm/pause", headers=WRITE, json={"reason": "deploying v2"}
        )
        body = await answer(first, 200)
        again = await answer(await client.post("/api/v1/targets/crm/pause", headers=WRITE), 200)
        resumed = await answer(await client.post("/api/v1/targets/crm/resume", headers=WRITE), 200)
        twice = await answer(await client.post("/api/v1/targets/crm/resume", headers=WRITE), 200)
        refused = await client.post("/api/v1/targets/crm/pause", headers=READ)
        await answer(refused, 403)
    assert (body["changed"], body["pause"]["reason"]) == (True, "deploying v2")
    assert (again["changed"], again["pause"]["reason"]) == (False, "deploying v2")
    assert (resumed["changed"], twice["changed"]) == (True, False)
    assert not redis_client.exists(keys.paused_key("crm"))
    audits = [e for e in logs if e["event"] == "admin_audit"]
    assert [(a["principal"], a["action"], a["result"]) for a in audits] == [
        ("alice", "pause", "paused"),
        ("alice", "pause", "already paused"),
        ("alice", "resume", "resumed"),
        ("alice", "resume", "was not paused"),
        ("ci", "POST /api/v1/targets/{name}/pause", "insufficient_scope"),
    ]
    assert not any(t in repr(logs) for t in (WRITE_TOKEN, READ_TOKEN))


async def test_pausing_an_unknown_target_is_404_and_a_long_reason_400(
    client: Client, redis_client: redis.Redis
) -> None:
    response = await client.post("/api/v1/targets/billing/pause", headers=WRITE)
    assert_error(await answer(response, 404), "target_not_found")
    response = await client.post(
        "/api/v1/targets/crm/pause", headers=WRITE, json={"reason": "x" * 501}
    )
    assert_error(await answer(response, 400), "invalid_field", "reason")
    # A target no longer in routes.toml but still paused in Redis can be resumed.
    pause_target(redis_client, "retired", "gone")
    body = await answer(await client.post("/api/v1/targets/retired/resume", headers=WRITE), 200)
    assert body["changed"] is True


async def test_sources_have_counts_their_newest_event_and_settings(
    client: Client, redis_client: redis.Redis
) -> None:
    ids = seed_listing(redis_client)
    redis_client.hset(keys.source_stats_key("shop"), mapping={"received": 2, "unrouted": 1})
    response = await client.get("/api/v1/sources", headers=READ)
    text = (await response.read()).decode()
    fellow, shop = orjson.loads(text)["sources"]
    assert fellow["last_event"]["id"] == ids["analytics"]
    assert fellow["config"]["token_env"] == "FELLOW_TOKEN"
    assert fellow["config"]["path"] == "/hooks/fellow/{token}"
    assert (shop["received"], shop["unrouted"]) == (2, 1)
    assert shop["last_event"]["id"] == ids["unrouted"]
    assert ROUTE_SECRETS["FELLOW_TOKEN"] not in text


async def test_routes_are_the_file_as_data_with_secrets_as_variable_names(
    client: Client,
) -> None:
    response = await client.get("/api/v1/routes", headers=READ)
    text = (await response.read()).decode()
    body = orjson.loads(text)
    assert sorted(body["sources"]) == ["fellow", "shop"]
    assert body["routes"][0] == {
        "source": "fellow",
        "events": ["COURSEMEMBER_*"],
        "targets": ["crm", "analytics"],
    }
    assert body["targets"]["crm"]["signing_secret_env"] == ["CRM_WHSEC"]
    assert not any(value in text for value in ROUTE_SECRETS.values())


async def test_status_is_what_relay_status_reads(client: Client, redis_client: redis.Redis) -> None:
    seed_dead(redis_client, "crm")
    body = await answer(await client.get("/api/v1/status", headers=READ), 200)
    assert [t["name"] for t in body["targets"]] == ["crm", "analytics"]
    assert body["targets"][0]["dead_letters"] == 1
    assert body["queue"]["name"] == "relay"


# -- bad input and limits ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("source=" + "s" * 201, "source"),
        ("source=", "source"),
        ("type=%01", "type"),
        ("state=lost", "state"),
        ("received_from=last%20tuesday", "received_from"),
        ("received_to=nan", "received_to"),
        ("id_prefix=evt%2A", "id_prefix"),
        ("cursor=garbage", "cursor"),
        ("colour=red", "colour"),
        ("source=a&source=b", "source"),
    ],
)
async def test_bad_filters_are_400_naming_the_field(client: Client, query: str, field: str) -> None:
    response = await client.get(f"/api/v1/events?{query}", headers=READ)
    assert_error(await answer(response, 400), "invalid_field", field)


async def test_redis_down_is_503_in_the_error_shape(aiohttp_client: Any) -> None:
    from tests.support.redis_server import free_port

    client = await aiohttp_client(admin_app(f"redis://127.0.0.1:{free_port()}/0"))
    response = await client.get("/api/v1/events", headers=READ)
    assert_error(await answer(response, 503), "redis_unavailable")


# -- one implementation under the CLI and the API ----------------------------------------------


@pytest.mark.parametrize(
    ("query", "flags"),
    [
        ("", []),
        ("source=shop", ["--source", "shop"]),
        ("type=COURSEMEMBER_*", ["--event-type", "COURSEMEMBER_*"]),
        ("target=crm&state=dead", ["--target", "crm", "--state", "dead"]),
        ("state=unrouted", ["--state", "unrouted"]),
        ("received_from=2026-09-21T14:10:00Z", ["--since", "2026-09-21T14:10:00Z"]),
        ("received_to=2026-09-21T14:10:00Z", ["--until", "2026-09-21T14:10:00Z"]),
        ("id_prefix=evt_06", ["--id-prefix", "evt_06"]),
    ],
)
async def test_the_api_and_relay_events_list_give_the_same_events(
    client: Client,
    redis_client: redis.Redis,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    query: str,
    flags: list[str],
) -> None:
    from relay.cli.main import main

    seed_listing(redis_client)
    api = await answer(await client.get(f"/api/v1/events?{query}", headers=READ), 200)
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert main(["events", "list", "--json", *flags]) == 0
    cli = orjson.loads(capsys.readouterr().out)
    assert api["events"] == cli["events"]
    assert api["events"]  # each filter matches something in the seeded listing


async def test_cursor_pages_walk_the_minute_lists_then_older_events_while_events_arrive(
    client: Client, redis_client: redis.Redis
) -> None:
    now = time.time()
    older = [seed_event(redis_client, received=now - 900 - n) for n in range(3)]  # sorted set
    stored = [index_event(n, now - 40 * n) for n in range(6)]  # over two to four minutes
    commit_events(redis_client, list(reversed(stored)), now)
    seen: list[str] = []
    cursor = None
    for n in range(20):
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = await answer(await client.get(f"/api/v1/events?{query}", headers=READ), 200)
        seen += [e["id"] for e in body["events"]]
        # A new event between pages goes to the end of the newest minute: never listed.
        commit_events(redis_client, [index_event(100 + n, now + 1)], now)
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [e.id for e in stored] + older
    bad = await client.get("/api/v1/events?cursor=bWludXRlfHh8MQ", headers=READ)
    assert_error(await answer(bad, 400), "invalid_field", "cursor")
