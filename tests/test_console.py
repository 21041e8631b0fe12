"""The console over HTTP (aiohttp's test client, a real Redis): sign-in, cookies, CSRF, scopes,
and every page readable as served, without script."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from html.parser import HTMLParser
from http.cookies import SimpleCookie

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from relay.admin.console.session import COOKIE
from relay.core.states import DeliveryState
from relay.core.times import format_time
from relay.store import keys
from relay.store.breakers import Breakers
from relay.store.control import ControlSettings, publish_settings
from tests.support.console import READ_TOKEN, WRITE_TOKEN, console_app, csrf_of, sign_in
from tests.support.seed_states import NOW, attempt_record, seed_event

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(aiohttp_client: Callable[..., AsyncIterator[Client]], redis_url: str) -> Client:
    """A test client of the admin app on the test Redis."""
    return await aiohttp_client(console_app(redis_url))  # type: ignore[no-any-return, misc]


def set_cookie_headers(response: object) -> dict[str, str]:
    """The Set-Cookie headers of a response, by cookie name (the raw header each)."""
    found = {}
    for header in response.headers.getall("Set-Cookie", []):  # type: ignore[attr-defined]
        found[header.split("=", 1)[0]] = header
    return found


class Outline(HTMLParser):
    """What a page offers a reader without script: landmarks, headings, tables, forms."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def having(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.tags if t == tag]

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


def outline(html: str) -> Outline:
    parsed = Outline()
    parsed.feed(html)
    return parsed


def assert_readable(html: str) -> Outline:
    """A page a screen reader and a script-less browser can use."""
    page = outline(html)
    assert len(page.having("main")) == 1
    assert len(page.having("h1")) == 1
    assert page.having("nav")
    # Every input is labelled (a <label for>, or an aria-label).
    labels = {a.get("for") for a in page.having("label")}
    for field in page.having("input") + page.having("select"):
        if field.get("type") in ("hidden", "submit"):
            continue
        assert field.get("id") in labels or field.get("aria-label"), field
    # Every column header says it is one; no inline script anywhere.
    for th in page.having("th"):
        assert th.get("scope") in ("col", "row"), th
    for script in page.having("script"):
        assert script.get("src") == "/static/console.js"
    assert "<script>" not in html
    return page


# -- signing in and out ----------------------------------------------------------------------


async def test_a_page_without_a_session_redirects_to_the_sign_in_form(client: Client) -> None:
    answer = await client.get("/events/evt_x?y=1", allow_redirects=False)
    assert answer.status == 303
    assert answer.headers["Location"] == "/sign-in?next=%2Fevents%2Fevt_x%3Fy%3D1"


async def test_the_sign_in_form_is_labelled_and_carries_its_own_csrf_value(
    client: Client,
) -> None:
    answer = await client.get("/sign-in")
    html = await answer.text()
    assert answer.status == 200
    page = outline(html)
    assert page.having("label")[0].get("for") == "f-token"
    assert page.having("input")[-1].get("type") == "password"
    pre = set_cookie_headers(answer)["relay_console_signin"]
    assert "HttpOnly" in pre
    assert "SameSite=Strict" in pre
    assert csrf_of(html) in pre


async def test_signing_in_sets_an_httponly_strict_session_cookie(client: Client) -> None:
    form = await (await client.get("/sign-in")).text()
    answer = await client.post(
        "/sign-in",
        data={"token": WRITE_TOKEN, "csrf": csrf_of(form), "next": "/targets"},
        allow_redirects=False,
    )
    assert answer.status == 303
    assert answer.headers["Location"] == "/targets"
    header = set_cookie_headers(answer)[COOKIE]
    cookie = SimpleCookie(header)[COOKIE]
    assert cookie["httponly"]
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"
    assert not cookie["secure"]  # plain http, no trusted proxy: a Secure cookie would be lost
    assert WRITE_TOKEN not in header
    assert cookie.value.startswith("alice|")


@pytest.mark.parametrize(
    ("trust", "forwarded", "secure"),
    [("1", "https", True), ("0", "https", False), ("1", "http", False)],
)
async def test_the_cookie_is_secure_when_a_trusted_proxy_says_https(
    aiohttp_client: Callable[..., AsyncIterator[Client]],
    redis_url: str,
    trust: str,
    forwarded: str,
    secure: bool,
) -> None:
    app = console_app(redis_url, env={"RELAY_ADMIN_TRUST_PROXY": trust})
    client: Client = await aiohttp_client(app)  # type: ignore[misc]
    headers = {"X-Forwarded-Proto": forwarded}
    shown = await client.get("/sign-in", headers=headers)
    pre = SimpleCookie(set_cookie_headers(shown)["relay_console_signin"])["relay_console_signin"]
    assert bool(pre["secure"]) is secure
    # The test client speaks plain http, so it keeps a Secure cookie to itself: sent by hand.
    answer = await client.post(
        "/sign-in",
        data={"token": WRITE_TOKEN, "csrf": csrf_of(await shown.text())},
        headers={**headers, "Cookie": f"relay_console_signin={pre.value}"},
        allow_redirects=False,
    )
    cookie = SimpleCookie(set_cookie_headers(answer)[COOKIE])[COOKIE]
    assert bool(cookie["secure"]) is secure


async def test_a_wrong_token_is_refused_and_starts_no_session(client: Client) -> None:
    form = await (await client.get("/sign-in")).text()
    answer = await client.post(
        "/sign-in", data={"token": "x" * 40, "csrf": csrf_of(form)}, allow_redirects=False
    )
    assert answer.status == 401
    assert COOKIE not in set_cookie_headers(answer)
    assert "That token is not valid." in await answer.text()


async def test_a_sign_in_posted_from_elsewhere_is_refused(client: Client) -> None:
    """Login CSRF: another site cannot sign this browser in under a token of its choosing."""
    answer = await client.post(
        "/sign-in", data={"token": WRITE_TOKEN, "csrf": "guessed"}, allow_redirects=False
    )
    assert answer.status == 403
    assert COOKIE not in set_cookie_headers(answer)
    form = await (await client.get("/sign-in")).text()
    answer = await client.post(
        "/sign-in",
        data={"token": WRITE_TOKEN, "csrf": csrf_of(form)},
        headers={"Sec-Fetch-Site": "cross-site"},
        allow_redirects=False,
    )
    assert answer.status == 403


async def test_signing_out_ends_the_session(client: Client) -> None:
    csrf = await sign_in(client, WRITE_TOKEN)
    refused = await client.post("/sign-out", data={"csrf": "stale"}, allow_redirects=False)
    assert refused.status == 403
    answer = await client.post("/sign-out", data={"csrf": csrf}, allow_redirects=False)
    assert answer.status == 303
    assert answer.headers["Location"] == "/sign-in"
    assert "Max-Age=0" in set_cookie_headers(answer)[COOKIE]
    after = await client.get("/", allow_redirects=False)
    assert after.status == 303


async def test_a_bearer_token_reads_pages_without_a_session(client: Client) -> None:
    answer = await client.get("/", headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert answer.status == 200
    html = await answer.text()
    assert "signed in as" in html
    assert "/sign-out" not in html
    wrong = await client.get(
        "/", headers={"Authorization": "Bearer " + "z" * 40}, allow_redirects=False
    )
    assert wrong.status == 303


# -- pages, as served ------------------------------------------------------------------------


async def test_the_overview_is_readable_without_script(
    client: Client, redis_client: redis.Redis
) -> None:
    seed_event(
        redis_client,
        source="shop",
        deliveries={"crm": (DeliveryState.DEAD, 3, "HTTP 500 three times")},
        dead_at={"crm": NOW},
    )
    redis_client.set(keys.paused_key("billing"), b'{"at": 1790000000, "reason": "maintenance"}')
    await sign_in(client, WRITE_TOKEN)
    answer = await client.get("/")
    html = await answer.text()
    assert answer.status == 200
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    page = assert_readable(html)
    assert "Needs attention" in page.words
    assert "billing is paused" in page.words
    assert "maintenance" in page.words
    assert "Resume" in page.words  # a write token may resume from the overview


def open_breaker(conn: redis.Redis, target: str, at: float) -> None:
    """Three failed attempts in a row at `at`: the breaker (3 failures, 30 s probes) opens."""
    for _ in range(3):
        Breakers(conn).record(target, True, 3, 30.0, "HTTP 503", at)


async def test_an_open_breaker_needs_attention_after_pauses_and_before_failing_targets(
    client: Client, redis_client: redis.Redis
) -> None:
    now = time.time()
    open_breaker(redis_client, "crm", now - 120)
    seed_event(
        redis_client, received=now, attempts=[attempt_record("analytics", 1, status=500, at=now)]
    )
    redis_client.set(keys.paused_key("billing"), b'{"at": 1790000000, "reason": "maintenance"}')
    await sign_in(client, READ_TOKEN)
    page = assert_readable(await (await client.get("/")).text())
    words = page.words
    assert "Needs attention (3)" in words
    assert (
        f"breaker-open crm 's circuit breaker is open since {format_time(now - 120)} (2m ago) "
        "after 3 failed attempts in a row (last: HTTP 503); next probe in" in words
    )
    assert (
        words.index("billing is paused")
        < words.index("crm 's circuit")
        < words.index("analytics : 1 of its newest")
    )
    assert "1 breakers open" in words


async def test_the_targets_page_shows_an_open_breaker_and_the_delivery_control(
    client: Client, redis_client: redis.Redis
) -> None:
    now = time.time()
    open_breaker(redis_client, "billing", now - 120)
    publish_settings(redis_client, {"crm": ControlSettings("10/s", 0.1, 0.1, 2, "body:id")})
    await sign_in(client, WRITE_TOKEN)
    html = await (await client.get("/targets")).text()
    page = assert_readable(html)
    rows = [attrs.get("data-target") for attrs in page.having("tr") if attrs.get("data-target")]
    assert rows[0] == "billing"  # breaker open: at the top, before the ok and idle ones
    state = html.split('data-target="billing"', 1)[1].split("</tr>", 1)[0]
    assert 'class="pill breaker-open"' in state
    assert (
        f"breaker open since {format_time(now - 120)} (2m ago) after 3 failed attempts in a row "
        "(last: HTTP 503); next probe in" in state
    )
    crm = html.split('data-target="crm"', 1)[1].split("</tr>", 1)[0]
    assert "rate 10/s, concurrency 0/2, FIFO per body:id (0 keys)" in crm
    analytics = html.split('data-target="analytics"', 1)[1].split("</tr>", 1)[0]
    assert '<td data-field="control"><span class="note">none</span></td>' in analytics


# -- writes: CSRF and scope ------------------------------------------------------------------


async def test_pause_and_resume_with_a_reason(client: Client, redis_client: redis.Redis) -> None:
    csrf = await sign_in(client, WRITE_TOKEN)
    page = await (await client.get("/targets")).text()
    assert_readable(page)
    assert 'action="/targets/crm/pause"' in page
    answer = await client.post(
        "/targets/crm/pause", data={"csrf": csrf, "reason": "CRM upgrade"}, allow_redirects=False
    )
    assert answer.status == 303
    assert answer.headers["Location"] == "/targets"
    stored = redis_client.get(keys.paused_key("crm"))
    assert stored is not None
    assert b"CRM upgrade (alice)" in stored
    after = await (await client.get("/targets")).text()
    assert "crm is paused: its deliveries are held." in after  # the notice of the action
    assert "CRM upgrade (alice)" in after
    assert 'action="/targets/crm/resume"' in after
    assert "crm is paused" not in await (await client.get("/targets")).text()  # shown once
    answer = await client.post("/targets/crm/resume", data={"csrf": csrf}, allow_redirects=False)
    assert answer.status == 303
    assert redis_client.get(keys.paused_key("crm")) is None


@pytest.mark.parametrize(
    ("form", "headers"),
    [
        ({}, {}),
        ({"csrf": "forged-by-another-site"}, {}),
        ({"csrf": "<right>"}, {"Sec-Fetch-Site": "cross-site"}),
    ],
    ids=["no-token", "wrong-token", "cross-site"],
)
async def test_a_cross_site_post_is_refused(
    client: Client, redis_client: redis.Redis, form: dict[str, str], headers: dict[str, str]
) -> None:
    """The browser sends the session cookie with any POST (if SameSite did not stop it): the
    CSRF token, which only the console's own pages hold, is what lets a write through."""
    csrf = await sign_in(client, WRITE_TOKEN)
    data = {k: csrf if v == "<right>" else v for k, v in form.items()} | {"reason": "evil"}
    answer = await client.post(
        "/targets/crm/pause", data=data, headers=headers, allow_redirects=False
    )
    assert answer.status == 403
    assert "another site" in await answer.text()
    assert redis_client.get(keys.paused_key("crm")) is None


async def test_a_read_token_sees_no_write_buttons_and_gets_403_on_writes(
    client: Client, redis_client: redis.Redis
) -> None:
    event_id = seed_event(
        redis_client,
        source="shop",
        deliveries={"crm": (DeliveryState.DEAD, 3, "HTTP 500")},
        dead_at={"crm": NOW},
    )
    redis_client.set(keys.paused_key("billing"), b'{"at": 1790000000, "reason": "maintenance"}')
    csrf = await sign_in(client, READ_TOKEN)
    for path in ("/", "/targets", f"/events/{event_id}"):
        html = await (await client.get(path)).text()
        forms = [f.get("action") for f in outline(html).having("form")]
        assert forms == ["/sign-out"], (path, forms)
    for path, data in (
        ("/targets/crm/pause", {"reason": "x"}),
        ("/targets/billing/resume", {}),
        (f"/events/{event_id}/replay", {}),
    ):
        answer = await client.post(path, data={"csrf": csrf, **data}, allow_redirects=False)
        assert answer.status == 403, path
        assert "scope read" in await answer.text()
    assert redis_client.get(keys.paused_key("crm")) is None
    assert redis_client.get(keys.paused_key("billing")) is not None
    assert redis_client.zcard(keys.DEAD) == 1


async def test_a_post_without_a_session_is_401(client: Client) -> None:
    answer = await client.post("/targets/crm/pause", data={"csrf": "x"}, allow_redirects=False)
    assert answer.status == 401


# -- an event --------------------------------------------------------------------------------


async def test_an_event_page_shows_body_headers_states_and_the_attempt_timeline(
    client: Client, redis_client: redis.Redis
) -> None:
    event_id = seed_event(
        redis_client,
        source="shop",
        body=b'{"event":"order.paid","id":7,"note":"<b>bold</b>"}',
        headers=(("content-type", "application/json"), ("x-event-type", "order.paid")),
        deliveries={
            "crm": (DeliveryState.DEAD, 2, "HTTP 500 twice"),
            "analytics": (DeliveryState.DELIVERED, 1, ""),
        },
        dead_at={"crm": NOW},
        attempts=[
            {"target": "crm", "attempt": 1, "at": NOW - 60, "duration_ms": 12.5, "status": 500,
             "error": None, "outcome": "retry", "response": "upstream <b>down</b>"},
            {"target": "analytics", "attempt": 1, "at": NOW - 60, "duration_ms": 8.0,
             "status": 200, "error": None, "outcome": "delivered", "response": "ok"},
            {"target": "crm", "attempt": 2, "at": NOW - 30, "duration_ms": None, "status": None,
             "error": "connection refused", "outcome": "dead", "response": ""},
        ],
    )  # fmt: skip
    await sign_in(client, WRITE_TOKEN)
    html = await (await client.get(f"/events/{event_id}")).text()
    page = assert_readable(html)
    assert f"Event {event_id}" in page.words
    assert '"event": "order.paid"' in html.replace("&quot;", '"')  # pretty-printed JSON
    assert "<details" in html  # the raw toggle, without script
    assert "<b>bold</b>" not in html  # escaped, never markup
    assert "upstream &lt;b&gt;down&lt;/b&gt;" in html
    words = page.words
    assert "Attempt 1" in words
    assert "HTTP 500" in words
    assert "12 ms" in words
    assert "connection refused" in words
    assert "x-event-type" in words
    assert "Replay to crm" in words
    assert "Replay to analytics" not in words  # delivered: nothing to replay
    assert "Replay every dead delivery (1)" in words


async def test_a_form_body_is_a_table(client: Client, redis_client: redis.Redis) -> None:
    event_id = seed_event(
        redis_client,
        body=b"event=COURSEMEMBER_ADDED&courseId=12&memberId=7",
        content_type="application/x-www-form-urlencoded",
    )
    await sign_in(client, WRITE_TOKEN)
    html = await (await client.get(f"/events/{event_id}")).text()
    assert "<caption>Form fields</caption>" in html
    assert '<th scope="row" class="mono">courseId</th><td class="mono">12</td>' in html


async def test_an_unknown_event_is_404(client: Client) -> None:
    await sign_in(client, WRITE_TOKEN)
    answer = await client.get("/events/evt_nope")
    assert answer.status == 404
    assert "No event evt_nope" in await answer.text()


async def test_replaying_an_event_from_its_page(client: Client, redis_client: redis.Redis) -> None:
    event_id = seed_event(
        redis_client,
        source="shop",
        deliveries={
            "crm": (DeliveryState.DEAD, 3, "HTTP 500"),
            "analytics": (DeliveryState.GONE, 1, "HTTP 410"),
        },
        dead_at={"crm": NOW, "analytics": NOW},
    )
    csrf = await sign_in(client, WRITE_TOKEN)
    answer = await client.post(
        f"/events/{event_id}/replay", data={"csrf": csrf, "target": "crm"}, allow_redirects=False
    )
    assert answer.status == 303
    assert answer.headers["Location"] == f"/events/{event_id}"
    html = await (await client.get(f"/events/{event_id}")).text()
    assert "Replayed to crm (attempt 4)." in html
    assert redis_client.hget(keys.event_key(event_id), "s:crm") == b"pending"
    assert redis_client.hget(keys.event_key(event_id), "s:analytics") == b"gone"
    await client.post(f"/events/{event_id}/replay", data={"csrf": csrf})
    assert redis_client.hget(keys.event_key(event_id), "s:analytics") == b"pending"
    assert redis_client.zcard(keys.DEAD) == 0


async def test_the_sources_page_shows_counts_last_event_duplicates_and_unrouted(
    client: Client, redis_client: redis.Redis
) -> None:
    older = seed_event(redis_client, source="shop", received=NOW - 600)
    newest = seed_event(redis_client, source="shop", received=NOW - 60)
    redis_client.hset(
        keys.source_stats_key("shop"), mapping={"received": 5, "duplicates": 2, "unrouted": 1}
    )
    await sign_in(client, READ_TOKEN)
    html = await (await client.get("/sources")).text()
    page = assert_readable(html)
    assert f'href="/events/{newest}"' in html
    assert older not in html
    assert "none among the newest" in page.words  # fellow has sent nothing
    row = html.split('data-source="shop"')[1].split("</tr>")[0]
    assert '<td data-field="received" class="num">5</td>' in row
    assert '<td data-field="duplicates" class="num">2</td>' in row
    assert 'href="/events?source=shop&amp;state=unrouted">1</a>' in row


# -- events ----------------------------------------------------------------------------------


async def test_events_are_searched_by_the_api_filters_newest_first_a_page_at_a_time(
    client: Client, redis_client: redis.Redis
) -> None:
    shop = [
        seed_event(redis_client, source="shop", event_type=f"order.{n}", received=NOW - 1000 + n)
        for n in range(60)
    ]
    fellow = seed_event(redis_client, source="fellow", received=NOW)
    await sign_in(client, READ_TOKEN)
    html = await (await client.get("/events?source=shop&type=order.*&target=&state=")).text()
    page = assert_readable(html)
    ids = [r.get("data-id") for r in page.having("tr") if r.get("data-id")]
    assert ids == shop[::-1][:50]  # newest first, one page
    assert fellow not in ids
    assert 'value="order.*"' in html  # the form keeps the search
    live = next(p for p in page.having("p") if p.get("id") == "live")
    assert live["data-poll"] == "/api/v1/events?source=shop&type=order.%2A&limit=50"
    older = next(a["href"] for a in page.having("a") if a.get("class") == "older")
    assert older is not None
    html = await (await client.get(older)).text()
    page = outline(html)
    ids = [r.get("data-id") for r in page.having("tr") if r.get("data-id")]
    assert ids == shop[::-1][50:]
    assert not any(p.get("id") == "live" for p in page.having("p"))  # only the first page polls
    assert "« Newest" in page.words


async def test_a_bad_filter_is_400_naming_the_field(client: Client) -> None:
    await sign_in(client, READ_TOKEN)
    answer = await client.get("/events?state=lost&received_from=yesterday")
    assert answer.status == 400
    assert "state: must be one of" in await answer.text()
    answer = await client.get("/events?cursor=garbage")
    assert answer.status == 400
    assert "cursor:" in await answer.text()


# -- dead letters ----------------------------------------------------------------------------


def seed_dead(conn: redis.Redis, n: int, target: str = "crm", source: str = "shop") -> list[str]:
    """`n` events whose delivery to `target` is a dead letter, oldest first."""
    return [
        seed_event(
            conn,
            source=source,
            received=NOW - 1000 + i,
            deliveries={target: (DeliveryState.DEAD, 3, f"HTTP 500 #{i}")},
            dead_at={target: NOW - 500 + i},
        )
        for i in range(n)
    ]


async def test_dead_letters_are_filtered_and_listed_newest_first(
    client: Client, redis_client: redis.Redis
) -> None:
    crm = seed_dead(redis_client, 3)
    billing = seed_dead(redis_client, 2, target="billing")
    await sign_in(client, WRITE_TOKEN)
    html = await (await client.get("/dead-letters?target=crm&source=")).text()
    page = assert_readable(html)
    rows = [(r.get("data-id"), r.get("data-target")) for r in page.having("tr") if r.get("data-id")]
    assert rows == [(i, "crm") for i in crm[::-1]]
    assert not set(billing) & {i for i, _ in rows}
    boxes = [i for i in page.having("input") if i.get("name") == "letter"]
    assert [b["value"] for b in boxes] == [f"{i}:crm" for i in crm[::-1]]
    assert {
        i["name"]: i["value"]
        for i in page.having("input")
        if (i.get("name") or "").startswith("filter_")
    } == {"filter_target": "crm"}


async def test_a_read_token_lists_dead_letters_without_selection_or_replay(
    client: Client, redis_client: redis.Redis
) -> None:
    seed_dead(redis_client, 2)
    await sign_in(client, READ_TOKEN)
    html = await (await client.get("/dead-letters")).text()
    page = assert_readable(html)
    assert not [i for i in page.having("input") if i.get("name") == "letter"]
    assert [f.get("action") for f in page.having("form") if f.get("method") == "post"] == [
        "/sign-out"
    ]


async def test_bulk_replay_previews_the_count_then_replays_with_a_job(
    client: Client, redis_client: redis.Redis
) -> None:
    crm = seed_dead(redis_client, 4)
    seed_dead(redis_client, 2, target="billing")
    csrf = await sign_in(client, WRITE_TOKEN)
    answer = await client.post(
        "/dead-letters/replay",
        data={"csrf": csrf, "scope": "filter", "filter_target": "crm"},
        allow_redirects=False,
    )
    html = await answer.text()
    assert answer.status == 200
    page = assert_readable(html)
    assert "4 dead letter(s) matching the filter will be replayed." in page.words
    assert redis_client.zcard(keys.DEAD) == 6  # a preview changes nothing
    answer = await client.post(
        "/dead-letters/replay",
        data={"csrf": csrf, "scope": "filter", "filter_target": "crm", "confirm": "1"},
        allow_redirects=False,
    )
    assert answer.status == 303
    job_page = answer.headers["Location"]
    assert job_page.startswith("/dead-letters/jobs/job_")
    html = await (await client.get(job_page)).text()
    assert "Replaying 4 dead letter(s)." in outline(html).words  # the notice, once
    for _ in range(100):  # bounded: the job runs on this loop, a chunk per thread hop
        if "finished" in html:
            break
        html = await (await client.get(job_page)).text()
    assert_readable(html)
    assert '<progress id="job-progress" max="4" value="4">' in html
    assert redis_client.zcard(keys.DEAD) == 2
    assert {redis_client.hget(keys.event_key(i), "s:crm") for i in crm} == {b"pending"}


async def test_bulk_replay_of_ticked_rows_counts_only_those(
    client: Client, redis_client: redis.Redis
) -> None:
    crm = seed_dead(redis_client, 5)
    csrf = await sign_in(client, WRITE_TOKEN)
    ticked = [f"{crm[1]}:crm", f"{crm[3]}:crm"]
    html = await (
        await client.post(
            "/dead-letters/replay", data=[("csrf", csrf), ("scope", "selected")]
            + [("letter", m) for m in ticked],
        )
    ).text()  # fmt: skip
    assert "2 dead letter(s) selected will be replayed." in outline(html).words
    assert [i["value"] for i in outline(html).having("input") if i.get("name") == "letter"] == (
        ticked
    )


async def test_a_bulk_replay_needs_the_csrf_token_and_write_scope(
    client: Client, redis_client: redis.Redis
) -> None:
    seed_dead(redis_client, 2)
    await sign_in(client, WRITE_TOKEN)
    data = {"scope": "filter", "confirm": "1"}
    answer = await client.post("/dead-letters/replay", data=data, allow_redirects=False)
    assert answer.status == 403
    csrf = await sign_in(client, READ_TOKEN)
    answer = await client.post(
        "/dead-letters/replay", data={**data, "csrf": csrf}, allow_redirects=False
    )
    assert answer.status == 403
    assert redis_client.zcard(keys.DEAD) == 2


# -- the API with the console's session ------------------------------------------------------


async def test_the_api_takes_the_session_cookie_and_wants_the_csrf_header_on_writes(
    client: Client, redis_client: redis.Redis
) -> None:
    assert (await client.get("/api/v1/status")).status == 401
    csrf = await sign_in(client, WRITE_TOKEN)
    assert (await client.get("/api/v1/events?limit=5")).status == 200
    refused = await client.post("/api/v1/targets/crm/pause", json={"reason": "x"})
    assert refused.status == 403
    assert (await refused.json())["error"]["code"] == "csrf_failed"
    cross = await client.post(
        "/api/v1/targets/crm/pause",
        json={"reason": "x"},
        headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status == 403
    assert redis_client.get(keys.paused_key("crm")) is None
    answer = await client.post(
        "/api/v1/targets/crm/pause", json={"reason": "x"}, headers={"X-CSRF-Token": csrf}
    )
    assert answer.status == 200, await answer.text()
    assert redis_client.get(keys.paused_key("crm")) is not None
    read_csrf = await sign_in(client, READ_TOKEN)
    answer = await client.post("/api/v1/targets/crm/resume", headers={"X-CSRF-Token": read_csrf})
    assert answer.status == 403
    assert (await answer.json())["error"]["code"] == "insufficient_scope"


async def test_static_files_are_served_and_nothing_else_there(client: Client) -> None:
    css = await client.get("/static/console.css")
    assert css.status == 200
    assert css.content_type == "text/css"
    js = await client.get("/static/console.js")
    assert js.content_type == "text/javascript"
    assert "innerHTML" not in (await js.text()).replace("never innerHTML", "")
    assert (await client.get("/static/../session.py")).status == 404


async def test_every_write_and_refused_write_is_one_audit_line_without_a_token_value(
    client: Client, redis_client: redis.Redis
) -> None:
    csrf = await sign_in(client, WRITE_TOKEN)
    with capture_logs() as logs:
        await client.post("/targets/crm/pause", data={"csrf": csrf, "reason": "upgrade"})
        await client.post("/targets/crm/pause", data={"csrf": "forged", "reason": "x"})
        await client.post("/targets/crm/resume", data={"csrf": csrf})
    lines = [line for line in logs if line["event"] == "admin_audit"]
    assert [(line["action"], line["what"], line["result"]) for line in lines] == [
        ("pause", "crm", "paused"),
        ("POST /targets/crm/pause", "/targets/crm/pause", "refused: csrf_failed"),
        ("resume", "crm", "resumed"),
    ]
    assert {line["principal"] for line in lines} == {"alice"}
    assert {line["via"] for line in lines} == {"console"}
    assert WRITE_TOKEN not in repr(logs)
