"""Rate, concurrency and FIFO per key through the delivery kick, in-process, against a real
redis-server and loopback targets; and the receiver's part: the FIFO key computed at intake."""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import orjson
import pytest
import redis

from relay.config.control import order_keys
from relay.config.filters import EventFields
from relay.config.loading import parse_routes
from relay.config.model import RouteTable
from relay.receiver.accept import Accepted, Request, accept
from relay.store import keys
from relay.store.commit import commit_arguments
from relay.store.deliveries import Record, Store, Wanted
from relay.store.queue import make_queue
from relay.store.records import DeliveryState, Event
from tests.support.seed_events import make_event, routes_toml
from tests.support.stored import due, field
from tests.support.targets import Received, TargetServer
from worker import jobs, recording
from worker.outcome import next_step

#: Each test drives the kick itself, at most this often, until what it waits for has happened.
KICKS = 200


@pytest.fixture(autouse=True)
def fixed_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every retry waits its whole (short) backoff cap: no jitter."""
    monkeypatch.setattr(recording, "next_step", partial(next_step, uniform=lambda low, high: high))


def table_for(targets: Mapping[str, Mapping[str, Any]]) -> RouteTable:
    return parse_routes(routes_toml(targets), "routes.toml", {})


@dataclasses.dataclass(frozen=True)
class Batch:
    events: Sequence[Event]
    dedupe_window: int = 0


def take_in(conn: redis.Redis, table: RouteTable, bodies: Sequence[dict[str, Any]]) -> list[Event]:
    """Events with these JSON bodies, routed and keyed by `table`, committed in order."""
    events = []
    for body in bodies:
        event = make_event(["a"], body=orjson.dumps(body))
        fields = EventFields(body, False, {})
        events.append(dataclasses.replace(event, order=order_keys(table.targets, ["a"], fields)))
    call = commit_arguments([Batch(events)], 3600, time.time(), make_queue(conn).key)
    conn.execute_command(*call.command())
    return events


def kick_until(conn: redis.Redis, done: Any, pause: float = 0.02) -> None:
    """Run the kick (bounded) until `done()`; what it waits for must have happened."""
    for _ in range(KICKS):
        jobs.deliver_due()
        if done():
            return
        time.sleep(pause)
    raise AssertionError("not done after every kick")


def delivered(conn: redis.Redis, events: Sequence[Event], target: str = "a") -> bool:
    return all(field(conn, e.id, f"s:{target}") == DeliveryState.DELIVERED for e in events)


def numbers(received: Sequence[Received]) -> list[tuple[int, int]]:
    """(n, status) of each request, in arrival order."""
    return [(orjson.loads(r.body)["n"], r.status) for r in received]


def test_each_key_is_delivered_in_order_though_every_first_attempt_fails(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    spec = {
        "url": targets.url("/fail/a/1"),  # each event's first request answers 500
        "order": "body:memberId",
        "retry": {"attempts": 5, "first": "50ms", "max": "50ms"},
    }
    table = table_for({"a": spec})
    use_routes(table)
    bodies = [{"memberId": f"m{i % 3}", "n": i} for i in range(12)]
    events = take_in(redis_client, table, bodies)
    kick_until(redis_client, lambda: delivered(redis_client, events))

    per_key: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for n, status in numbers(targets.by_name("a")):
        per_key[f"m{n % 3}"].append((n, status))
    for key, seen in per_key.items():
        mine = [b["n"] for b in bodies if b["memberId"] == key]
        # Each event: its failed first request, then its delivery, then the next event's.
        assert seen == [(n, s) for n in mine for s in (500, 200)], key
    assert redis_client.exists(keys.order_queue_key("a", events[0].order[0])) == 0


def test_a_retrying_head_holds_back_its_own_key_only(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    table = table_for({"a": {"url": targets.url("/ok/a"), "order": "body:memberId"}})
    use_routes(table)
    bodies = [
        {"memberId": "stuck", "n": 0},
        {"memberId": "stuck", "n": 1},
        {"memberId": "other", "n": 2},
        {"n": 3},  # no key: unordered
        {"memberId": "other", "n": 4},
    ]
    events = take_in(redis_client, table, bodies)
    # The head of "stuck" failed an attempt and waits an hour for its retry.
    store = Store(redis_client, 3600)
    now = time.time()
    assert events[0].id in store.claim([Wanted("a", 1, now + 30)], 1, now).ids["a"]
    retry = Record(events[0].id, "a", 1, DeliveryState.RETRYING, "", None, None, True, True)
    assert store.record(dataclasses.replace(retry, due_at=now + 3600), now) == 1

    kick_until(redis_client, lambda: delivered(redis_client, events[2:]))
    assert [n for n, _ in numbers(targets.by_name("a"))] == [2, 3, 4]
    assert field(redis_client, events[1].id, "s:a") == DeliveryState.PENDING
    assert set(due(redis_client, "a")) == {events[0].id}  # the next of its key is not due


def test_concurrency_one_never_has_two_requests_open(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    use_routes(table_for({"a": {"url": targets.url("/delay/a/0.05"), "concurrency": 1}}))
    events = take_in(
        redis_client, table_for({"a": {"url": "http://x"}}), [{"n": i} for i in range(6)]
    )
    kick_until(redis_client, lambda: delivered(redis_client, events))
    assert targets.max_open["a"] == 1
    assert len(targets.by_name("a")) == 6
    assert redis_client.zcard(keys.in_flight_key("a")) == 0


def test_without_concurrency_the_same_deliveries_overlap(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    """The control of the test above: it would see an overlap if there were one."""
    table = table_for({"a": {"url": targets.url("/delay/a/0.2")}})
    use_routes(table)
    events = take_in(redis_client, table, [{"n": i} for i in range(6)])
    kick_until(redis_client, lambda: delivered(redis_client, events))
    assert targets.max_open["a"] > 1


def test_a_kick_held_by_a_rate_waits_for_it_instead_of_returning(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    table = table_for({"a": {"url": targets.url("/ok/a"), "rate": "20/s"}})
    use_routes(table)
    events = take_in(redis_client, table, [{"n": i} for i in range(8)])
    jobs.deliver_due()  # one kick: it naps between starts rather than leaving them to the poller
    assert delivered(redis_client, events)
    assert {r.headers["x-relay-attempt"] for r in targets.by_name("a")} == {"1"}
    assert redis_client.exists(keys.rate_key("a")) == 1


# --- intake -------------------------------------------------------------------------------------

INTAKE_ROUTES = """
[sources.shop]
kind = "json"

[targets.ordered]
url = "https://a.example.com/"
order = "body:member.id"

[targets.serial]
url = "https://b.example.com/"
order = "target"

[targets.plain]
url = "https://c.example.com/"

[[routes]]
source = "shop"
events = ["*"]
targets = ["ordered", "serial", "plain"]
"""


def accepted_event(body: dict[str, Any]) -> Event:
    table = parse_routes(INTAKE_ROUTES, "routes.toml", {})
    request = Request("POST", "shop", None, {"content-type": "application/json"}, {})
    outcome = accept(table, request, orjson.dumps(body), event_id="evt_1", received_at=1.0)
    assert isinstance(outcome, Accepted)
    [event] = outcome.events
    return event


def test_the_receiver_computes_each_ordered_targets_key_once() -> None:
    event = accepted_event({"event": "x", "member": {"id": 7}})
    assert event.targets == ("ordered", "serial", "plain")
    ordered, serial, plain = event.order
    assert (len(ordered), serial, plain) == (16, "*", "")
    assert accepted_event({"event": "y", "member": {"id": "7"}}).order == event.order


def test_an_event_without_the_key_is_unordered_where_a_field_is_the_key() -> None:
    assert accepted_event({"event": "x"}).order == ("", "*", "")
