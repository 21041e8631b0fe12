"""A completion that reconciliation synthesizes carries the coursemember/programmember its pass
read: kept as the event's enrichment record (relay:enr:{id}) in the commit, so an enriching
target's delivery does not fetch it again. Real redis-server, the fake Fellow API, real targets,
the real delivery job."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis

from relay.config.loading import parse_routes
from relay.config.model import RouteTable
from relay.ops.events import get_event
from relay.store import keys
from tests.support.fellow_api import KEY, FellowApiServer
from tests.support.targets import TargetServer
from worker import jobs
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
{enrich}

[targets.plain]
url = "{targets}/ok/plain"

[[routes]]
source = "fellow"
events = ["*"]
targets = ["crm", "plain"]
"""
T0 = 1_800_000_000.0
RETENTION = 86400.0
FORM = "application/x-www-form-urlencoded"
RECORD = {"completed": True, "score": 80, "success": True}  # the fake API's answer


def routes(api: FellowApiServer, targets: TargetServer, *, enrich: bool = True) -> RouteTable:
    text = ROUTES.format(
        api=api.url,
        targets=targets.url("").rstrip("/"),
        enrich='enrich = "fellow"' if enrich else "",
    )
    return parse_routes(text, "routes.toml", {"FELLOW_API_KEY": KEY})


def reconcile(conn: redis.Redis, table: RouteTable, **kw: Any) -> PassResult:
    return run_pass(conn, table, table.sources["fellow"], retention=RETENTION, now=T0, **kw)


def member_requests(api: FellowApiServer) -> list[str]:
    return [p for p in api.paths if p.endswith("member")]


def missed_completions(conn: redis.Redis, api: FellowApiServer, table: RouteTable) -> PassResult:
    """A baseline, then completions (and an enrolment) no webhook brought, synthesized at once."""
    api.enrol("course", "7", "m1")
    api.enrol("program", "p1", "m2")
    reconcile(conn, table)
    api.enrol("course", "7", "m1", completed=True)
    api.enrol("program", "p1", "m2", completed=True)
    api.enrol("course", "7", "m3")
    return reconcile(conn, table, backfill=True)  # grace 0: synthesized in this pass


def test_a_synthesized_completion_is_delivered_with_the_record_its_pass_read(
    redis_client: redis.Redis,
    fellow_api: FellowApiServer,
    targets: TargetServer,
    use_routes: Any,
) -> None:
    table = routes(fellow_api, targets)
    result = missed_completions(redis_client, fellow_api, table)
    made = {c.name: event_id for c, event_id in result.synthesized}
    assert sorted(made) == [
        "COURSEMEMBER_COMPLETED course:7:m1",
        "COURSEMEMBER_CREATED course:7:m3",
        "PROGRAMMEMBER_COMPLETED program:p1:m2",
    ]
    asked = len(member_requests(fellow_api))  # the passes' own reads
    # Kept with each completion, for as long as the event; nothing for the enrolment.
    course, program = (
        made["COURSEMEMBER_COMPLETED course:7:m1"],
        made["PROGRAMMEMBER_COMPLETED program:p1:m2"],
    )
    for event_id in (course, program):
        assert orjson.loads(redis_client.get(keys.enrichment_key(event_id)) or b"") == RECORD
        assert 0 < redis_client.ttl(keys.enrichment_key(event_id)) <= RETENTION
    assert not redis_client.exists(keys.enrichment_key(made["COURSEMEMBER_CREATED course:7:m3"]))
    view = get_event(redis_client, course)  # what `relay events show` prints
    assert view is not None
    assert view.enrichment == orjson.dumps(RECORD)

    fellow_api.member_answer = {"completed": True, "score": 99}  # a fetch now would show it
    use_routes(table)
    jobs.deliver_due()

    crm = targets.by_name("crm")
    assert sorted(r.headers["content-type"] for r in crm) == [
        "application/json",
        "application/json",
        "application/x-www-form-urlencoded",  # the enrolment, as Fellow's form
    ]
    enriched = [orjson.loads(r.body) for r in crm if r.headers["content-type"] != FORM]
    bodies = {body["event"]: body for body in enriched}
    assert bodies["COURSEMEMBER_COMPLETED"]["coursemember"] == RECORD
    assert bodies["PROGRAMMEMBER_COMPLETED"]["programmember"] == RECORD
    assert len(member_requests(fellow_api)) == asked  # not fetched again
    assert len(targets.by_name("plain")) == 3


def test_no_record_is_kept_when_no_target_enriches(
    redis_client: redis.Redis, fellow_api: FellowApiServer, targets: TargetServer
) -> None:
    table = routes(fellow_api, targets, enrich=False)
    result = missed_completions(redis_client, fellow_api, table)
    assert len(result.synthesized) == 3
    assert not list(redis_client.scan_iter(keys.enrichment_key("*")))


def test_a_dry_run_keeps_no_record(
    redis_client: redis.Redis, fellow_api: FellowApiServer, targets: TargetServer
) -> None:
    table = routes(fellow_api, targets)
    fellow_api.enrol("course", "7", "m1")
    reconcile(redis_client, table)
    fellow_api.enrol("course", "7", "m1", completed=True)
    result = reconcile(redis_client, table, dry_run=True, backfill=True)
    assert [c.name for c in result.plan.missed] == ["COURSEMEMBER_COMPLETED course:7:m1"]
    assert not list(redis_client.scan_iter(keys.enrichment_key("*")))
