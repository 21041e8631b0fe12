"""Fellow ids that are not plain path segments (`/`, `?`, a space): a reconcile pass and
enrichment both quote each id as one segment (worker.fellow.api.member_path), so they read the
member's own record. Real redis-server, the fake Fellow API, real targets, the real delivery job."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
import redis

from relay.config.loading import parse_routes
from relay.config.model import RouteTable
from relay.store import keys
from relay.store.reconcile import Kind
from tests.support.fellow_api import KEY, FellowApiServer
from tests.support.seed_events import make_event, store_events
from tests.support.targets import TargetServer
from worker import jobs
from worker.fellow.api import member_path, members_path
from worker.fellow.reconcile import PassResult, run_pass

pytestmark = pytest.mark.needs_redis_server

ROUTES = """
[sources.fellow]
kind = "form"
[sources.fellow.reconcile]
api = "{api}"
api_key_env = "FELLOW_API_KEY"

[targets.crm]
url = "{targets}/ok/crm"
enrich = "fellow"

[[routes]]
source = "fellow"
events = ["*"]
targets = ["crm"]
"""
T0 = 1_800_000_000.0
COURSE, MEMBER = "a/b", "m 1?x"
QUOTED = "/api/v1/courses/a%2Fb/members/m%201%3Fx/coursemember"
RECORD = {"completed": True, "score": 80, "success": True}  # the fake API's answer


def routes(api: FellowApiServer, targets: TargetServer) -> RouteTable:
    text = ROUTES.format(api=api.url, targets=targets.url("").rstrip("/"))
    return parse_routes(text, "routes.toml", {"FELLOW_API_KEY": KEY})


def reconcile(conn: redis.Redis, table: RouteTable, **kw: Any) -> PassResult:
    return run_pass(conn, table, table.sources["fellow"], retention=86400.0, now=T0, **kw)


def member_requests(api: FellowApiServer) -> list[str]:
    return [p for p in api.paths if p.endswith("member")]


def test_each_id_is_one_quoted_segment() -> None:
    assert members_path(Kind.COURSE, COURSE) == "/api/v1/courses/a%2Fb/members"
    assert member_path(Kind.COURSE, COURSE, MEMBER) == QUOTED
    assert (
        member_path(Kind.PROGRAM, "50%#", "m")
        == "/api/v1/programs/50%25%23/members/m/programmember"
    )


def test_dot_segments_are_encoded_not_read_as_this_or_the_parent() -> None:
    assert members_path(Kind.COURSE, "..") == "/api/v1/courses/%2E%2E/members"
    assert member_path(Kind.COURSE, "..", ".") == "/api/v1/courses/%2E%2E/members/%2E/coursemember"
    assert member_path(Kind.COURSE, "...", ".a") == "/api/v1/courses/.../members/.a/coursemember"


def test_a_pass_asks_for_a_course_named_dot_dot_not_the_parent(
    redis_client: redis.Redis,
    fellow_api: FellowApiServer,
    targets: TargetServer,
) -> None:
    # Unencoded, `/courses/../members/./coursemember` is `/members/coursemember`: another
    # resource, asked with relay's API key.
    table = routes(fellow_api, targets)
    fellow_api.enrol("course", "..", ".")

    baseline = reconcile(redis_client, table)

    assert baseline.error is None
    assert baseline.memberships == 1
    assert "/api/v1/courses/%2E%2E/members/%2E/coursemember" in member_requests(fellow_api)
    assert not [p for p in fellow_api.paths if p.startswith("/api/v1/members")]


def test_a_pass_reads_such_ids_and_synthesizes_their_completion(
    redis_client: redis.Redis,
    fellow_api: FellowApiServer,
    targets: TargetServer,
    use_routes: Any,
) -> None:
    table = routes(fellow_api, targets)
    fellow_api.enrol("course", COURSE, MEMBER)
    fellow_api.enrol("course", COURSE, "m 1")  # a neighbour the unquoted `?` would cut to
    baseline = reconcile(redis_client, table)
    assert baseline.error is None
    assert baseline.memberships == 2
    fellow_api.enrol("course", COURSE, MEMBER, completed=True)

    result = reconcile(redis_client, table, backfill=True)  # grace 0: synthesized at once

    assert result.error is None
    made = {c.name: event_id for c, event_id in result.synthesized}
    assert sorted(made) == [f"COURSEMEMBER_COMPLETED course:{COURSE}:{MEMBER}"]
    assert QUOTED in member_requests(fellow_api)
    [event_id] = made.values()
    assert orjson.loads(redis_client.get(keys.enrichment_key(event_id)) or b"") == RECORD

    asked = len(member_requests(fellow_api))
    use_routes(table)
    jobs.deliver_due()
    [got] = targets.by_name("crm")
    body = orjson.loads(got.body)
    assert (body["courseId"], body["memberId"]) == (COURSE, MEMBER)
    assert body["coursemember"] == RECORD
    assert len(member_requests(fellow_api)) == asked  # the pass's record, not fetched again


def test_enrichment_fetches_the_record_of_such_ids(
    redis_client: redis.Redis,
    fellow_api: FellowApiServer,
    targets: TargetServer,
    use_routes: Any,
) -> None:
    fellow_api.enrol("course", COURSE, MEMBER, completed=True)
    fellow_api.enrol("course", COURSE, "m 1")  # not completed: the wrong record would say so
    use_routes(routes(fellow_api, targets))
    form = {"courseId": COURSE, "memberId": MEMBER, "event": "COURSEMEMBER_COMPLETED"}
    event = make_event(
        ("crm",),
        body=urlencode(form).encode(),
        content_type="application/x-www-form-urlencoded",
        source="fellow",
        event_type="COURSEMEMBER_COMPLETED",
        headers=(),
    )
    store_events(redis_client, [event], enqueue=False)

    jobs.deliver_due()

    [got] = targets.by_name("crm")
    assert orjson.loads(got.body) == {**form, "coursemember": RECORD}
    assert member_requests(fellow_api) == [QUOTED]
