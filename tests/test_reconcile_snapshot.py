"""The snapshot's store, one hash per course or program, and a course gone from the API."""

from __future__ import annotations

import pytest
import redis

from relay.config.loading import parse_routes
from relay.store import keys
from relay.store.reconcile import Kind, Membership, MemberState
from relay.store.reconcile_snapshot import (
    apply_changes,
    read_container,
    read_containers,
    read_pending,
    read_snapshot,
    replace_container,
    write_pending,
)
from tests.support.fellow_api import KEY, FellowApiServer
from worker.fellow.reconcile import run_pass

pytestmark = pytest.mark.needs_redis_server

C, E = MemberState.COMPLETED, MemberState.ENROLLED


def ship(cid: str, member: str, kind: Kind = Kind.COURSE) -> Membership:
    return Membership(kind, cid, member)


def test_replace_then_apply_changes_keeps_one_hash_per_container(
    redis_client: redis.Redis,
) -> None:
    replace_container(
        redis_client, "fellow", Kind.COURSE, "7", {ship("7", "a"): E, ship("7", "b"): C}
    )
    replace_container(
        redis_client, "fellow", Kind.PROGRAM, "p1", {ship("p1", "a", Kind.PROGRAM): E}
    )
    assert read_containers(redis_client, "fellow") == {(Kind.COURSE, "7"), (Kind.PROGRAM, "p1")}
    assert redis_client.hgetall(keys.reconcile_container_key("fellow", "course:7")) == {
        b"a": b"enrolled",
        b"b": b"completed",
    }
    # A replace drops what the API no longer shows.
    replace_container(redis_client, "fellow", Kind.COURSE, "7", {ship("7", "b"): C})
    assert read_container(redis_client, "fellow", Kind.COURSE, "7") == {ship("7", "b"): C}

    apply_changes(
        redis_client,
        "fellow",
        {ship("7", "b"): None, ship("8", "z"): E, ship("p1", "a", Kind.PROGRAM): C},
    )
    # course 7 lost its last member: its hash and its index entry are gone.
    assert read_containers(redis_client, "fellow") == {(Kind.COURSE, "8"), (Kind.PROGRAM, "p1")}
    assert not redis_client.exists(keys.reconcile_container_key("fellow", "course:7"))
    assert read_snapshot(redis_client, "fellow") == {
        ship("8", "z"): E,
        ship("p1", "a", Kind.PROGRAM): C,
    }
    replace_container(redis_client, "fellow", Kind.COURSE, "8", {})
    assert read_containers(redis_client, "fellow") == {(Kind.PROGRAM, "p1")}


def test_pending_is_replaced_whole(redis_client: redis.Redis) -> None:
    write_pending(redis_client, "fellow", {"COURSEMEMBER_CREATED course:7:a": 1.5})
    write_pending(redis_client, "fellow", {"COURSEMEMBER_DELETED course:7:b": 2.5})
    assert read_pending(redis_client, "fellow") == {"COURSEMEMBER_DELETED course:7:b": 2.5}
    write_pending(redis_client, "fellow", {})
    assert not redis_client.exists(keys.reconcile_pending_key("fellow"))


ROUTES = """
[sources.fellow]
kind = "form"
[sources.fellow.reconcile]
api = "{api}"
api_key_env = "FELLOW_API_KEY"

[targets.crm]
url = "http://127.0.0.1:9/crm"

[[routes]]
source = "fellow"
events = ["*"]
targets = ["crm"]
"""


def test_a_course_gone_from_the_api_removes_each_of_its_members(
    redis_client: redis.Redis, fellow_api: FellowApiServer
) -> None:
    table = parse_routes(ROUTES.format(api=fellow_api.url), "routes.toml", {"FELLOW_API_KEY": KEY})
    for member in ("a", "b"):
        fellow_api.enrol("course", "7", member, completed=member == "b")
    fellow_api.enrol("course", "8", "a")
    fellow_api.enrol("course", "8", "c", completed=True)
    run_pass(redis_client, table, table.sources["fellow"], retention=86400, now=1000.0)
    del fellow_api.state[("course", "7")]  # the course is no longer listed at all
    asked_before = len(fellow_api.paths)
    result = run_pass(
        redis_client, table, table.sources["fellow"], retention=86400, now=1000.0, backfill=True
    )
    assert [c.name for c, _ in result.synthesized] == [
        "COURSEMEMBER_DELETED course:7:a",
        "COURSEMEMBER_DELETED course:7:b",
    ]
    assert read_containers(redis_client, "fellow") == {(Kind.COURSE, "8")}
    # Coursemember requests only for what may still change: c completed, and that is final.
    asked = [p for p in fellow_api.paths[asked_before:] if p.endswith("/coursemember")]
    assert asked == ["/api/v1/courses/8/members/a/coursemember"]
