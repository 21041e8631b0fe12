"""Reconciliation seen from outside: a log line, /metrics, the status page, `relay status`.

Goal 2 of issue 18: an API answer of an unexpected shape, a 401, a 429 storm and a timeout each
produce a clear log line, a metric and a status-page note, and no synthesized event. The pass
runs against the fake Fellow API on loopback; /metrics and /status are the receiver's own
(`relay serve`'s app) over real Redis.
"""

from __future__ import annotations

import asyncio
from html.parser import HTMLParser
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from relay.cli.serve import receiver_app
from relay.cli.status import render_status
from relay.config.loading import parse_routes
from relay.config.model import RouteTable
from relay.config.settings import Settings
from relay.ops import deliveries as ops
from relay.store.reconcile import EVENT_TYPES, PassOutcome, read_pass
from tests.support.fellow_api import KEY, FellowApiServer
from tests.support.metrics import Samples, samples, value
from tests.support.stored import indexed
from worker.fellow.reconcile import PassResult, run_pass

pytestmark = pytest.mark.needs_redis_server

ROUTES = """
[sources.fellow]
kind = "form"
token_env = "FELLOW_TOKEN"

[sources.fellow.reconcile]
api = "{api}"
api_key_env = "FELLOW_API_KEY"
every = "10m"
timeout = "1s"

[sources.shop]
kind = "json"

[targets.crm]
url = "http://127.0.0.1:9/crm"

[[routes]]
source = "fellow"
events = ["*"]
targets = ["crm"]
"""
ENV = {"FELLOW_TOKEN": "fellow-token-0123456789abcdef", "FELLOW_API_KEY": KEY}
T0 = 1_800_000_000.0


@pytest.fixture
def table(fellow_api: FellowApiServer) -> RouteTable:
    return parse_routes(ROUTES.format(api=fellow_api.url), "routes.toml", ENV)


@pytest.fixture
async def client(aiohttp_client: Any, redis_url: str, table: RouteTable) -> Any:
    return await aiohttp_client(receiver_app(Settings(redis_url=redis_url), table))


def reconcile(conn: redis.Redis, table: RouteTable, now: float) -> PassResult:
    return run_pass(conn, table, table.sources["fellow"], retention=86400, now=now)


class _Text(HTMLParser):
    """The page's text as a reader sees it: tags dropped, runs of white space made one."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def page_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


async def scrape(client: Any) -> Samples:
    resp = await client.get("/metrics")
    assert resp.status == 200
    return samples(await resp.text())


FAULTS = [
    # (fake API fault, outcome, the status page's words for it, words of the error)
    ("shape", PassOutcome.SHAPE, "unexpected answer shape", "expected a JSON array, got dict"),
    ("401", PassOutcome.AUTH, "API key refused (401/403)", "401: the API key is refused"),
    ("429", PassOutcome.RATE_LIMITED, "rate-limited (429 storm)", "429 answered 4 times"),
    ("timeout", PassOutcome.TIMEOUT, "API timeout", "no answer within 1s"),
]


@pytest.mark.parametrize(("fault", "outcome", "kind_words", "error_words"), FAULTS)
async def test_a_failed_pass_gives_a_log_line_a_metric_a_status_note_and_no_event(
    client: Any,
    redis_client: redis.Redis,
    fellow_api: FellowApiServer,
    table: RouteTable,
    fault: str,
    outcome: PassOutcome,
    kind_words: str,
    error_words: str,
) -> None:
    fellow_api.enrol("course", "7", "m1")
    await asyncio.to_thread(reconcile, redis_client, table, T0)  # the baseline
    fellow_api.enrol("course", "7", "m2")  # a change a good pass would report
    fellow_api.fault, fellow_api.hang = fault, 3.0

    with capture_logs() as logs:
        result = await asyncio.to_thread(reconcile, redis_client, table, T0 + 3600)

    # The log line: one error line naming the kind, the endpoint and the error; never the key.
    assert result.error is not None
    [line] = [e for e in logs if e["event"] == "reconcile: pass failed; nothing synthesized"]
    assert line["log_level"] == "error"
    assert line["outcome"] == str(outcome)
    assert error_words in line["error"]
    assert line["endpoint"].startswith("/api/v1/")
    assert KEY not in repr(logs)

    # The metrics: the pass counted under its outcome, the last pass's outcome, nothing missed.
    found = await scrape(client)
    passes = {
        o: value(found, "relay_reconcile_passes_total", source="fellow", outcome=o)
        for o in PassOutcome
    }
    assert passes == {o: float(o in (PassOutcome.BASELINE, outcome)) for o in PassOutcome}
    last = {
        o: value(found, "relay_reconcile_last_pass_outcome", source="fellow", outcome=o)
        for o in PassOutcome
    }
    assert last == {o: float(o == outcome) for o in PassOutcome}
    assert value(found, "relay_reconcile_consecutive_failures", source="fellow") == 1
    for event_type in EVENT_TYPES:
        assert (
            value(found, "relay_reconcile_missed_events_total", source="fellow", type=event_type)
            == 0
        )
    record = read_pass(redis_client, "fellow")
    # The last success is still the baseline's: "no successful pass in 3 every" counts on.
    assert (
        value(found, "relay_reconcile_last_success_timestamp_seconds", source="fellow")
        == record.ok_at
    )
    assert (
        record.ok_at
        < record.at
        == value(found, "relay_reconcile_last_pass_timestamp_seconds", source="fellow")
    )

    # The status page: a banner and the source's row say it failed, of what kind, and why.
    resp = await client.get("/status")
    assert resp.status == 200
    text = page_text(await resp.text())
    assert f"Reconciliation failing: fellow: last pass FAILED 0s ago ({kind_words}): " in text
    assert error_words in text
    assert "nothing was synthesized" in text
    doc = await (await client.get("/status.json")).json()
    [fellow] = doc["reconciled"]
    assert (fellow["name"], fellow["outcome"], fellow["failed"]) == ("fellow", str(outcome), True)
    assert error_words in fellow["error"]

    # And no synthesized event.
    assert result.synthesized == ()
    assert len(indexed(redis_client)) == 0


async def test_good_passes_count_by_outcome_and_missed_events_by_type(
    client: Any, redis_client: redis.Redis, fellow_api: FellowApiServer, table: RouteTable
) -> None:
    found = await scrape(client)
    # Configured, no pass yet: the interval, zero counters, no times.
    assert value(found, "relay_reconcile_interval_seconds", source="fellow") == 600
    assert value(found, "relay_reconcile_passes_total", source="fellow", outcome="ok") == 0
    assert value(found, "relay_reconcile_last_pass_timestamp_seconds", source="fellow") is None
    assert value(found, "relay_reconcile_interval_seconds", source="shop") is None

    fellow_api.enrol("course", "7", "m1")
    fellow_api.enrol("program", "p1", "m1")
    await asyncio.to_thread(reconcile, redis_client, table, T0)
    fellow_api.enrol("course", "7", "m2")  # an enrolment never received
    fellow_api.enrol("program", "p1", "m1", completed=True)  # a completion never received
    fellow_api.remove("course", "7", "m1")  # a removal never received
    await asyncio.to_thread(reconcile, redis_client, table, T0 + 1)  # seen: inside grace
    done = await asyncio.to_thread(reconcile, redis_client, table, T0 + 1 + 300)
    assert len(done.synthesized) == 3

    found = await scrape(client)
    passes = {
        o: value(found, "relay_reconcile_passes_total", source="fellow", outcome=o)
        for o in PassOutcome
    }
    assert passes == {o: {"baseline": 1.0, "ok": 2.0}.get(o, 0.0) for o in PassOutcome}
    missed = {
        t: value(found, "relay_reconcile_missed_events_total", source="fellow", type=t)
        for t in EVENT_TYPES
    }
    assert missed == {
        t: float(t in ("COURSEMEMBER_CREATED", "COURSEMEMBER_DELETED", "PROGRAMMEMBER_COMPLETED"))
        for t in EVENT_TYPES
    }
    record = read_pass(redis_client, "fellow")
    assert (
        value(found, "relay_reconcile_last_success_timestamp_seconds", source="fellow") == record.at
    )
    assert value(found, "relay_reconcile_last_pass_outcome", source="fellow", outcome="ok") == 1
    assert value(found, "relay_reconcile_consecutive_failures", source="fellow") == 0

    text = page_text(await (await client.get("/status")).text())
    assert "Reconciliation failing" not in text
    assert "Reconciliation" in text
    assert "fellow" in text


def test_relay_status_shows_the_last_pass_and_spells_out_a_failure(
    redis_client: redis.Redis, fellow_api: FellowApiServer, table: RouteTable
) -> None:
    fellow_api.enrol("course", "7", "m1")
    reconcile(redis_client, table, T0)
    good = render_status(ops.collect_status(redis_client, ["crm"], reconciled=["fellow"]))
    assert "Reconciliation" in good
    [row] = [line for line in good.splitlines() if line.startswith("fellow ")]
    assert row.split()[:5] == ["fellow", "0s", "ago", "baseline", "0"]
    assert "FAILED" not in good

    fellow_api.fault = "401"
    reconcile(redis_client, table, T0 + 1)
    failed = render_status(ops.collect_status(redis_client, ["crm"], reconciled=["fellow"]))
    [row] = [line for line in failed.splitlines() if line.startswith("fellow ")]
    assert row.split()[:5] == ["fellow", "0s", "ago", "auth", "1"]
    [note] = [line for line in failed.splitlines() if "FAILED" in line]
    assert "fellow: last pass FAILED 0s ago (API key refused (401/403)): " in note
    assert "401: the API key is refused" in note
    assert "1 failure(s) in a row, last success 0s ago" in note


def test_a_source_no_longer_configured_is_still_shown_from_its_record(
    redis_client: redis.Redis, fellow_api: FellowApiServer, table: RouteTable
) -> None:
    reconcile(redis_client, table, T0)
    [seen] = ops.collect_status(redis_client).reconciled
    assert (seen.name, seen.configured, seen.record.outcome) == ("fellow", False, "baseline")
    never = ops.collect_status(redis_client, reconciled=["other", "fellow"]).reconciled
    assert [(r.name, r.configured, r.record.outcome) for r in never] == [
        ("other", True, None),
        ("fellow", True, "baseline"),
    ]
    assert never[0].note(T0) == "other: no reconciliation pass yet"
