"""The status page: pure summary and rendering, the handlers on real Redis, headless Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from structlog.testing import capture_logs

from relay.cli import main as cli
from relay.cli.serve import receiver_app
from relay.config.loading import parse_routes
from relay.config.settings import Settings
from relay.core.states import DeliveryState
from relay.core.times import format_time
from relay.ops import deliveries as ops
from relay.ops import status_page
from relay.ops.status_page import (
    BREAKER_OPEN,
    DEGRADED,
    FAILING,
    IDLE,
    OK,
    PAUSED,
    Failure,
    RecentAttempt,
    StatusPage,
    TargetRow,
    health_of,
    render_html,
    summarize,
)
from relay.store import keys
from relay.store.breakers import Breakers
from relay.store.pauses import Pause
from relay.store.queue import kick, make_queue
from tests.support.redis_server import free_port
from tests.support.seed_states import seed_event
from worker.pause import pause_target

ARTIFACTS = Path(__file__).parent / "artifacts"
TOKEN = "status-token-0123456789abcdef"
EVIL = '<script>alert("x")</script>&"\''

ROUTES_TOML = """
[sources.shop]
kind = "json"

[targets.crm]
url = "http://127.0.0.1:9/crm"

[targets.analytics]
url = "http://127.0.0.1:9/analytics"

[targets.billing]
url = "http://127.0.0.1:9/billing"

[targets.archive]
url = "http://127.0.0.1:9/archive"

[[routes]]
source = "shop"
targets = ["crm", "analytics", "billing", "archive"]
"""
CONFIGURED = ("crm", "analytics", "billing", "archive")


# ---------------------------------------------------------------------------------------------
# Helpers: values, seeding, and reading figures back out of the HTML


def attempt(
    target: str,
    at: float | None,
    status: int | None = 500,
    outcome: str = "retry",
    *,
    n: int = 1,
    error: str = "",
    response: str = "",
    event_id: str = "evt_1",
) -> RecentAttempt:
    """A RecentAttempt as read from a worker's record."""
    record = ops.Attempt(target, n, at, 0.01, status, error, outcome, response)
    return RecentAttempt(event_id, record)


def bare_status(now: float, targets: Sequence[ops.TargetStatus] = ()) -> ops.Status:
    """A Status with an idle queue and the given targets."""
    queue = ops.QueueStatus("relay", queued=0, started=0, scheduled=0, failed=0, deferred=0)
    return ops.Status(at=now, queue=queue, workers=1, targets=tuple(targets), sources=())


def record(
    target: str, n: int, at: float, status: int | None, outcome: str, **extra: Any
) -> dict[str, Any]:
    """An attempt record the way worker.jobs writes it to relay:att:{id}."""
    return {
        "target": target,
        "attempt": n,
        "at": at,
        "duration_ms": 12.5,
        "status": status,
        "error": "" if status else "connection refused",
        "outcome": outcome,
        "response": "" if status is None else f"answer {status}",
        **extra,
    }


def seed_scene(conn: redis.Redis, now: float) -> dict[str, str]:
    """A relay with one failing, one degraded, one ok, one idle and one unconfigured target."""
    queue = make_queue(conn)
    ids: dict[str, str] = {}
    # crm: every recent attempt failed, then the delivery went dead.
    ids["crm_dead"] = seed_event(
        conn,
        source="shop",
        event_type="order.paid",
        received=now - 900,
        deliveries={"crm": (DeliveryState.DEAD, 3, "HTTP 500 after 3 attempts")},
        dead_at={"crm": now - 300},
        attempts=[
            record("crm", 1, now - 890, 500, "retry"),
            record("crm", 2, now - 600, None, "retry"),
            record("crm", 3, now - 300, 500, "dead"),
        ],
    )
    # billing: one failure, then a success; plus a retry due in an hour for another event.
    ids["billing_ok"] = seed_event(
        conn,
        source="shop",
        event_type="order.created",
        received=now - 240,
        deliveries={"billing": (DeliveryState.DELIVERED, 2, "")},
        attempts=[
            record("billing", 1, now - 230, 503, "retry"),
            record("billing", 2, now - 100, 200, "delivered"),
        ],
    )
    ids["billing_retry"] = seed_event(
        conn,
        source="shop",
        event_type="order.created",
        received=now - 60,
        deliveries={"billing": (DeliveryState.RETRYING, 1, "")},
        attempts=[record("billing", 1, now - 7200 - 50, 429, "retry")],  # outside the window
        due={"billing": now + 3600},
    )
    # analytics: delivered; and a fresh event due now (pending) for it, with the receiver's kick.
    ids["analytics_ok"] = seed_event(
        conn,
        source="shop",
        event_type="order.created",
        received=now - 50,
        deliveries={"analytics": (DeliveryState.DELIVERED, 1, "")},
        attempts=[record("analytics", 1, now - 40, 204, "delivered")],
    )
    ids["analytics_fresh"] = seed_event(
        conn,
        source="shop",
        event_type="order.created",
        received=now - 5,
        deliveries={"analytics": (DeliveryState.PENDING, 0, "")},
        due={"analytics": now - 5},
    )
    kick(queue)
    # legacy: not in routes.toml any more; answered 410 two hours ago (provider text in it).
    ids["legacy_gone"] = seed_event(
        conn,
        source="shop",
        event_type=EVIL,
        received=now - 7300,
        deliveries={"legacy": (DeliveryState.GONE, 1, f"HTTP 410 Gone {EVIL}")},
        dead_at={"legacy": now - 7200},
        attempts=[record("legacy", 1, now - 7200, 410, "gone", response=EVIL)],
    )
    counters = {
        "crm": {"attempts": 30, "delivered": 27, "failures": 3, "dead": 1},
        "billing": {"attempts": 12, "delivered": 10, "failures": 2},
        "analytics": {"attempts": 8, "delivered": 8},
        "legacy": {"attempts": 1, "failures": 1, "gone": 1},
    }
    for name, values in counters.items():
        conn.hset(keys.target_stats_key(name), mapping=values)  # type: ignore[arg-type]
    conn.hset(keys.source_stats_key("shop"), mapping={"received": 48, "duplicates": 2})
    return ids


class FigureParser(HTMLParser):
    """Collects every element carrying data-field: the text inside and any <time datetime>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.figures: dict[str, str] = {}
        self.tables: dict[str, list[dict[str, str]]] = {}
        self.row_keys: dict[str, list[str]] = {}
        self.refresh: str | None = None
        self.links: list[str] = []
        self.external: list[str] = []
        self.scripts = 0
        self._table: str | None = None
        self._row: dict[str, str] | None = None
        self._field: tuple[str, str] | None = None  # (tag, field)
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "script":
            self.scripts += 1
        for name in ("src", "href"):
            if name in a:
                self.links.append(a[name])
                if "//" in a[name]:
                    self.external.append(a[name])
        if tag == "meta" and a.get("http-equiv") == "refresh":
            self.refresh = a.get("content")
        if tag == "table":
            self._table = a.get("id", "")
            self.tables[self._table] = []
            self.row_keys[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = {}
            self.row_keys[self._table].append(a.get("data-target") or a.get("data-source") or "")
        elif tag == "time" and self._field is not None:
            self.figures_or_row()["@" + self._field[1]] = a.get("datetime", "")
        if "data-field" in a and self._field is None:
            self._field, self._text = (tag, a["data-field"]), []

    def figures_or_row(self) -> dict[str, str]:
        return self._row if self._row is not None else self.figures

    def handle_endtag(self, tag: str) -> None:
        if self._field is not None and tag == self._field[0]:
            self.figures_or_row()[self._field[1]] = " ".join("".join(self._text).split())
            self._field = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            if self._row:  # header rows have no data-field cells
                self.tables[self._table].append(self._row)
            else:
                self.row_keys[self._table].pop()
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._field is not None:
            self._text.append(data)

    def keyed(self, table: str) -> dict[str, dict[str, str]]:
        """Rows of a table by their data-target / data-source key."""
        return dict(zip(self.row_keys[table], self.tables[table], strict=True))


def parse_page(html: str) -> FigureParser:
    """Every figure of a rendered status page."""
    parser = FigureParser()
    parser.feed(html)
    parser.close()
    return parser


def shown(value: object) -> str:
    """How a JSON value appears in a cell."""
    return "-" if value is None or value == "" else str(value)


def is_open(target: Mapping[str, Any]) -> bool:
    """Whether a target of /status.json has an open circuit breaker."""
    return target["breaker"] is not None and target["breaker"]["state"] == "open"


def assert_page_matches_json(html: str, doc: Mapping[str, Any]) -> None:
    """Every figure on the page equals the one /status.json reports, row for row."""
    page = parse_page(html)
    healths = [t["health"] for t in doc["targets"]]
    queue = doc["queue"]
    assert page.figures == {
        "targets.paused": str(healths.count(PAUSED)),
        "targets.breaker_open": str(sum(is_open(t) for t in doc["targets"])),
        "targets.failing": str(healths.count(FAILING)),
        "targets.degraded": str(healths.count(DEGRADED)),
        "dead_letters.total": str(doc["dead_letters"]["total"]),
        "targets.pending": str(sum(t["pending"] for t in doc["targets"])),
        "targets.scheduled": str(sum(t["scheduled"] for t in doc["targets"])),
        **{f"queue.{k}": str(queue[k]) for k in ("queued", "started", "failed")},
        "workers": str(doc["workers"]),
    }
    targets = page.keyed("targets")
    assert list(targets) == [t["name"] for t in doc["targets"]]
    for t in doc["targets"]:
        row = targets[t["name"]]
        assert row["name"].split(" ")[0] == t["name"]
        assert ("not in routes" in row["name"]) is (not t["configured"])
        assert (t["health"] == PAUSED) is (t["paused"] is not None)
        if t["paused"] is not None:
            assert f"paused since {t['paused']['since']}" in row["name"]
            assert row["name"].endswith(f": {' '.join(t['paused']['reason'].split())}")
            assert row["@name"] == t["paused"]["since"] == format_time(t["paused"]["at"])
        else:
            assert "paused" not in row["name"]
            assert (t["health"] == BREAKER_OPEN) is is_open(t)
        assert ("breaker open since" in row["name"]) is is_open(t)
        assert row["health"] == t["health"]
        assert row["recent"] == f"{t['recent_failures']}/{t['recent_attempts']}"
        for field in (
            "delivered", "attempts", "failures", "pending", "scheduled", "dead_letters", "dead",
            "gone", "replayed",
        ):  # fmt: skip
            assert row[field] == str(t[field]), (t["name"], field)
    failures = doc["recent_failures"]
    assert len(page.tables.get("failures", [])) == len(failures)
    for row, f in zip(page.tables.get("failures", []), failures, strict=True):
        assert row["@at"] == format_time(f["at"])
        assert row["event_id"] == f["event_id"]
        assert row["target"] == f["target"]
        assert row["attempt"] == str(f["attempt"])
        assert row["status"] == (f"HTTP {f['status']}" if f["status"] is not None else "-")
        assert row["error"] == shown(f["error"])
        assert row["outcome"] == shown(f["outcome"])
        assert row["response"] == shown(f["response"])
    newest = doc["dead_letters"]["newest"]
    assert len(page.tables.get("dead", [])) == len(newest)
    for row, d in zip(page.tables.get("dead", []), newest, strict=True):
        assert row["@dead_at"] == format_time(d["dead_at"])
        assert (row["event_id"], row["target"]) == (d["event_id"], d["target"])
        assert (row["source"], row["type"]) == (shown(d["source"]), shown(d["type"]))
        assert row["state"] == ("expired" if d["expired"] else d["state"])
        assert row["attempts"] == str(d["attempts"])
    sources = page.keyed("sources") if doc["sources"] else {}
    assert {
        name: {k: row[k] for k in ("received", "duplicates", "unrouted")}
        for name, row in sources.items()
    } == {
        s["name"]: {k: str(s[k]) for k in ("received", "duplicates", "unrouted")}
        for s in doc["sources"]
    }


# ---------------------------------------------------------------------------------------------
# Pure: health, summary


def test_attempt_failed_by_outcome_then_by_status() -> None:
    assert not attempt("crm", 1.0, 200, "delivered").failed
    assert attempt("crm", 1.0, 503, "retry").failed
    assert attempt("crm", 1.0, 410, "gone").failed
    assert attempt("crm", 1.0, None, "dead").failed
    # Records without an outcome (older workers) are judged by their status.
    assert not attempt("crm", 1.0, 204, "").failed
    assert attempt("crm", 1.0, 302, "").failed
    assert attempt("crm", 1.0, None, "").failed


def test_health_of_recent_outcomes() -> None:
    ok, bad = attempt("crm", 1.0, 200, "delivered"), attempt("crm", 1.0, 500)
    assert health_of([]) == IDLE
    assert health_of([ok, ok]) == OK
    assert health_of([bad, bad, bad]) == FAILING
    assert health_of([ok, bad]) == DEGRADED


def test_summarize_health_uses_the_newest_attempts_in_the_window() -> None:
    now = 10_000.0
    names = ("crm", "billing", "analytics", "archive")
    status = bare_status(now, [ops.TargetStatus(n, True, 0, 0, 0) for n in names])
    recent = [
        # crm: 10 newest are failures; an older success beyond HEALTH_SAMPLE does not count.
        *(attempt("crm", now - 10 - i) for i in range(status_page.HEALTH_SAMPLE)),
        attempt("crm", now - 500, 200, "delivered"),
        # billing: a success and a failure, both recent.
        attempt("billing", now - 5, 200, "delivered"),
        attempt("billing", now - 50, 503),
        # analytics: a recent success; a failure older than the window does not count.
        attempt("analytics", now - 30, 204, "delivered"),
        attempt("analytics", now - status_page.HEALTH_WINDOW - 1, 500),
        # archive: only a record without a time: cannot be placed, does not count.
        attempt("archive", None, 500),
    ]
    page = summarize(status, recent, (), now)
    assert [
        (r.figures.name, r.health, r.recent_failures, r.recent_attempts) for r in page.targets
    ] == [
        ("crm", FAILING, 10, 10),
        ("billing", DEGRADED, 1, 2),
        ("analytics", OK, 0, 1),
        ("archive", IDLE, 0, 0),
    ]


def test_summarize_lists_failures_newest_first_bounded_and_cut() -> None:
    now = 10_000.0
    long_text = "x" * 500
    recent = [attempt("crm", now - i, 500, n=i, event_id=f"evt_{i}") for i in range(1, 40)]
    recent.append(attempt("crm", now, 200, "delivered", event_id="evt_ok"))
    recent.append(attempt("crm", None, None, error="refused", event_id="evt_untimed"))
    recent.append(attempt("crm", now - 0.5, 502, response=long_text, event_id="evt_long"))
    page = summarize(bare_status(now), recent, (), now)
    assert len(page.failures) == status_page.FAILURES_SHOWN
    assert page.failures[0].event_id == "evt_long"
    assert page.failures[0].response == "x" * (status_page.TEXT_MAX - 1) + "…"
    assert [f.event_id for f in page.failures[1:4]] == ["evt_1", "evt_2", "evt_3"]
    assert all(f.event_id != "evt_ok" for f in page.failures)
    times = [f.at for f in page.failures]
    assert times == sorted(times, reverse=True)


def test_to_json_has_the_ops_figures_and_the_page_additions() -> None:
    now = 10_000.0
    figures = ops.TargetStatus("crm", True, 1, 2, 3, delivered=4, failures=5)
    page = StatusPage(
        status=bare_status(now, [figures]),
        targets=(TargetRow(figures, DEGRADED, 4, 1),),
        failures=(Failure(now, "evt_1", "crm", 2, 500, "", "retry", "oops"),),
        dead_letters=(),
    )
    doc = page.to_json()
    assert doc["targets"] == [
        figures.to_json() | {"health": DEGRADED, "recent_attempts": 4, "recent_failures": 1}
    ]
    assert doc["dead_letters"] == {"total": 3, "newest": []}
    assert doc["recent_failures"][0]["event_id"] == "evt_1"
    assert doc["generated_at"] == now
    assert doc["refresh_seconds"] == status_page.REFRESH_SECONDS
    assert orjson.loads(orjson.dumps(doc)) == doc  # JSON-ready


# ---------------------------------------------------------------------------------------------
# Pure: rendering


def hostile_page(now: float) -> StatusPage:
    """A page where every provider- or target-controlled string tries to break out."""
    figures = ops.TargetStatus(EVIL, False, 1, 0, 1, failures=1)
    letter = ops.DeadLetter(
        event_id="evt_9", target=EVIL, dead_at=now - 60, state="dead", source=EVIL, type=EVIL,
        received_at=now - 120, attempts=3, reason=EVIL, expired=False,
    )  # fmt: skip
    status = ops.Status(
        at=now,
        queue=ops.QueueStatus("relay", 2, 0, 0, 0, 0),
        workers=0,
        targets=(figures,),
        sources=(ops.SourceStatus(EVIL, received=3),),
    )
    return StatusPage(
        status=status,
        targets=(TargetRow(figures, FAILING, 1, 1),),
        failures=(Failure(now - 30, "evt_9", EVIL, 1, None, EVIL, "retry", EVIL),),
        dead_letters=(letter,),
    )


def test_render_escapes_every_provider_string() -> None:
    html = render_html(hostile_page(1_790_000_000.0), token='a"b<c>&d')
    assert "<script" not in html
    assert 'alert("x")' not in html  # not even inside an attribute
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&quot;&#x27;" in html
    page = parse_page(html)
    assert page.scripts == 0
    # Read back, the text is the original: escaped once, exactly.
    assert page.keyed("targets")[EVIL]["health"] == FAILING
    assert page.tables["failures"][0]["response"] == " ".join(EVIL.split())
    assert page.tables["dead"][0]["reason"] == " ".join(EVIL.split())
    assert page.keyed("sources")[EVIL]["received"] == "3"


def test_render_has_no_external_resources_and_refreshes_itself() -> None:
    html = render_html(hostile_page(1_790_000_000.0))
    page = parse_page(html)
    assert page.external == []
    assert page.links == ["status.json"]
    assert page.refresh == str(status_page.REFRESH_SECONDS)
    assert "No worker is running" in html  # queued deliveries with no worker: said loudly


def test_render_keeps_a_query_token_in_the_refresh_and_json_links() -> None:
    page = parse_page(render_html(hostile_page(1_790_000_000.0), token="t o/k&en"))
    assert page.refresh == f"{status_page.REFRESH_SECONDS}; url=status?token=t%20o%2Fk%26en"
    assert page.links == ["status.json?token=t%20o%2Fk%26en"]


def test_render_shows_the_figures_of_to_json() -> None:
    now = time.time()
    page = hostile_page(now)
    assert_page_matches_json(render_html(page), page.to_json())


def test_render_of_an_empty_relay_says_so() -> None:
    html = render_html(summarize(bare_status(1_790_000_000.0), [], [], 1_790_000_000.0))
    assert "No targets yet." in html
    assert "No failed attempts among the newest events." in html
    assert "The dead-letter store is empty." in html
    assert "No worker is running" not in html


@pytest.mark.parametrize(
    ("workers", "queued", "pending", "scheduled", "warned"),
    [
        (0, 0, 0, 3, True),  # retries waiting in a due set: nobody will ever take them
        (0, 0, 2, 0, True),  # deliveries due now, their kick already taken by a dead worker
        (0, 1, 0, 0, True),  # a kick waiting
        (0, 0, 0, 0, False),  # nothing waits (dead letters need no worker)
        (1, 1, 2, 3, False),  # a worker is running
    ],
)
def test_render_says_when_deliveries_wait_with_no_worker(
    workers: int, queued: int, pending: int, scheduled: int, warned: bool
) -> None:
    """Deliveries wait in due sets, not in RQ's registries: the banner reads both."""
    now = 1_790_000_000.0
    status = ops.Status(
        at=now,
        queue=ops.QueueStatus("relay", queued=queued, started=0, scheduled=0, failed=0, deferred=0),
        workers=workers,
        targets=(ops.TargetStatus("crm", True, pending, scheduled, dead_letters=4),),
        sources=(),
    )
    html = render_html(summarize(status, [], [], now))
    assert ("No worker is running" in html) is warned


# ---------------------------------------------------------------------------------------------
# Handlers on a real redis-server

AppClient = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[AppClient]]


@pytest.fixture
def make_client(aiohttp_client: Any, redis_url: str) -> MakeClient:
    """A test client on the receiver app (routes above) with an optional status token."""

    async def make(token: str = "", url: str = redis_url) -> AppClient:
        routes = parse_routes(ROUTES_TOML, "routes.toml", {})
        client: AppClient = await aiohttp_client(
            receiver_app(Settings(redis_url=url, status_token=token), routes)
        )
        return client

    return make


async def test_status_json_equals_relay_status_json(
    make_client: MakeClient,
    redis_client: redis.Redis,
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = time.time()
    ids = seed_scene(redis_client, now)
    client = await make_client()
    resp = await client.get("/status.json")
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    doc = await resp.json()

    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES_TOML)
    capsys.readouterr()  # the receiver's request log lines
    assert cli.main(["status", "--json", "--url", redis_url, "--routes", str(routes)]) == 0
    reported = orjson.loads(capsys.readouterr().out)
    page_keys = {"health", "recent_attempts", "recent_failures"}
    assert [{k: v for k, v in t.items() if k not in page_keys} for t in doc["targets"]] == (
        reported["targets"]
    )
    assert doc["queue"] == reported["queue"]
    assert doc["workers"] == reported["workers"]
    assert doc["sources"] == reported["sources"]

    targets = {t["name"]: t for t in doc["targets"]}
    assert list(targets) == [*CONFIGURED, "legacy"]
    assert {n: t["health"] for n, t in targets.items()} == {
        "crm": FAILING,
        "analytics": OK,
        "billing": DEGRADED,
        "archive": IDLE,
        "legacy": IDLE,  # its only attempt is two hours old
    }
    assert (targets["crm"]["recent_failures"], targets["crm"]["recent_attempts"]) == (3, 3)
    assert (targets["analytics"]["pending"], targets["billing"]["scheduled"]) == (1, 1)
    assert (targets["crm"]["dead_letters"], targets["legacy"]["dead_letters"]) == (1, 1)
    assert doc["dead_letters"]["total"] == 2
    assert [(d["event_id"], d["target"]) for d in doc["dead_letters"]["newest"]] == [
        (ids["crm_dead"], "crm"),
        (ids["legacy_gone"], "legacy"),
    ]
    # Failures newest first, from the newest events and from the dead letters' events.
    assert [(f["event_id"], f["target"], f["attempt"]) for f in doc["recent_failures"]] == [
        (ids["billing_ok"], "billing", 1),
        (ids["crm_dead"], "crm", 3),
        (ids["crm_dead"], "crm", 2),
        (ids["crm_dead"], "crm", 1),
        (ids["legacy_gone"], "legacy", 1),
        (ids["billing_retry"], "billing", 1),
    ]
    assert doc["recent_failures"][2]["error"] == "connection refused"
    assert doc["recent_failures"][4]["response"] == " ".join(EVIL.split())


async def test_status_page_shows_the_json_figures(
    make_client: MakeClient, redis_client: redis.Redis
) -> None:
    seed_scene(redis_client, time.time())
    client = await make_client()
    page = await client.get("/status")
    assert page.status == 200
    assert page.content_type == "text/html"
    assert page.headers["Content-Security-Policy"].startswith(
        "default-src 'none'; style-src 'unsafe-inline'"
    )
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Cache-Control"] == "no-store"
    html = await page.text()
    doc = await (await client.get("/status.json")).json()
    assert_page_matches_json(html, doc)
    assert "<script" not in html  # the provider's event type and the target's response
    assert parse_page(html).refresh == str(status_page.REFRESH_SECONDS)


async def test_a_paused_target_is_paused_with_why_and_since_when(
    make_client: MakeClient, redis_client: redis.Redis
) -> None:
    # The operator's view of issue 12: crm paused with a delivery due, and analytics healthy.
    now = time.time()
    seed_scene(redis_client, now)
    seed_event(
        redis_client, deliveries={"crm": (DeliveryState.PENDING, 0, "")}, due={"crm": now - 1}
    )
    assert pause_target(redis_client, "crm", "maintenance window", now=now - 300)
    client = await make_client()

    doc = await (await client.get("/status.json")).json()
    targets = {t["name"]: t for t in doc["targets"]}
    crm = targets["crm"]
    assert crm["health"] == PAUSED  # not ok, failing or idle: its deliveries are held
    assert crm["pending"] == 1
    assert crm["paused"] == {
        "target": "crm",
        "reason": "maintenance window",
        "since": format_time(now - 300),
        "at": now - 300,
        "event_id": None,
    }
    assert targets["analytics"]["health"] == OK
    assert targets["analytics"]["paused"] is None

    html = await (await client.get("/status")).text()
    assert_page_matches_json(html, doc)
    row = parse_page(html).keyed("targets")["crm"]
    assert row["health"] == PAUSED
    assert row["name"] == f"crm paused since {format_time(now - 300)} (5m ago): maintenance window"
    assert parse_page(html).figures["targets.paused"] == "1"
    assert "crm is paused since" in html
    assert "until `relay resume crm`" in html


def test_a_paused_target_beats_its_recent_attempts_and_is_escaped() -> None:
    now = 1_790_000_000.0
    figures = ops.TargetStatus("crm", True, 0, 0, 0, paused=Pause("crm", now - 60, EVIL, "evt_410"))
    page = summarize(bare_status(now, [figures]), [attempt("crm", now - 5)], [], now)
    assert page.targets[0].health == PAUSED  # its newest attempt failed: still paused first
    html = render_html(page)
    assert "<script" not in html
    assert parse_page(html).keyed("targets")["crm"]["name"].endswith(" ".join(EVIL.split()))
    assert page.to_json()["targets"][0]["paused"]["event_id"] == "evt_410"
    assert_page_matches_json(html, page.to_json())


async def test_a_target_with_an_open_breaker_is_shown_held_with_since_when_and_next_probe(
    make_client: MakeClient, redis_client: redis.Redis
) -> None:
    now = time.time()
    seed_scene(redis_client, now)
    seed_event(
        redis_client, deliveries={"crm": (DeliveryState.PENDING, 0, "")}, due={"crm": now - 1}
    )
    breakers = Breakers(redis_client)
    for _ in range(3):
        breakers.record("crm", True, 3, 30.0, "HTTP 503", now - 120)
    breakers.record("billing", True, 3, 30.0, "HTTP 500", now)  # failing, still closed
    client = await make_client()

    doc = await (await client.get("/status.json")).json()
    targets = {t["name"]: t for t in doc["targets"]}
    crm = targets["crm"]
    assert crm["health"] == BREAKER_OPEN  # not failing: its deliveries are held, not tried
    assert crm["breaker"]["state"] == "open"
    assert crm["breaker"]["since"] == format_time(now - 120)
    assert crm["breaker"]["failures"] == 3
    assert crm["breaker"]["last_error"] == "HTTP 503"
    assert 0 < crm["breaker"]["next_probe_in"] <= 30
    assert targets["billing"]["breaker"]["state"] == "closed"
    assert targets["billing"]["breaker"]["failures"] == 1
    assert targets["billing"]["health"] != BREAKER_OPEN
    assert targets["analytics"]["breaker"] is None

    html = await (await client.get("/status")).text()
    assert_page_matches_json(html, doc)
    page = parse_page(html)
    assert page.figures["targets.breaker_open"] == "1"
    row = page.keyed("targets")["crm"]
    assert row["health"] == BREAKER_OPEN
    assert row["name"].startswith(
        f"crm breaker open since {format_time(now - 120)} (2m ago) after 3 failed attempts in a "
        "row (last: HTTP 503); next probe in "
    )
    assert "crm&#x27;s circuit breaker is open since" in html
    assert "go out again on their own when a probe succeeds" in html

    # Paused as well: pause wins the health, the breaker still shows and counts.
    assert pause_target(redis_client, "crm", "maintenance window", now=now - 60)
    client = await make_client()  # a fresh page, not the one cached for CACHE_SECONDS
    doc = await (await client.get("/status.json")).json()
    html = await (await client.get("/status")).text()
    assert {t["name"]: t["health"] for t in doc["targets"]}["crm"] == PAUSED
    assert parse_page(html).figures["targets.breaker_open"] == "1"
    assert parse_page(html).figures["targets.paused"] == "1"
    name = parse_page(html).keyed("targets")["crm"]["name"]
    assert name.startswith(f"crm paused since {format_time(now - 60)} (1m ago): maintenance window")
    assert f" breaker open since {format_time(now - 120)} (2m ago) after 3 failed" in name


async def test_status_page_of_an_empty_redis(make_client: MakeClient) -> None:
    client = await make_client()
    doc = await (await client.get("/status.json")).json()
    assert [(t["name"], t["health"]) for t in doc["targets"]] == [(n, IDLE) for n in CONFIGURED]
    assert doc["recent_failures"] == []
    assert doc["dead_letters"] == {"total": 0, "newest": []}
    html = await (await client.get("/status")).text()
    assert_page_matches_json(html, doc)


@pytest.mark.parametrize("path", ["/status", "/status.json"])
async def test_token_is_required_when_set(make_client: MakeClient, path: str) -> None:
    client = await make_client(token=TOKEN)
    with capture_logs() as logs:
        missing = await client.get(path)
        wrong_header = await client.get(path, headers={"Authorization": "Bearer nope"})
        wrong_query = await client.get(path, params={"token": TOKEN[:-1]})
        wrong_scheme = await client.get(path, headers={"Authorization": f"Basic {TOKEN}"})
        by_header = await client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        by_query = await client.get(path, params={"token": TOKEN})
    for refused in (missing, wrong_header, wrong_query, wrong_scheme):
        assert refused.status == 401
        assert refused.content_type == "application/json"
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        body = await refused.json()
        assert body["status"] == 401
        assert TOKEN not in body["error"]
    assert "needs its token" in (await missing.json())["error"]
    assert (await wrong_header.json())["error"] == "the status token is wrong"
    assert (by_header.status, by_query.status) == (200, 200)
    assert TOKEN not in repr(logs)
    assert [entry["status"] for entry in logs if entry["event"] == "request"] == [
        401, 401, 401, 401, 200, 200,
    ]  # fmt: skip


async def test_query_token_is_kept_in_the_refresh_url(make_client: MakeClient) -> None:
    client = await make_client(token=TOKEN)
    by_query = parse_page(await (await client.get("/status", params={"token": TOKEN})).text())
    assert by_query.refresh == f"{status_page.REFRESH_SECONDS}; url=status?token={TOKEN}"
    assert by_query.links == [f"status.json?token={TOKEN}"]
    # Sent as a header, the token is never written into the page.
    by_header = await (
        await client.get("/status", headers={"Authorization": f"Bearer {TOKEN}"})
    ).text()
    assert TOKEN not in by_header
    assert parse_page(by_header).refresh == str(status_page.REFRESH_SECONDS)


async def test_no_token_set_serves_the_page_to_this_machine_only(make_client: MakeClient) -> None:
    client = await make_client()  # the test client connects from 127.0.0.1
    assert (await client.get("/status")).status == 200
    assert (await client.get("/status.json", params={"token": "anything"})).status == 200
    for path in ("/status", "/status.json"):
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
            # Through a proxy on this machine: the client is elsewhere.
            refused = await client.get(path, headers={header: "203.0.113.9"})
            assert refused.status == 403
            body = await refused.json()
            assert body["status"] == 403
            assert "RELAY_STATUS_TOKEN" in body["error"]


@pytest.mark.parametrize(
    ("peer", "local"),
    [
        (("127.0.0.1", 5000), True),
        (("127.8.9.10", 5000), True),
        (("::1", 5000, 0, 0), True),
        (("::ffff:127.0.0.1", 5000, 0, 0), True),
        (("10.0.0.5", 5000), False),
        (("192.168.1.20", 5000), False),
        (("2001:db8::1", 5000, 0, 0), False),
        ("", False),  # a Unix socket
    ],
)
def test_only_a_direct_loopback_peer_is_this_machine(peer: Any, local: bool) -> None:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        peer if name == "peername" else default
    )
    request = make_mocked_request("GET", "/status", transport=transport)
    assert status_page.is_direct_local(request) is local


async def test_redis_away_answers_503_page_and_json(make_client: MakeClient) -> None:
    client = await make_client(url=f"redis://127.0.0.1:{free_port()}/0")
    with capture_logs() as logs:
        page = await client.get("/status")
        doc = await client.get("/status.json")
    assert page.status == 503
    assert page.content_type == "text/html"
    html = await page.text()
    assert "Redis did not answer the status read: ConnectionError" in html
    assert parse_page(html).refresh == str(status_page.REFRESH_SECONDS)  # comes back by itself
    assert doc.status == 503
    assert await doc.json() == {
        "error": "Redis did not answer the status read: ConnectionError",
        "status": 503,
    }
    assert any(e["event"] == "status_unavailable" for e in logs)


async def test_reloads_within_the_cache_share_one_read(
    aiohttp_client: Any, redis_client: redis.Redis
) -> None:
    reads = 0

    def connection() -> redis.Redis:
        nonlocal reads
        reads += 1
        return redis_client

    app = web.Application()
    cached, _ = status_page.status_handlers("", connection, lambda: ["crm"], cache_seconds=3600)
    _, uncached = status_page.status_handlers("", connection, lambda: ["crm"], cache_seconds=0)
    app.router.add_get("/cached", cached)
    app.router.add_get("/uncached.json", uncached)
    client = await aiohttp_client(app)
    pages = await asyncio.gather(*(client.get("/cached") for _ in range(5)))
    assert [p.status for p in pages] == [200] * 5
    assert reads == 1
    first = await (await client.get("/uncached.json")).json()
    redis_client.hset(keys.target_stats_key("crm"), "delivered", 5)
    second = await (await client.get("/uncached.json")).json()
    assert (first["targets"][0]["delivered"], second["targets"][0]["delivered"]) == (0, 5)
    assert reads == 3


# ---------------------------------------------------------------------------------------------
# Headless Chromium: the page as a browser renders it

CHROMIUM_TIMEOUT = 90.0  # seconds: a cold start on a loaded 2-core machine, not a threshold
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1280,900",
)


def chromium_binary() -> str:
    """The chromium on PATH; skip (or fail with RELAY_REQUIRE_CHROMIUM=1) without one."""
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("RELAY_REQUIRE_CHROMIUM") == "1":
            pytest.fail(
                "RELAY_REQUIRE_CHROMIUM=1 but chromium is not on PATH (apt-get install chromium)"
            )
        pytest.skip("chromium is not on PATH: install Debian's chromium package to run this test")
    return found


def test_without_chromium_the_browser_test_skips_or_fails_when_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no chromium on it
    monkeypatch.delenv("RELAY_REQUIRE_CHROMIUM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium is not on PATH"):
        chromium_binary()
    monkeypatch.setenv("RELAY_REQUIRE_CHROMIUM", "1")
    with pytest.raises(pytest.fail.Exception, match="RELAY_REQUIRE_CHROMIUM=1"):
        chromium_binary()


async def run_chromium(binary: str, profile: Path, *args: str) -> bytes:
    """Run headless chromium once (its own process group, killed on timeout); its stdout."""
    proc = await asyncio.create_subprocess_exec(
        binary,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CHROMIUM_TIMEOUT)
    except TimeoutError:
        # The whole group: chromium's own helper processes go with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        pytest.fail(f"chromium did not finish within {CHROMIUM_TIMEOUT} s")
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


async def test_chromium_renders_the_figures_the_api_reports(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    binary = chromium_binary()
    seed_scene(redis_client, time.time())
    routes = parse_routes(ROUTES_TOML, "routes.toml", {})
    app = receiver_app(Settings(redis_url=redis_url, status_token=TOKEN), routes)
    async with TestServer(app, host="127.0.0.1") as server, TestClient(server) as client:
        url = str(server.make_url(f"/status?token={TOKEN}"))
        dom = await run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", url)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "status_page.png"
        shot.unlink(missing_ok=True)
        await run_chromium(binary, tmp_path / "profile-shot", f"--screenshot={shot}", url)
        doc = await (
            await client.get("/status.json", headers={"Authorization": f"Bearer {TOKEN}"})
        ).json()
    html = dom.decode()
    assert "<h1>relay status</h1>" in html
    assert_page_matches_json(html, doc)
    rendered = parse_page(html)
    assert rendered.keyed("targets")["crm"]["health"] == FAILING
    assert rendered.keyed("targets")["billing"]["health"] == DEGRADED
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank image
