"""A relay upgraded over the snapshot's old layout (one hash, relay:rc:{source}:members) reads it
as the last pass's snapshot: nothing the old snapshot held is synthesized, and the old hash is
converted into the per-course layout once. Real redis-server, the fake Fellow API."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from relay.config.loading import parse_routes
from relay.config.model import RouteTable
from relay.store import keys
from relay.store.reconcile import Kind, Membership, MemberState, PassOutcome, PassRecord
from relay.store.reconcile import record_pass as write_pass_record
from relay.store.reconcile_legacy import convert_legacy
from relay.store.reconcile_snapshot import read_containers, read_pending, read_snapshot
from tests.support.fellow_api import KEY, FellowApiServer
from tests.support.stored import indexed
from worker.fellow.reconcile import PassResult, run_pass

pytestmark = pytest.mark.needs_redis_server

ROUTES = """
[sources.fellow]
kind = "form"
[sources.fellow.reconcile]
api = "{api}"
api_key_env = "FELLOW_API_KEY"
grace = "5m"

[targets.crm]
url = "http://127.0.0.1:9/crm"

[[routes]]
source = "fellow"
events = ["*"]
targets = ["crm"]
"""
T0 = 1_800_000_000.0
GRACE = 300.0

#: The old layout as versions before 2026-12 wrote it: "{kind}:{id}:{member}" -> state.
OLD_SNAPSHOT = {
    "course:7:a": "enrolled",
    "course:7:b": "completed",
    "course:7:z": "enrolled",  # removed since: its webhook never came
    "course:8:c": "enrolled",
    "program:p1:a": "completed",
    "course:8:bad": "graduated",  # a state no version wrote: skipped, as the old reader did
    "nonsense": "enrolled",  # not a membership: skipped
}


@pytest.fixture
def table(fellow_api: FellowApiServer) -> RouteTable:
    env = {"FELLOW_API_KEY": KEY}
    return parse_routes(ROUTES.format(api=fellow_api.url), "routes.toml", env)


def old_layout(conn: redis.Redis, fields: dict[str, str]) -> None:
    """What an old relay left: its snapshot hash, a pending change and a good last pass."""
    conn.hset(keys.reconcile_legacy_key("fellow"), mapping=fields)
    conn.hset(keys.reconcile_pending_key("fellow"), "COURSEMEMBER_CREATED course:8:d", T0 - 400)
    write_pass_record(conn, "fellow", PassRecord(T0 - 900, PassOutcome.OK, ok_at=T0 - 900), {})


def reconcile(conn: redis.Redis, table: RouteTable, now: float, **kw: Any) -> PassResult:
    return run_pass(conn, table, table.sources["fellow"], retention=86400, now=now, **kw)


def names(changes: Any) -> list[str]:
    return [c.name for c in changes]


def test_an_upgrade_over_the_old_layout_synthesizes_only_what_the_old_snapshot_lacked(
    redis_client: redis.Redis, fellow_api: FellowApiServer, table: RouteTable
) -> None:
    fellow_api.enrol("course", "7", "a")
    fellow_api.enrol("course", "7", "b", completed=True)
    fellow_api.enrol("course", "8", "c")
    fellow_api.enrol("course", "8", "d")  # new, pending since an old pass: now missed
    fellow_api.enrol("program", "p1", "a", completed=True)
    old_layout(redis_client, OLD_SNAPSHOT)

    dry = reconcile(redis_client, table, T0, dry_run=True)  # converts, decides, commits nothing
    assert names(dry.plan.missed) == ["COURSEMEMBER_CREATED course:8:d"]
    with capture_logs() as logs:
        result = reconcile(redis_client, table, T0)
    assert not result.baseline
    assert names(c for c, _ in result.synthesized) == ["COURSEMEMBER_CREATED course:8:d"]
    assert names(result.plan.waiting) == ["COURSEMEMBER_DELETED course:7:z"]
    assert not [line for line in logs if "converted" in line["event"]]  # the dry run did it

    assert not redis_client.exists(keys.reconcile_legacy_key("fellow"))
    assert read_containers(redis_client, "fellow") == {
        (Kind.COURSE, "7"),
        (Kind.COURSE, "8"),
        (Kind.PROGRAM, "p1"),
    }
    snapshot = {m.to_field(): str(s) for m, s in read_snapshot(redis_client, "fellow").items()}
    assert snapshot == {
        "course:7:a": "enrolled",
        "course:7:b": "completed",
        "course:7:z": "enrolled",  # its removal still waits for its webhook
        "course:8:c": "enrolled",
        "course:8:d": "enrolled",
        "program:p1:a": "completed",
    }
    assert read_pending(redis_client, "fellow") == {"COURSEMEMBER_DELETED course:7:z": T0}

    later = reconcile(redis_client, table, T0 + GRACE)
    assert names(c for c, _ in later.synthesized) == ["COURSEMEMBER_DELETED course:7:z"]
    assert len(indexed(redis_client)) == 2  # d's enrolment and z's removal, no more


def test_the_pass_logs_the_conversion_once(
    redis_client: redis.Redis, fellow_api: FellowApiServer, table: RouteTable
) -> None:
    fellow_api.enrol("course", "7", "a")
    old_layout(redis_client, {"course:7:a": "enrolled"})
    with capture_logs() as logs:
        reconcile(redis_client, table, T0)
        reconcile(redis_client, table, T0 + 60)
    converted = [line for line in logs if "converted" in line["event"]]
    assert converted == [
        {
            "event": "reconcile: snapshot converted to the per-course layout",
            "source": "fellow",
            "memberships": 1,
            "log_level": "info",
        }
    ]


def test_the_conversion_merges_into_the_new_layout(redis_client: redis.Redis) -> None:
    new_key = keys.reconcile_container_key("fellow", "course:7")
    redis_client.hset(new_key, mapping={"a": "enrolled", "y": "enrolled"})
    redis_client.sadd(keys.reconcile_containers_key("fellow"), "course:7")
    redis_client.hset(keys.reconcile_legacy_key("fellow"), "course:7:a", "completed")
    assert convert_legacy(redis_client, "fellow") == 1
    assert redis_client.hgetall(new_key) == {b"a": b"completed", b"y": b"enrolled"}
    assert convert_legacy(redis_client, "fellow") == 0  # once: nothing left to convert


def test_two_processes_converting_at_once_move_every_membership_once(
    redis_client: redis.Redis, redis_url: str
) -> None:
    old = {
        f"{kind}:{c}:m{m}": "completed" if m % 5 == 0 else "enrolled"
        for kind in ("course", "program")
        for c in range(40)
        for m in range(250)
    }
    redis_client.hset(keys.reconcile_legacy_key("fellow"), mapping=old)
    start = threading.Barrier(2)

    def convert() -> int:
        conn = redis.Redis.from_url(redis_url)
        start.wait(timeout=10)
        return convert_legacy(conn, "fellow")

    with ThreadPoolExecutor(2) as pool:
        moved = list(pool.map(lambda _: convert(), range(2)))
    # One of them moved everything; the other found it gone (or its EXEC failed and it
    # looked again): the sum is the old hash's size, never twice it.
    assert sorted(moved) == [0, len(old)]
    assert not redis_client.exists(keys.reconcile_legacy_key("fellow"))
    expected = {
        Membership(Kind(k), c, m): MemberState(v)
        for f, v in old.items()
        for k, c, m in [f.split(":")]
    }
    assert read_snapshot(redis_client, "fellow") == expected
    assert len(read_containers(redis_client, "fellow")) == 80
