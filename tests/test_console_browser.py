"""The console in a real browser: Debian's Chromium, driven by Selenium through chromedriver,
against real `relay serve` (with its admin listener) and `relay worker` processes, real Redis
and loopback targets. Sign in, search, watch the list update, open an event, replay it and see
it delivered, pause and resume a target, bulk-replay dead letters after a count preview, read
the sources, sign out; a screenshot of each page goes to tests/artifacts/ (and to
RELAY_CONSOLE_SCREENSHOTS, a directory, when set: docs/img is made that way).

Skipped without chromium and chromedriver, a failure when RELAY_REQUIRE_CHROMIUM=1 (CI).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from relay.store import keys
from tests.support.console import TOKENS_ENV, WRITE_TOKEN
from tests.support.processes import post, relay_env, relay_processes, wait_until
from tests.support.redis_server import free_port
from tests.support.seed_events import routes_toml
from tests.support.targets import TargetServer

ARTIFACTS = Path(__file__).parent / "artifacts"
#: The flags of the status page's browser test (tests/test_status_page.py), for the same reasons.
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
    "--window-size=1280,860",
)
#: Bounds of each wait: a loaded 2-core machine, not a threshold.
WAIT = 30.0


def browser_binaries() -> tuple[str, str]:
    """chromium and chromedriver on PATH; skip (or fail with RELAY_REQUIRE_CHROMIUM=1)."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if None in found:
        message = "chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
        if os.environ.get("RELAY_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"RELAY_REQUIRE_CHROMIUM=1 but {message}")
        pytest.skip(message)
    return found  # type: ignore[return-value]


def test_without_a_browser_the_test_skips_or_fails_when_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no chromium on it
    monkeypatch.delenv("RELAY_REQUIRE_CHROMIUM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromedriver are needed"):
        browser_binaries()
    monkeypatch.setenv("RELAY_REQUIRE_CHROMIUM", "1")
    with pytest.raises(pytest.fail.Exception, match="RELAY_REQUIRE_CHROMIUM=1"):
        browser_binaries()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium under chromedriver (both Debian's, so their versions match)."""
    chromium, chromedriver = browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    # Service with an explicit path: Selenium Manager never looks for (or downloads) a driver.
    service = Service(executable_path=chromedriver, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: WebDriver, name: str) -> None:
    """Save a screenshot of the page as tests/artifacts/console-NAME.png (and to the docs)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"console-{name}.png"
    assert driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if extra := os.environ.get("RELAY_CONSOLE_SCREENSHOTS"):
        shutil.copy(path, Path(extra) / path.name)


def wait_for(driver: WebDriver, condition: object, message: str) -> None:
    """Wait (bounded) until `condition(driver)` is true; the page's text in the failure."""
    try:
        # A click that loads a page leaves the old page's elements stale for a moment; Chromium
        # sometimes says so as a plain WebDriverException ("Node with given id does not belong
        # to the document") rather than a stale element. Either way: look again, and a page
        # that never gets there still fails at the deadline with its text.
        WebDriverWait(
            driver,
            WAIT,
            poll_frequency=0.2,
            ignored_exceptions=(StaleElementReferenceException, WebDriverException),
        ).until(condition)  # type: ignore[arg-type]
    except TimeoutException:
        pytest.fail(f"{message}; the page at {driver.current_url} says: {text_of(driver)}")


def text_of(driver: WebDriver) -> str:
    return " ".join(driver.find_element(By.TAG_NAME, "main").text.split())


def cell(driver: WebDriver, selector: str) -> str:
    try:
        return str(driver.find_element(By.CSS_SELECTOR, selector).text)
    except NoSuchElementException:
        return ""


def send(base: str, event_type: str, n: int) -> str:
    body = orjson.dumps({"type": event_type, "n": n})
    status, answer = post(
        f"{base}/hooks/shop", body, {"content-type": "application/json", "x-event-type": event_type}
    )
    assert status == 202, answer
    return str(orjson.loads(answer)["id"])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_operator_session_in_chromium(
    browser: WebDriver,
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    targets: TargetServer,
) -> None:
    routes = tmp_path / "routes.toml"
    once = {"attempts": 1, "first": "1s", "max": "1s"}
    # crm takes everything; erp fails each delivery's first request, and with one attempt
    # each event's erp delivery becomes a dead letter that a replay then delivers.
    routes.write_text(
        routes_toml({"crm": {"url": targets.url("/ok/crm")},
                     "erp": {"url": targets.url("/fail/erp/1"), "retry": once}})
    )  # fmt: skip
    admin_port = free_port()
    env = relay_env(
        redis_url, routes, RELAY_ADMIN_TOKENS=TOKENS_ENV, RELAY_ADMIN_PORT=str(admin_port)
    )
    with relay_processes(tmp_path, env) as procs:
        _, base = procs.serve()
        procs.worker()
        admin = f"http://127.0.0.1:{admin_port}"
        sent = [send(base, t, n) for n, t in enumerate(["order.paid", "order.refunded"] * 3)]
        assert wait_until(lambda: redis_client.zcard(keys.DEAD) == len(sent), WAIT)
        run_session(browser, admin, base, redis_client, targets, sent)


def run_session(
    d: WebDriver,
    admin: str,
    base: str,
    conn: redis.Redis,
    targets: TargetServer,
    sent: list[str],
) -> None:
    # Sign in: a page asks for it first, and comes back after.
    d.get(f"{admin}/events")
    assert d.current_url.startswith(f"{admin}/sign-in?next=")
    shot(d, "sign-in")
    d.find_element(By.ID, "f-token").send_keys(WRITE_TOKEN)
    d.find_element(By.CSS_SELECTOR, "form.signin button").click()
    wait_for(d, lambda d: d.current_url == f"{admin}/events", "no way back after sign-in")
    assert "signed in as alice" in d.find_element(By.CLASS_NAME, "account").text

    # The overview: erp's dead letters and its health stand out.
    d.get(admin + "/")
    assert "Needs attention" in text_of(d)
    assert "erp: " in text_of(d)
    shot(d, "overview")

    # Search by type; then a new event of that type shows up without a reload.
    d.get(f"{admin}/events")
    d.find_element(By.ID, "f-type").send_keys("order.refunded")
    d.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    wait_for(d, lambda d: "type=order.refunded" in d.current_url, "the search did not run")
    rows = d.find_elements(By.CSS_SELECTOR, "#events tbody tr")
    assert [r.get_attribute("data-id") for r in rows] == [sent[5], sent[3], sent[1]]
    fresh = send(base, "order.refunded", 99)
    wait_for(
        d,
        lambda d: d.find_elements(By.CSS_SELECTOR, f'#events tr[data-id="{fresh}"]'),
        "the live list did not show the new event",
    )
    assert send(base, "order.paid", 100)  # another type: the filtered list must not show it
    shot(d, "events")

    # Open an event, toggle its raw body, replay its dead delivery, see it delivered.
    d.find_element(By.LINK_TEXT, sent[1]).click()
    wait_for(d, lambda d: sent[1] in d.find_element(By.TAG_NAME, "h1").text, "no event page")
    d.find_element(By.CSS_SELECTOR, "details.raw summary").click()
    assert d.find_element(By.CSS_SELECTOR, "details.raw").get_attribute("open") is not None
    assert '"type":"order.refunded"' in d.find_element(By.CSS_SELECTOR, "pre[data-kind=raw]").text
    shot(d, "event")
    d.find_element(By.XPATH, "//button[normalize-space()='Replay to erp']").click()
    wait_for(d, lambda d: "Replayed to erp" in text_of(d), "no notice after the replay")

    def delivered(d: WebDriver) -> bool:
        d.refresh()
        return cell(d, 'section[data-target="erp"] h3 .pill') == "delivered"

    wait_for(d, delivered, "the replayed delivery was not delivered")
    assert len([r for r in targets.by_name("erp") if r.status == 200]) == 1
    shot(d, "event-delivered")

    # Pause a target with a reason, see it held, resume it.
    d.get(f"{admin}/targets")
    d.find_element(By.ID, "reason-crm").send_keys("CRM upgrade tonight")
    d.find_element(By.CSS_SELECTOR, 'form[aria-label="Pause crm"] button').click()
    wait_for(d, lambda d: "crm is paused" in text_of(d), "no notice after the pause")
    assert "CRM upgrade tonight (alice)" in cell(d, '#target-crm [data-field="state"]')
    assert conn.exists(keys.paused_key("crm"))
    shot(d, "targets")
    d.find_element(By.CSS_SELECTOR, 'form[aria-label="Resume crm"] button').click()
    wait_for(d, lambda d: "crm is resumed" in text_of(d), "no notice after the resume")
    assert not conn.exists(keys.paused_key("crm"))

    # Dead letters: select all, preview the count, replay, follow the progress.
    d.get(f"{admin}/dead-letters?target=erp")
    boxes = d.find_elements(By.CSS_SELECTOR, 'input[name="letter"]')
    dead_now = conn.zcard(keys.DEAD)
    assert len(boxes) == dead_now
    d.find_element(By.CSS_SELECTOR, "input[data-select-all]").click()
    assert cell(d, "[data-selected-count]") == f"{dead_now} selected"
    shot(d, "dead-letters")
    d.find_element(By.CSS_SELECTOR, 'button[value="selected"]').click()
    wait_for(d, lambda d: d.find_elements(By.ID, "replay-count"), "no preview")
    assert cell(d, "#replay-count strong") == str(dead_now)
    assert conn.zcard(keys.DEAD) == dead_now  # the preview changed nothing
    shot(d, "replay-preview")
    d.find_element(By.CSS_SELECTOR, 'form[aria-label="Confirm the replay"] button').click()
    wait_for(d, lambda d: "/dead-letters/jobs/job_" in d.current_url, "no job page")
    wait_for(d, lambda d: "finished" in cell(d, ".job .pill"), "the job did not finish")
    assert d.find_element(By.ID, "job-progress").get_attribute("value") == str(dead_now)
    shot(d, "replay-job")
    assert wait_until(lambda: conn.zcard(keys.DEAD) == 0, WAIT)

    # Sources, then sign out: the console asks for a token again.
    d.get(f"{admin}/sources")
    assert cell(d, '[data-source="shop"] [data-field="received"]') == str(len(sent) + 2)
    shot(d, "sources")
    d.find_element(By.CSS_SELECTOR, 'form[aria-label="Sign out"] button').click()
    wait_for(d, lambda d: d.current_url == f"{admin}/sign-in", "no sign-in page after sign-out")
    d.get(f"{admin}/")
    assert d.current_url.startswith(f"{admin}/sign-in")
