"""Reconciliation passes against the fake Fellow API (tests/support/fellow_api.py), real Redis.

A pass is run with an explicit `now`, so `grace` is crossed without waiting; synthesized events
are delivered by the real delivery job (worker.jobs) to loopback targets.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from relay.config.loading import parse_routes
from relay.config.model import RouteTable
from relay.core.states import DeliveryState
from relay.store import keys
from relay.store.reconcile import read_pass
from relay.store.reconcile_snapshot import read_snapshot
from tests.support.fellow_api import KEY, FellowApiServer
from tests.support.receiver import receiver_server
from tests.support.stored import field, indexed
from tests.support.targets import TargetServer
from worker import jobs
from worker.fellow.reconcile import PassBusy, PassResult, run_pass

pytestmark = pytest.mark.needs_redis_server

TOKEN = "fellow-token-0123456789abcdef"
ROUTES = """
[sources.fellow]
kind = "form"
token_env = "FELLOW_TOKEN"
call_once = true

[sources.fellow.reconcile]
api = "{api}"
api_key_env = "FELLOW_API_KEY"
grace = "5m"
page_size = 2
concurrency = 3
timeout = "1s"

[targets.crm]
url = "{targets}/ok/crm"

[[routes]]
source = "fellow"
events = ["COURSEMEMBER_*", "PROGRAMMEMBER_*"]
targets = ["crm"]
"""
ENV = {"FELLOW_TOKEN": TOKEN, "FELLOW_API_KEY": KEY}
T0 = 1_800_000_000.0
GRACE = 300.0


@pytest.fixture
def table(fellow_api: FellowApiServer, targets: TargetServer) -> RouteTable:
    text = ROUTES.format(api=fellow_api.url, targets=targets.url("").rstrip("/"))
    return parse_routes(text, "routes.toml", ENV)


def reconcile(conn: redis.Redis, table: RouteTable, now: float, **kw: Any) -> PassResult:
    return run_pass(conn, table, table.sources["fellow"], retention=86400, now=now, **kw)


def events_of(result: PassResult) -> list[str]:
    return [f"{c.event} {c.membership.to_field()}" for c, _ in result.synthesized]


def test_first_pass_records_what_exists_and_synthesizes_nothing(
    redis_client: redis.Redis, fellow_api: FellowApiServer, table: RouteTable
) -> None:
    for member in ("m1", "m2", "m3"):  # three members: two pages of two
        fellow_api.enrol("course", "7", member, completed=member == "m2")
    fellow_api.enrol("program", "p1", "m1")
    result = reconcile(redis_client, table, T0)
    assert result.baseline
    assert result.error is None
    assert result.synthesized == ()
    assert result.memberships == 4
    snapshot = {m.to_field(): str(s) for m, s in read_snapshot(redis_client, "fellow").items()}
    assert snapshot == {
        "course:7:m1": "enrolled",
        "course:7:m2": "completed",
        "course:7:m3": "enrolled",
        "program:p1:m1": "enrolled",
    }
    assert len(indexed(redis_client)) == 0
    assert read_pass(redis_client, "fellow").outcome == "baseline"
    assert any("offset=2&limit=2" in p for p in fellow_api.paths)  # paged


def test_missed_enrolment_completion_and_removal_synthesized_after_grace_not_before(
    redis_client: redis.Redis,
    fellow_api: FellowApiServer,
    table: RouteTable,
    targets: TargetServer,
    use_routes: Any,
) -> None:
    fellow_api.enrol("course", "7", "m1")
    fellow_api.enrol("program", "p1", "m2")
    reconcile(redis_client, table, T0)
    fellow_api.enrol("course", "7", "m9")  # enrolment never received
    fellow_api.enrol("program", "p1", "m2", completed=True)  # completion never received
    fellow_api.remove("course", "7", "m1")  # removal never received

    early = reconcile(redis_client, table, T0 + 60)
    assert early.synthesized == ()
    assert len(early.plan.waiting) == 3
    inside = reconcile(redis_client, table, T0 + 60 + GRACE - 1)
    assert inside.synthesized == ()

    due = reconcile(redis_client, table, T0 + 60 + GRACE)
    assert sorted(events_of(due)) == [
        "COURSEMEMBER_CREATED course:7:m9",
        "COURSEMEMBER_DELETED course:7:m1",
        "PROGRAMMEMBER_COMPLETED program:p1:m2",
    ]
    use_routes(table)
    jobs.deliver_due()
    bodies = sorted(r.body for r in targets.received)
    assert bodies == [
        b"courseId=7&memberId=m1&event=COURSEMEMBER_DELETED",
        b"courseId=7&memberId=m9&event=COURSEMEMBER_CREATED",
        b"programId=p1&memberId=m2&event=PROGRAMMEMBER_COMPLETED",
    ]
    for got in targets.received:
        assert got.headers["x-relay-reconciled"] == "1"
        assert got.headers["content-type"] == "application/x-www-form-urlencoded"
    # Nothing more on the next pass: the snapshot caught up.
    assert reconcile(redis_client, table, T0 + 2 * GRACE).synthesized == ()


def test_enrolled_and_completed_while_down_gives_both_events_in_order(
    redis_client: redis.Redis, fellow_api: FellowApiServer, table: RouteTable
) -> None:
    fellow_api.enrol("course", "7", "m1")
    reconcile(redis_client, table, T0)
    fellow_api.enrol("course", "8", "m5", completed=True)
    reconcile(redis_client, table, T0 + 1)
    result = reconcile(redis_client, table, T0 + 1 + GRACE)
    assert events_of(result) == [
        "COURSEMEMBER_CREATED course:8:m5",
        "COURSEMEMBER_COMPLETED course:8:m5",
    ]


async def test_late_webhook_inside_grace_is_not_doubled_and_one_after_synthesis_is_a_duplicate(
    redis_client: redis.Redis,
    fellow_api: FellowApiServer,
    table: RouteTable,
    targets: TargetServer,
    use_routes: Any,
    aiohttp_client: Any,
    redis_url: str,
) -> None:
    from relay.config.settings import Settings
    from relay.receiver.app import create_app

    client = await aiohttp_client(
        await receiver_server(create_app(Settings(redis_url=redis_url), table))
    )
    hook = f"/hooks/fellow/{TOKEN}"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    await asyncio.to_thread(reconcile, redis_client, table, T0)
    fellow_api.enrol("course", "7", "late")
    fellow_api.enrol("course", "7", "lost")
    first = await asyncio.to_thread(reconcile, redis_client, table, T0 + 10)
    assert len(first.plan.waiting) == 2

    # The late webhook arrives inside grace: the pass takes it as received.
    late = await client.post(
        hook, data=b"courseId=7&memberId=late&event=COURSEMEMBER_CREATED", headers=form
    )
    assert late.status == 202
    assert (await late.json())["duplicate"] is False
    done = await asyncio.to_thread(reconcile, redis_client, table, T0 + 10 + GRACE)
    assert events_of(done) == ["COURSEMEMBER_CREATED course:7:lost"]
    assert [c.membership.member for c in done.plan.seen] == ["late"]

    # The lost one's real webhook finally arrives, after its event was synthesized.
    again = await client.post(
        hook, data=b"courseId=7&memberId=lost&event=COURSEMEMBER_CREATED", headers=form
    )
    assert again.status == 202
    reply = await again.json()
    assert reply["duplicate"] is True
    assert reply["events"][0]["duplicate_of"] == done.synthesized[0][1]

    use_routes(table)
    await asyncio.to_thread(jobs.deliver_due)
    bodies = sorted(r.body for r in targets.received)
    assert bodies == [
        b"courseId=7&memberId=late&event=COURSEMEMBER_CREATED",
        b"courseId=7&memberId=lost&event=COURSEMEMBER_CREATED",
    ]
    assert field(redis_client, reply["id"], "s:crm") == DeliveryState.DUPLICATE


def test_backfill_synthesizes_what_exists_at_once_except_what_was_received(
    redis_client: redis.Redis, fellow_api: FellowApiServer, table: RouteTable
) -> None:
    fellow_api.enrol("course", "7", "m1", completed=True)
    fellow_api.enrol("program", "p1", "m2")
    result = reconcile(redis_client, table, T0, backfill=True)
    assert not result.baseline
    assert events_of(result) == [
        "COURSEMEMBER_CREATED course:7:m1",
        "COURSEMEMBER_COMPLETED course:7:m1",
        "PROGRAMMEMBER_CREATED program:p1:m2",
    ]
    assert reconcile(redis_client, table, T0 + 1, backfill=True).synthesized == ()


def test_dry_run_writes_nothing(
    redis_client: redis.Redis, fellow_api: FellowApiServer, table: RouteTable
) -> None:
    fellow_api.enrol("course", "7", "m1")
    result = reconcile(redis_client, table, T0, dry_run=True, backfill=True)
    assert [c.event for c in result.plan.missed] == ["COURSEMEMBER_CREATED"]
    assert result.synthesized == ()
    assert redis_client.keys("relay:*") == []


def test_one_pass_at_a_time(
    redis_client: redis.Redis, fellow_api: FellowApiServer, table: RouteTable
) -> None:
    redis_client.set(keys.reconcile_lock_key("fellow"), "someone-else", ex=60)
    with pytest.raises(PassBusy):
        reconcile(redis_client, table, T0)
    assert fellow_api.requests == 0


@pytest.mark.parametrize(
    ("fault", "error_type", "words"),
    [
        ("401", "AuthError", "401"),
        ("429", "RateLimited", "429"),
        ("timeout", "ApiTimeout", "no answer within 1s"),
        ("shape", "ShapeError", "expected a JSON array"),
    ],
)
def test_a_fault_fails_the_pass_loudly_and_synthesizes_nothing(
    redis_client: redis.Redis,
    fellow_api: FellowApiServer,
    table: RouteTable,
    fault: str,
    error_type: str,
    words: str,
) -> None:
    fellow_api.enrol("course", "7", "m1")
    reconcile(redis_client, table, T0)
    fellow_api.enrol("course", "7", "m2")
    fellow_api.fault, fellow_api.hang = fault, 3.0
    with capture_logs() as logs:
        result = reconcile(redis_client, table, T0 + 2 * GRACE)
    assert result.error is not None
    assert type(result.error).__name__ == error_type
    assert result.synthesized == ()
    [line] = [e for e in logs if e["event"] == "reconcile: pass failed; nothing synthesized"]
    assert line["log_level"] == "error"
    assert line["error_type"] == error_type
    assert words in line["error"]
    assert line["endpoint"].startswith("/api/v1/")
    assert KEY not in repr(logs)
    record = read_pass(redis_client, "fellow")
    assert record.failures == 1
    assert words in record.error
    assert len(indexed(redis_client)) == 0
    assert [m.member for m in read_snapshot(redis_client, "fellow")] == ["m1"]
