"""`relay events list|show` in-process through relay.cli.main.main, and once as a real
subprocess."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from relay.cli import events as events_cli
from relay.cli.common import redact_url
from relay.cli.events_output import (
    body_text,
    compact_states,
    human_duration,
    printable,
)
from relay.cli.main import main
from relay.config.loading import parse_routes
from relay.config.settings import Settings
from relay.core.states import DeliveryState
from relay.core.times import format_time
from relay.ops.events import EventSummary, TargetState
from relay.receiver.app import create_app
from relay.store import keys
from relay.store.breakers import Breakers
from tests.support.seed_states import LISTING_NOW as NOW
from tests.support.seed_states import logged_attempt as record
from tests.support.seed_states import seed_received_event as seed_event

ID_A = "evt_01M6NJDA80R7NEJH84DKCVZMW9"
ID_B = "evt_01M6NJBFN09WTZTY66TWQDG66P"
ID_C = "evt_01M6NJ9MZ0AAAAAAAAAAAAAAAA"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the command at the test Redis, as an operator does with REDIS_URL."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    return redis_url


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["events", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def seed_two(conn: redis.Redis) -> None:
    seed_event(
        conn,
        event_id=ID_A,
        targets=("crm", "analytics"),
        states={"crm": (DeliveryState.DELIVERED, 1), "analytics": (DeliveryState.RETRYING, 3)},
        reasons={"analytics": "HTTP 503"},
        attempts=[
            record("crm", 1, NOW + 0.1),
            record(
                "analytics",
                1,
                NOW + 0.1,
                status=503,
                outcome="retry",
                duration=0.0304,
                response="Service Unavailable\n<html>",
                retry_in=5.2,
            ),
            record(
                "analytics",
                2,
                NOW + 5,
                status=None,
                error="timeout after 10s",
                outcome="retry",
                duration=10.0,
                response="",
            ),
        ],
    )
    seed_event(conn, event_id=ID_B, received=NOW - 60, source="chalk", type_=None, targets=())


# -- list --------------------------------------------------------------------------------------


def test_list_table(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_two(redis_client)
    code, out, err = run_cli(capsys, "list")
    assert code == 0
    assert err == ""
    assert out == (
        "ID                              RECEIVED                  SOURCE  TYPE                "
        "DELIVERIES\n"
        f"{ID_A}  2026-11-05T10:00:00.000Z  fellow  COURSEMEMBER_ADDED  "
        "crm:delivered analytics:retrying(3)\n"
        f"{ID_B}  2026-11-05T09:59:00.000Z  chalk   -                   unrouted\n"
    )


def test_list_json_shape(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_two(redis_client)
    code, out, _ = run_cli(capsys, "list", "--json")
    assert code == 0
    assert orjson.loads(out) == {
        "events": [
            {
                "id": ID_A,
                "received": "2026-11-05T10:00:00.000Z",
                "received_at": NOW,
                "source": "fellow",
                "type": "COURSEMEMBER_ADDED",
                "unrouted": False,
                "targets": [
                    {"target": "crm", "state": "delivered", "attempts": 1},
                    {"target": "analytics", "state": "retrying", "attempts": 3},
                ],
            },
            {
                "id": ID_B,
                "received": "2026-11-05T09:59:00.000Z",
                "received_at": NOW - 60,
                "source": "chalk",
                "type": None,
                "unrouted": True,
                "targets": [],
            },
        ],
        "partial": False,
        "scanned": 2,
    }


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--source", "chalk"], [ID_B]),
        (["--type", "COURSE*"], [ID_A]),
        (["--target", "analytics"], [ID_A]),
        (["--state", "unrouted"], [ID_B]),
        (["--state", "retrying"], [ID_A]),
        (["--target", "crm", "--state", "retrying"], []),
        (["--since", "2026-11-05T09:59:30Z"], [ID_A]),
        (["--since", "2026-11-05T09:59:00"], [ID_A, ID_B]),  # no offset: UTC
        (["--limit", "1"], [ID_A]),
    ],
)
def test_list_filters(
    env: str,
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    expected: list[str],
) -> None:
    seed_two(redis_client)
    code, out, _ = run_cli(capsys, "list", "--json", *flags)
    assert code == 0
    assert [e["id"] for e in orjson.loads(out)["events"]] == expected


def test_list_since_relative(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    recent = seed_event(redis_client, received=now - 60)
    seed_event(redis_client, received=now - 3 * 3600)
    code, out, _ = run_cli(capsys, "list", "--since", "2h", "--json")
    assert code == 0
    assert [e["id"] for e in orjson.loads(out)["events"]] == [recent]


def test_list_nothing_matches(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "list", "--source", "nobody")
    assert (code, out, err) == (0, "", "no events match\n")


def test_list_bad_since_is_a_usage_error(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "list", "--since", "yesterday")
    assert code == 2
    assert out == ""
    assert "--since: expected a time like '2h', '30m', '7d' or ISO-8601" in err
    assert "'yesterday'" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["list", "--limit", "-1"], "--limit/-n: must be 0 or more, got '-1'"),
        (["list", "-n", "ten"], "--limit/-n: expected a whole number, got 'ten'"),
        (["show", "x", "--max-body", "big"], "--max-body: expected a size in bytes"),
    ],
)
def test_bad_numbers_are_usage_errors(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["events", *flags])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_list_unknown_state_is_rejected(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["events", "list", "--state", "lost"])
    assert exc.value.code == 2
    assert "invalid choice: 'lost'" in capsys.readouterr().err


def test_list_says_when_partial(
    env: str,
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(events_cli, "SCAN_LIMIT", 3)
    for i in range(5):
        seed_event(redis_client, received=NOW - i)
    code, out, err = run_cli(capsys, "list", "--source", "other")
    assert code == 0
    assert out == ""
    assert err == (
        "no events match\n"
        "relay events list: partial listing: stopped after reading 3 events; "
        "narrow it with --since\n"
    )
    code, out, _ = run_cli(capsys, "list", "--source", "other", "--json")
    assert orjson.loads(out) == {"events": [], "partial": True, "scanned": 3}


# -- show --------------------------------------------------------------------------------------


def test_show_text(env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    seed_two(redis_client)
    code, out, err = run_cli(capsys, "show", ID_A)
    assert code == 0
    assert err == ""
    assert out == (
        f"id:           {ID_A}\n"
        "source:       fellow\n"
        "type:         COURSEMEMBER_ADDED\n"
        "received:     2026-11-05T10:00:00.000Z\n"
        "method:       POST\n"
        "content-type: application/x-www-form-urlencoded\n"
        "expires in:   7d\n"
        "headers:\n"
        "  x-fellow-event: COURSEMEMBER_ADDED\n"
        "body: 30 bytes\n"
        "  event=COURSEMEMBER_ADDED&id=42\n"
        "\n"
        "target crm: delivered, 1 attempt\n"
        "  ATTEMPT  AT                        RESULT  MS  OUTCOME    RESPONSE\n"
        '        1  2026-11-05T10:00:00.100Z  200     12  delivered  {"ok":true}\n'
        "target analytics: retrying, 3 attempts\n"
        "  reason: HTTP 503\n"
        "  ATTEMPT  AT                        RESULT                MS  OUTCOME      RESPONSE\n"
        "        1  2026-11-05T10:00:00.100Z  503                   30  retry in 5s  "
        "Service Unavailable\n"
        "        2  2026-11-05T10:00:05.000Z  timeout after 10s  10000  retry        -\n"
    )


def test_show_json_shape(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_two(redis_client)
    code, out, _ = run_cli(capsys, "show", ID_A, "--json")
    assert code == 0
    data = orjson.loads(out)
    assert 0 < data.pop("expires_in") <= 7 * 86400
    assert data == {
        "id": ID_A,
        "source": "fellow",
        "type": "COURSEMEMBER_ADDED",
        "received": "2026-11-05T10:00:00.000Z",
        "received_at": NOW,
        "method": "POST",
        "content_type": "application/x-www-form-urlencoded",
        "headers": [["x-fellow-event", "COURSEMEMBER_ADDED"]],
        "body": {
            "size": 30,
            "encoding": "utf-8",
            "data": "event=COURSEMEMBER_ADDED&id=42",
            "truncated": False,
        },
        "unrouted": False,
        "enrichment": None,
        "attempts_omitted": 0,
        "deliveries": [
            {
                "target": "crm",
                "state": "delivered",
                "attempts_made": 1,
                "attempts_before_replay": 0,
                "reason": "",
                "attempts": [
                    {
                        "attempt": 1,
                        "at": "2026-11-05T10:00:00.100Z",
                        "at_unix": NOW + 0.1,
                        "status": 200,
                        "error": None,
                        "duration_ms": 12,
                        "outcome": "delivered",
                        "response": '{"ok":true}',
                        "retry_in_s": None,
                    }
                ],
                "breaker": None,
                "order": None,
            },
            {
                "target": "analytics",
                "state": "retrying",
                "attempts_made": 3,
                "attempts_before_replay": 0,
                "reason": "HTTP 503",
                "attempts": [
                    {
                        "attempt": 1,
                        "at": "2026-11-05T10:00:00.100Z",
                        "at_unix": NOW + 0.1,
                        "status": 503,
                        "error": None,
                        "duration_ms": 30,
                        "outcome": "retry",
                        "response": "Service Unavailable\n<html>",
                        "retry_in_s": 5.2,
                    },
                    {
                        "attempt": 2,
                        "at": "2026-11-05T10:00:05.000Z",
                        "at_unix": NOW + 5,
                        "status": None,
                        "error": "timeout after 10s",
                        "duration_ms": 10000,
                        "outcome": "retry",
                        "response": "",
                        "retry_in_s": None,
                    },
                ],
                "breaker": None,
                "order": None,
            },
        ],
    }


def test_show_says_a_delivery_is_held_by_its_targets_open_breaker(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_two(redis_client)
    now = time.time()
    breakers = Breakers(redis_client)
    for target in ("analytics", "crm"):
        breakers.record(target, True, 1, 30.0, "HTTP 503", now)
    code, out, _ = run_cli(capsys, "show", ID_A)
    assert code == 0
    lines = out.splitlines()
    reason = lines.index("  reason: HTTP 503")
    assert lines[reason + 1].startswith(
        f"  held: the target's circuit breaker is open since {format_time(now)} ("
    )
    assert "after 1 failed attempt in a row (last: HTTP 503); next probe in" in lines[reason + 1]
    assert out.count("held:") == 1  # crm's delivery is over: its breaker holds nothing of it
    _, out, _ = run_cli(capsys, "show", ID_A, "--json")
    crm, analytics = orjson.loads(out)["deliveries"]
    assert analytics["breaker"]["state"] == "open"
    assert analytics["breaker"]["at"] == now
    assert crm["breaker"]["state"] == "open"  # the JSON says it all the same


def test_show_the_kept_enrichment_record(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_two(redis_client)
    record = b'{"completed":true,"score":80,"note":"\xe2\x80\xaeevil"}'
    redis_client.set(keys.enrichment_key(ID_A), record, ex=600)
    code, out, _ = run_cli(capsys, "show", ID_A)
    assert code == 0
    assert (
        "body: 30 bytes\n"
        "  event=COURSEMEMBER_ADDED&id=42\n"
        "enrichment record: 46 bytes (sent to enriching targets with the body)\n"
        "  {\n"
        '    "completed": true,\n'
        '    "score": 80,\n'
        '    "note": "\\u202eevil"\n'  # a provider's text cannot turn the terminal around
        "  }\n"
        "\n"
        "target crm: delivered, 1 attempt\n"
    ) in out
    code, out, _ = run_cli(capsys, "show", ID_A, "--max-body", "20")
    assert "enrichment record: 46 bytes (sent to enriching targets with the body; first 20 " in out
    code, out, _ = run_cli(capsys, "show", ID_A, "--json")
    assert orjson.loads(out)["enrichment"] == {
        "completed": True,
        "score": 80,
        "note": "\u202eevil",
    }
    assert redis_client.ttl(keys.enrichment_key(ID_A)) <= 600  # looking renews nothing
    # A value that is not a JSON object is no record: not shown.
    redis_client.set(keys.enrichment_key(ID_A), b"[1, 2]")
    code, out, _ = run_cli(capsys, "show", ID_A)
    assert "enrichment" not in out
    code, out, _ = run_cli(capsys, "show", ID_A, "--json")
    assert orjson.loads(out)["enrichment"] is None


def test_show_unrouted_replayed(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_two(redis_client)
    code, out, _ = run_cli(capsys, "show", ID_B)
    assert code == 0
    assert "type:         -\n" in out
    assert out.endswith("deliveries: none (unrouted: no route matched this source and type)\n")
    seed_event(
        redis_client,
        event_id=ID_C,
        states={"crm": (DeliveryState.PENDING, 10)},
        replayed={"crm": 10},
        reasons={"crm": ""},
    )
    code, out, _ = run_cli(capsys, "show", ID_C)
    assert out.endswith("target crm: pending, 10 attempts (10 before the latest replay)\n")


def test_show_body_preview_is_bounded_and_escaped(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    body = b'{"name": "\x1b[31mred\xff"}\r\n' + "é".encode() * 10
    seed_event(redis_client, event_id=ID_C, body=body, content_type="application/json")
    code, out, _ = run_cli(capsys, "show", ID_C, "--max-body", "30")
    assert code == 0
    assert "\x1b" not in out
    # 30 bytes end in the middle of the fourth "é": it is left out, not mangled.
    assert "body: 43 bytes, first 30 shown (--body: all)\n" in out
    assert '  {"name": "\\x1b[31mred\\xff"}\\r\n  ééé\n\n' in out


def test_show_body_writes_exact_bytes(
    env: str, redis_client: redis.Redis, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    body = bytes(range(256)) * 10
    seed_event(redis_client, event_id=ID_C, body=body)
    code = main(["events", "show", ID_C, "--body"])
    out, err = capsysbinary.readouterr()
    assert code == 0
    assert out == body
    assert err == b""


def test_show_json_body_preview_and_binary(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_event(redis_client, event_id=ID_A, body="é".encode() * 10)
    seed_event(redis_client, event_id=ID_B, body=b"\xff\xfe" * 700)
    _, out, _ = run_cli(capsys, "show", ID_A, "--json", "--max-body", "5")
    # The 5th byte starts an "é": the preview holds two whole characters.
    assert orjson.loads(out)["body"] == {
        "size": 20,
        "encoding": "utf-8",
        "data": "éé",
        "truncated": True,
    }
    _, out, _ = run_cli(capsys, "show", ID_B, "--json", "--body")
    body = orjson.loads(out)["body"]
    assert body["encoding"] == "base64"
    assert base64.b64decode(body["data"]) == b"\xff\xfe" * 700
    assert (body["size"], body["truncated"]) == (1400, False)


def test_show_unknown_event(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "show", ID_A)
    assert (code, out) == (1, "")
    assert err == (
        f"relay events show: no event {ID_A}: unknown, or expired after the retention period\n"
    )
    code, _, err = run_cli(capsys, "show", "crm")
    assert code == 1
    assert err.endswith("(event ids look like evt_ and 26 characters)\n")


def test_unreachable_redis_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.redis_server import free_port

    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("REDIS_URL", url)
    code, out, err = run_cli(capsys, "list")
    assert (code, out) == (1, "")
    assert err.startswith("relay events: cannot reach Redis at redis://:****@127.0.0.1:")
    assert "hunter2" not in err


def test_subprocess_with_redis_url(redis_url: str, redis_client: redis.Redis) -> None:
    seed_two(redis_client)
    env: dict[str, Any] = {**os.environ, "REDIS_URL": redis_url}
    done = subprocess.run(
        [sys.executable, "-m", "relay", "events", "list", "--json", "--limit", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [e["id"] for e in orjson.loads(done.stdout)["events"]] == [ID_A]
    shown = subprocess.run(
        [sys.executable, "-m", "relay", "events", "show", ID_B, "--body"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (shown.returncode, shown.stdout) == (0, b"event=COURSEMEMBER_ADDED&id=42")


# -- pure helpers --------------------------------------------------------------------------------


def test_compact_states() -> None:
    def summary(*states: tuple[str, str, int]) -> EventSummary:
        return EventSummary("e", NOW, "s", "t", tuple(TargetState(*s) for s in states))

    assert compact_states(summary()) == "unrouted"
    assert (
        compact_states(
            summary(
                ("a", "delivered", 1),
                ("b", "delivered", 2),
                ("c", "pending", 0),
                ("d", "retrying", 1),
                ("e", "dead", 10),
            )
        )
        == "a:delivered b:delivered(2) c:pending d:retrying(1) e:dead(10)"
    )


def test_text_helpers() -> None:
    assert printable("a\x1b[2Jb\x7f\u200bc\n") == "a\\x1b[2Jb\\x7f\\u200bc\\n"
    assert printable("a\nb\tc\r", keep_newlines=True) == "a\nb\tc\\r"
    assert body_text(b"ab\xffc", 10) == "ab\\xffc"
    assert body_text("aé".encode(), 2) == "a"
    assert human_duration(7 * 86400) == "7d"
    assert human_duration(6 * 86400 + 23 * 3600 + 59 * 60) == "6d 23h"
    assert human_duration(125) == "2m 5s"
    assert human_duration(0) == "0s"
    assert redact_url("redis://localhost:6379/0") == "redis://localhost:6379/0"
    assert redact_url("redis://user:pw@host:6380/1") == "redis://user:****@host:6380/1"


# -- end to end: receiver, worker, then the commands ---------------------------------------------


class _Target(BaseHTTPRequestHandler):
    """A downstream app on loopback that accepts every delivery."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.end_headers()
        self.wfile.write(b"thanks\nsecond line")

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


@pytest.fixture
def target_url() -> Iterator[str]:
    """URL of a loopback target answering 200."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Target)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


async def test_end_to_end_retention_and_show(
    aiohttp_client: Any,
    redis_url: str,
    redis_client: redis.Redis,
    target_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    routes_toml = (
        '[sources.chalk]\nkind = "json"\n\n'
        f'[targets.crm]\nurl = "{target_url}"\n\n'
        '[[routes]]\nsource = "chalk"\ntargets = ["crm"]\n'
    )
    routes_path = tmp_path / "routes.toml"
    routes_path.write_text(routes_toml)
    retention = 3600.0
    app = create_app(
        Settings(redis_url=redis_url, retention=retention),
        parse_routes(routes_toml, str(routes_path), {}),
    )
    client = await aiohttp_client(app)
    body = b'{"event": "element_published", "id": 7}'
    resp = await client.post(
        "/hooks/chalk", data=body, headers={"content-type": "application/json"}
    )
    assert resp.status == 202
    event_id = (await resp.json())["id"]
    # Durable means due as well: the receiver's commit put the delivery in crm's due set.
    assert redis_client.zscore(keys.due_key("crm"), event_id) is not None

    worker_env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "RELAY_ROUTES": str(routes_path),
        "RELAY_RETENTION": "1h",
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "relay", "worker", "--burst"],
        cwd=ROOT,
        env=worker_env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]

    # Retention: the event's one key (its attempts are fields of its hash) carries a TTL no
    # longer than RELAY_RETENTION, and the due set (a per-target key without one) keeps
    # nothing of a delivery that is over.
    assert 0 < redis_client.ttl(keys.event_key(event_id)) <= retention
    assert redis_client.exists(keys.attempts_key(event_id)) == 0
    assert redis_client.zcard(keys.due_key("crm")) == 0

    monkeypatch.setenv("REDIS_URL", redis_url)
    capsys.readouterr()  # the receiver's own log lines
    code, out, _ = run_cli(capsys, "show", event_id, "--json")
    assert code == 0
    shown = orjson.loads(out)
    assert shown["source"] == "chalk"
    assert shown["type"] == "element_published"
    assert shown["body"]["data"] == body.decode()
    assert 0 < shown["expires_in"] <= retention
    (delivery,) = shown["deliveries"]
    assert (delivery["target"], delivery["state"], delivery["attempts_made"]) == (
        "crm",
        "delivered",
        1,
    )
    (attempt,) = delivery["attempts"]
    assert (attempt["attempt"], attempt["status"], attempt["outcome"]) == (1, 200, "delivered")
    assert attempt["response"].startswith("thanks\n")
    assert attempt["duration_ms"] is not None

    code, out, _ = run_cli(capsys, "list", "--state", "delivered", "--json")
    assert [e["id"] for e in orjson.loads(out)["events"]] == [event_id]
