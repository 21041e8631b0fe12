"""Rate, concurrency and order are visible: published by the workers, shown by `relay status`
(text and JSON), the status page and the metrics, with what they hold back."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import orjson
import pytest
import redis
from prometheus_client import CollectorRegistry

from relay.cli.events_output import delivery_json, render_delivery
from relay.cli.status import render_status
from relay.config.loading import parse_routes
from relay.core.metrics import render
from relay.ops import deliveries as ops
from relay.ops.events.view import get_event
from relay.ops.status_page import render_html, summarize
from relay.store import keys
from relay.store.commit import commit_arguments
from relay.store.control import ControlSettings, read_settings
from relay.store.deliveries import Store, Wanted
from relay.store.metrics import RedisCollector
from relay.store.queue import make_queue
from relay.store.records import Event
from tests.support.metrics import samples
from tests.support.seed_events import make_event
from worker.control import limits_of, publish_controls

ROUTES = """
[sources.shop]
kind = "json"

[targets.crm]
url = "https://crm.example.com/"
rate = "2/m"
concurrency = 1

[targets.archive]
url = "https://archive.example.com/"
order = "body:memberId"

[targets.plain]
url = "https://plain.example.com/"

[[routes]]
source = "shop"
events = ["*"]
targets = ["crm", "archive", "plain"]
"""


@dataclasses.dataclass(frozen=True)
class Batch:
    events: Sequence[Event]
    dedupe_window: int = 0


@pytest.fixture
def scene(redis_client: redis.Redis) -> float:
    """Published settings; crm: one attempt in flight, 3 more due (held by its one slot);
    archive: 4 deliveries of one key, the head due, 3 waiting behind it."""
    table = parse_routes(ROUTES, "routes.toml", {})
    assert publish_controls(redis_client, table)
    archive = [
        dataclasses.replace(make_event(["archive"]), order=("k1",)) for _ in range(4)
    ]  # fmt: skip
    crm = [make_event(["crm"]) for _ in range(4)]
    call = commit_arguments(
        [Batch([*archive, *crm])], 3600, time.time(), make_queue(redis_client).key
    )
    redis_client.execute_command(*call.command())
    now = time.time()
    taken = Store(redis_client, 3600).claim(
        [Wanted("crm", 10, now + 60, limits_of(table.targets["crm"]))], 10, now
    )
    assert len(taken.ids["crm"]) == 1
    return now


def test_workers_publish_the_settings_in_force(redis_client: redis.Redis, scene: float) -> None:
    settings = read_settings(redis_client)
    assert set(settings) == {"crm", "archive"}  # plain has none
    crm = settings["crm"]
    assert (crm.rate, crm.interval, crm.concurrency, crm.order) == ("2/m", 30.0, 1, None)
    assert settings["archive"].order == "body:memberId"
    # A reload replaces them: a setting removed is gone.
    table = parse_routes(ROUTES.replace('rate = "2/m"\n', ""), "routes.toml", {})
    publish_controls(redis_client, table)
    assert read_settings(redis_client)["crm"].rate is None
    assert ControlSettings.from_json(b"not json") == ControlSettings()


def test_relay_status_shows_limits_and_what_they_hold(
    redis_client: redis.Redis, scene: float
) -> None:
    status = ops.collect_status(redis_client, ["crm", "archive", "plain"])
    by_name = {t.name: t for t in status.targets}
    assert by_name["plain"].control is None
    crm = by_name["crm"].to_json()["control"]
    assert crm == {
        "rate": "2/m",
        "concurrency": 1,
        "order": None,
        "in_flight": 1,
        "order_keys": 0,
        "held": {"rate": 0, "concurrency": 3, "order": 0},
    }
    archive = by_name["archive"].to_json()["control"]
    assert archive["held"] == {"rate": 0, "concurrency": 0, "order": 3}
    assert archive["order_keys"] == 1
    orjson.dumps(status.to_json())  # all of it is JSON
    text = render_status(status)
    assert "Delivery control (held: due deliveries waiting for the limit):" in text
    assert "  crm  rate 2/m, concurrency 1/1; held: 3 by concurrency" in text
    assert "  archive  FIFO per body:memberId (1 keys); held: 3 by order" in text


def test_a_rate_holds_what_is_due_until_it_allows_a_start(redis_client: redis.Redis) -> None:
    table = parse_routes(ROUTES.replace("concurrency = 1\n", ""), "routes.toml", {})
    publish_controls(redis_client, table)
    call = commit_arguments(
        [Batch([make_event(["crm"]) for _ in range(3)])], 3600, time.time(), "rq:queue:relay"
    )
    redis_client.execute_command(*call.command())
    now = time.time()
    Store(redis_client, 3600).claim(
        [Wanted("crm", 10, now + 60, limits_of(table.targets["crm"]))], 10, now
    )
    [crm] = [t for t in ops.collect_status(redis_client, ["crm"]).targets if t.name == "crm"]
    assert crm.control is not None
    assert dict(crm.control.held) == {"rate": 2, "concurrency": 0, "order": 0}


def test_the_status_page_shows_each_targets_control(
    redis_client: redis.Redis, scene: float
) -> None:
    status = ops.collect_status(redis_client, ["crm", "archive", "plain"])
    page = summarize(status, [], [], now=status.at)
    html = render_html(page)
    assert (
        '<span class="note control">rate 2/m, concurrency 1/1; held: 3 by concurrency</span>'
        in html
    )
    assert "FIFO per body:memberId (1 keys); held: 3 by order" in html
    rows = {row["name"]: row for row in page.to_json()["targets"]}
    assert rows["archive"]["control"]["held"]["order"] == 3


def test_metrics_count_what_each_limit_holds(redis_client: redis.Redis, scene: float) -> None:
    registry = CollectorRegistry()
    registry.register(
        RedisCollector(lambda: redis_client, targets=lambda: ("crm", "archive", "plain"))
    )
    found = samples(render(registry).decode())

    def value(name: str, **labels: str) -> float | None:
        return found.get((name, tuple(sorted(labels.items()))))

    assert value("relay_deliveries_held", target="crm", by="concurrency") == 3
    assert value("relay_deliveries_held", target="crm", by="rate") == 0
    assert value("relay_deliveries_held", target="archive", by="order") == 3
    assert value("relay_target_in_flight", target="crm") == 1
    assert value("relay_target_concurrency_limit", target="crm") == 1
    assert value("relay_target_rate_limit_per_second", target="crm") == pytest.approx(1 / 30)
    assert value("relay_target_order_keys", target="archive") == 1
    # A target without any setting has no control series at all.
    assert not [key for key in found if ("target", "plain") in key[1] and "held" in key[0]]
    assert redis_client.exists(keys.CONTROLS)


def test_events_show_says_what_an_ordered_delivery_waits_behind(redis_client: redis.Redis) -> None:
    events = [dataclasses.replace(make_event(["archive"]), order=("k1",)) for _ in range(3)]
    call = commit_arguments([Batch(events)], 3600, time.time(), make_queue(redis_client).key)
    redis_client.execute_command(*call.command())
    last = get_event(redis_client, events[2].id)
    head = get_event(redis_client, events[0].id)
    assert last is not None
    assert head is not None
    [waiting], [first] = last.deliveries, head.deliveries
    assert (waiting.order_key, waiting.order_ahead) == ("k1", 2)
    assert "  held: 2 earlier deliveries of its FIFO key (k1) go first" in render_delivery(waiting)
    assert delivery_json(waiting)["order"] == {"key": "k1", "ahead": 2}
    assert first.order_ahead == 0
    assert "held" not in render_delivery(first)
    plain = make_event(["plain"])
    redis_client.execute_command(
        *commit_arguments([Batch([plain])], 3600, time.time(), "rq:queue:relay").command()
    )
    shown = get_event(redis_client, plain.id)
    assert shown is not None
    assert delivery_json(shown.deliveries[0])["order"] is None
