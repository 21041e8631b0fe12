"""`relay status`, `relay dead list|show` and `relay replay` end to end against a real Redis."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from relay.cli import common, dead, replay, status
from relay.cli.main import main
from relay.core.states import DeliveryState
from relay.core.times import format_time
from relay.ops import deliveries as ops
from relay.store import keys
from relay.store.breakers import Breakers
from relay.store.pauses import paused
from relay.store.queue import DELIVER_DUE, make_queue
from tests.support.processes import post, relay_env, relay_processes, wait_until
from tests.support.redis_server import free_port
from tests.support.seed_events import routes_toml
from tests.support.seed_states import NOW, attempt_record, seed_dead, seed_event
from tests.support.stored import due as due_entries
from tests.support.stored import queued_jobs
from tests.support.targets import TargetServer

ROUTES = """
[targets.crm]
url = "http://127.0.0.1:9/crm"

[targets.idle]
url = "http://127.0.0.1:9/idle"
"""

#: `relay status|dead|replay` configure logging; the test process's is put back after each test.
pytestmark = pytest.mark.usefixtures("restored_logging")


@pytest.fixture
def env(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """REDIS_URL on the test server and a routes.toml naming the targets crm and idle."""
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("RELAY_ROUTES", str(routes))
    monkeypatch.setenv("RELAY_LOG_FORMAT", "json")
    return redis_url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `relay argv...` in-process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def rows(text: str) -> list[list[str]]:
    """A table's lines split on whitespace (cells here hold no spaces)."""
    return [line.split() for line in text.strip().splitlines()]


def assert_due_now(conn: redis.Redis, target: str, event_ids: set[str]) -> None:
    """Exactly those events are due now to `target`, and kicks wait to make a worker take them."""
    due = due_entries(conn, target)
    assert due.keys() == event_ids
    assert max(due.values()) <= time.time()
    jobs = queued_jobs(conn)
    assert jobs
    assert {job.func_name for job in jobs} == {DELIVER_DUE}


def logged(err: str) -> list[dict[str, Any]]:
    """The JSON log lines written on stderr."""
    return [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]


class FakeTty(io.StringIO):
    """A stream that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


# ---------------------------------------------------------------------------------------------
# relay status


def test_status_table(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_dead(redis_client, "crm")
    seed_dead(redis_client, "legacy")
    # crm: one delivery due now, one retry waiting for its time.
    now = time.time()
    seed_event(redis_client, deliveries={"crm": ("pending", 0, "")}, due={"crm": now - 1})
    seed_event(redis_client, deliveries={"crm": ("retrying", 2, "")}, due={"crm": now + 600})
    redis_client.hset(
        keys.target_stats_key("crm"), mapping={"delivered": 12, "dead": 1, "attempts": 20}
    )
    redis_client.hset(keys.source_stats_key("fellow"), mapping={"received": 14, "duplicates": 1})

    code, out, err = run(capsys, "status")

    assert code == 0
    assert err == ""
    lines = out.splitlines()
    assert lines[1] == (
        "queue relay: 0 queued, 0 started, 0 scheduled, 0 failed, 0 deferred; 0 worker(s)"
    )
    table = rows("\n".join(lines[3:]))
    assert table[0] == [
        "TARGET", "STATE", "PENDING", "RETRIES", "DEAD", "NOW", "DELIVERED", "DEAD", "GONE",
        "ATTEMPTS", "FAILURES", "REPLAYED",
    ]  # fmt: skip
    assert table[1] == ["crm", "active", "1", "1", "1", "12", "1", "0", "20", "0", "0"]
    assert table[2] == ["idle", "active", "0", "0", "0", "0", "0", "0", "0", "0", "0"]
    assert table[3] == ["legacy", "*", "active", "0", "0", "1", "0", "0", "0", "0", "0", "0"]
    assert "Paused" not in out
    assert "* not in routes.toml (seen in Redis)" in out
    assert ["fellow", "14", "1", "0"] in table


def test_status_json(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    event_id = seed_dead(redis_client, "crm")
    ops.replay_delivery(redis_client, event_id, "crm")

    code, out, _ = run(capsys, "status", "--json")

    assert code == 0
    doc = orjson.loads(out)
    assert doc["queue"] == {
        "name": "relay",
        "queued": 1,
        "started": 0,
        "scheduled": 0,
        "failed": 0,
        "deferred": 0,
    }
    assert doc["workers"] == 0
    assert [t["name"] for t in doc["targets"]] == ["crm", "idle"]
    assert doc["targets"][0] == {
        "name": "crm",
        "configured": True,
        "pending": 1,
        "scheduled": 0,
        "dead_letters": 0,
        "delivered": 0,
        "dead": 0,
        "gone": 0,
        "attempts": 0,
        "failures": 0,
        "replayed": 1,
        "paused": None,
        "breaker": None,
        "control": None,
    }


def test_status_shows_a_paused_target_with_why_and_since_when(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 12: after `relay pause crm`, status showed crm with PENDING 1 and no pause marker.
    now = time.time()
    seed_event(redis_client, deliveries={"crm": ("pending", 0, "")}, due={"crm": now - 1})
    assert main(["pause", "crm", "--reason", "maintenance window"]) == 0
    since = paused(redis_client, ["crm"])["crm"].at
    capsys.readouterr()

    code, out, _ = run(capsys, "status")
    assert code == 0
    table = rows(out.split("\n\n")[1])
    assert table[1][:3] == ["crm", "paused", "1"]
    assert table[2][:2] == ["idle", "active"]
    assert out.rstrip().endswith(
        "Paused (deliveries held until `relay resume TARGET`):\n"
        f"  crm  paused since {format_time(since)} (0s ago): maintenance window"
    )

    _, out, _ = run(capsys, "status", "--json")
    crm, idle = orjson.loads(out)["targets"]
    assert crm["pending"] == 1
    assert crm["paused"] == {
        "target": "crm",
        "reason": "maintenance window",
        "since": format_time(since),
        "at": since,
        "event_id": None,
    }
    assert idle["paused"] is None


def test_status_shows_an_open_breaker_with_since_when_and_the_next_probe(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    seed_event(redis_client, deliveries={"crm": ("pending", 0, "")}, due={"crm": now - 1})
    breakers = Breakers(redis_client)
    for _ in range(2):
        breakers.record("crm", True, 2, 30.0, "HTTP 503", now)
    breakers.record("idle", True, 2, 30.0, "timeout after 10s", now)  # one failure: closed

    code, out, _ = run(capsys, "status")
    assert code == 0
    table = rows(out.split("\n\n")[1])
    assert table[1][:3] == ["crm", "breaker-open", "1"]
    assert table[2][:2] == ["idle", "active"]
    listing = out.rstrip().split("\n\n")[-1].splitlines()
    assert listing[0] == (
        "Breaker open (deliveries held, one probe per interval; all go out again when one "
        "succeeds):"
    )
    assert listing[1].startswith(
        f"  crm  open since {format_time(now)} (0s ago) after 2 failed attempts in a row "
        "(last: HTTP 503); next probe in "
    )
    assert len(listing) == 2

    _, out, _ = run(capsys, "status", "--json")
    crm, idle = orjson.loads(out)["targets"]
    assert crm["breaker"]["state"] == "open"
    assert crm["breaker"]["at"] == now
    assert crm["breaker"]["failures"] == 2
    assert 0 < crm["breaker"]["next_probe_in"] <= 30
    assert idle["breaker"]["state"] == "closed"
    assert idle["breaker"]["last_error"] == "timeout after 10s"

    # Paused too: the pause is the state shown (it holds everything), the breaker still listed.
    assert main(["pause", "crm", "--reason", "maintenance window"]) == 0
    capsys.readouterr()
    _, out, _ = run(capsys, "status")
    assert rows(out.split("\n\n")[1])[1][:2] == ["crm", "paused"]
    assert "  crm  open since" in out


def test_status_routes_option_and_missing_routes(
    env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.toml"
    other.write_text('[targets.billing]\nurl = "http://127.0.0.1:9/"\n')
    _, out, _ = run(capsys, "status", "--json", "--routes", str(other))
    assert [t["name"] for t in orjson.loads(out)["targets"]] == ["billing"]
    _, out, _ = run(capsys, "status", "--json", "--routes", str(tmp_path / "none.toml"))
    assert orjson.loads(out)["targets"] == []


def test_configured_targets_of_a_broken_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "routes.toml"
    broken.write_text("[targets.crm\n")
    assert common.configured_targets(str(broken)) is None
    assert "target names taken from Redis only" in capsys.readouterr().err
    assert common.configured_targets(str(tmp_path / "missing.toml")) is None
    assert capsys.readouterr().err == ""  # no file is no mistake: nothing to say


def test_status_interval_prints_json_lines_until_interrupted(
    env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(status.time, "sleep", sleep)
    code, out, _ = run(capsys, "status", "--json", "--interval", "0.5")
    assert code == 0
    assert naps == [0.5, 0.5]
    docs = [orjson.loads(line) for line in out.splitlines()]  # JSON Lines: one per round
    assert len(docs) == 2
    assert all(d["queue"]["name"] == "relay" for d in docs)


def test_status_loop_clears_a_terminal_between_rounds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    shown: list[int] = []
    naps: list[float] = []
    status.status_loop(lambda: shown.append(1), 2.0, clear=True, sleep=naps.append, rounds=3)
    assert (len(shown), naps) == (3, [2.0, 2.0])
    assert capsys.readouterr().out.count("\x1b[2J\x1b[H") == 3
    status.status_loop(lambda: shown.append(1), None, clear=True, sleep=naps.append)
    assert len(shown) == 4
    assert capsys.readouterr().out == ""  # a single round never clears the screen


def test_unreachable_redis_is_one_line_and_exit_1(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    code, out, err = run(capsys, "status", "--url", url)
    assert code == 1
    assert out == ""
    assert err.startswith(f"relay: cannot reach Redis at redis://:****@127.0.0.1:{url[-7:-2]}")
    assert "hunter2" not in err


# ---------------------------------------------------------------------------------------------
# relay dead list | show


def test_dead_list_table(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    old = seed_dead(redis_client, "crm", at=now - 7200, reason="HTTP 500")
    new = seed_dead(
        redis_client,
        "idle",
        at=now - 30,
        made=1,
        state=DeliveryState.GONE,
        reason="HTTP 410",
        source="strigo",
        event_type="course.completed",
    )
    code, out, _ = run(capsys, "dead", "list")
    assert code == 0
    table = rows(out)
    assert table[0] == [
        "EVENT", "TARGET", "SOURCE", "TYPE", "STATE", "ATTEMPTS", "DEAD", "AT", "AGE", "REASON",
    ]  # fmt: skip
    assert table[1][:6] == [new, "idle", "strigo", "course.completed", "gone", "1"]
    assert table[1][-2:] == ["HTTP", "410"]
    assert table[2][:6] == [old, "crm", "fellow", "COURSEMEMBER_ADDED", "dead", "10"]
    assert table[2][6] == format_time(now - 7200)  # one format in every command
    assert table[2][7] in ("2h00m", "1h59m")
    assert table[-1] == ["2", "dead", "letter(s)"]


def test_dead_list_filters_and_limit(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    a = seed_dead(redis_client, "crm", at=now - 10, event_type="COURSEMEMBER_ADDED")
    b = seed_dead(redis_client, "crm", at=now - 3 * 86400, event_type="COURSE_PUBLISHED")
    c = seed_dead(redis_client, "idle", at=now - 20, source="strigo", event_type="x")

    def listed(*args: str) -> list[str]:
        code, out, _ = run(capsys, "dead", "list", "--json", *args)
        assert code == 0
        return [d["event_id"] for d in orjson.loads(out)]

    assert listed() == [a, c, b]
    assert listed("--target", "crm") == [a, b]
    assert listed("-t", "idle") == [c]
    assert listed("--source", "strigo") == [c]
    assert listed("--event-type", "COURSE*") == [a, b]
    assert listed("--since", "1h") == [a, c]
    assert listed("--since", "1h", "--target", "crm") == [a]
    assert listed("--limit", "1") == [a]
    assert listed("--limit", "0") == [a, c, b]
    _code, out, _ = run(capsys, "dead", "list", "--limit", "1")
    assert out.rstrip().endswith("1 dead letter(s) (the newest; --limit 0 for all)")


@pytest.mark.parametrize("command", [("dead", "list"), ("events", "list")])
def test_every_list_command_takes_the_same_options(
    env: str,
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
    command: tuple[str, str],
) -> None:
    # Issue 12: `relay events list -n 2` was refused while `relay dead list -n 2` worked.
    now = time.time()
    newest = [
        seed_dead(redis_client, "crm", at=now - i, received=now - i, event_type=f"A_{i}")
        for i in range(3)
    ]
    seed_dead(redis_client, "idle", at=now - 9, received=now - 9, source="strigo")

    def listed(*args: str) -> list[str]:
        code, out, err = run(capsys, *command, "--json", *args)
        assert code == 0, err
        doc = orjson.loads(out)
        found = doc["events"] if isinstance(doc, dict) else doc
        return [d.get("event_id", d.get("id")) for d in found]

    assert listed("-n", "2") == newest[:2]
    assert listed("--limit", "2") == newest[:2]
    assert listed("--limit", "0")[:3] == newest
    assert listed("-t", "crm", "-n", "0") == newest
    assert listed("--target", "crm", "-s", "fellow", "-e", "A_1") == [newest[1]]
    assert listed("--source", "fellow", "--event-type", "A_*", "--since", "1h") == newest
    assert listed("--type", "A_2") == [newest[2]]  # the older name of --event-type
    assert listed("-u", env, "-n", "1") == newest[:1]


def test_dead_list_json_shape(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    event_id = seed_dead(redis_client, "crm", at=1_790_000_000.0, received=1_789_999_000.0)
    _, out, _ = run(capsys, "dead", "list", "--json")
    assert orjson.loads(out) == [
        {
            "event_id": event_id,
            "target": "crm",
            "dead_at": 1_790_000_000.0,
            "state": "dead",
            "source": "fellow",
            "type": "COURSEMEMBER_ADDED",
            "received_at": 1_789_999_000.0,
            "attempts": 10,
            "reason": "HTTP 500 after 10 attempts",
            "expired": False,
        }
    ]


def test_dead_list_empty_and_bad_since(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "dead", "list") == (0, "No dead letters.\n", "")
    assert run(capsys, "dead", "list", "--json") == (0, "[]\n", "")
    code, out, err = run(capsys, "dead", "list", "--since", "last tuesday")
    assert (code, out) == (2, "")
    assert "expected a time like '2h'" in err


def test_dead_show_text(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    event_id = seed_dead(
        redis_client,
        "crm",
        made=2,
        reason="HTTP 502",
        headers=(("content-type", "application/json"), ("Authorization", "Bearer s3cret")),
        attempts=[attempt_record("crm", 1, 502), attempt_record("crm", 2, None)],
    )
    code, out, _ = run(capsys, "dead", "show", event_id)
    assert code == 0
    assert out.startswith(
        f"event {event_id}\nsource:       fellow\ntype:         COURSEMEMBER_ADDED\n"
    )
    assert "Authorization: [redacted]" in out
    assert "s3cret" not in out
    assert 'body:\n  {"event": "COURSEMEMBER_ADDED", "id": 7}\n' in out
    table = rows(out.split("RESPONSE  ERROR\n", 1)[1])
    assert table[0][:2] == ["crm", "1"]
    # TARGET # AT TOOK STATUS OUTCOME RESPONSE ERROR
    assert table[0] == ["crm", "1", format_time(NOW - 999), "12ms", "502", "retry", "oops", "-"]
    assert table[1][3:] == ["12ms", "-", "retry", "-", "connection", "refused"]


def test_dead_show_prints_the_whole_error_and_reason_where_lists_cut_them(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    error = "Cannot connect to host crm.example.com:443 ssl:default [" + "x" * 150 + "] END"
    reason = "attempts exhausted: " + "y" * 100 + " LAST"
    attempts = [attempt_record("crm", 1, None, error=error)]
    event_id = seed_dead(redis_client, "crm", made=1, reason=reason, attempts=attempts)

    _, out, _ = run(capsys, "dead", "show", event_id)
    assert error in out
    assert reason in out
    assert "…" not in out

    _, out, _ = run(capsys, "dead", "list")
    assert reason not in out  # a list view may shorten, and says so with an ellipsis
    assert rows(out)[1][-1].endswith("…")


def test_dead_show_json_and_target_filter(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    body = b"x" * 600
    event_id = seed_event(
        redis_client,
        body=body,
        headers=(("cookie", "a=b"), ("x-event-type", "A")),
        deliveries={"crm": ("dead", 1, "HTTP 500"), "idle": ("delivered", 1, "")},
        dead_at={"crm": 1_790_000_000.0},
        attempts=[attempt_record("crm", 1), attempt_record("idle", 1, 200)],
    )
    code, out, _ = run(capsys, "dead", "show", event_id, "--target", "crm", "--json")
    assert code == 0
    doc = orjson.loads(out)
    assert set(doc) == {"event_id", "expired", "event", "deliveries", "attempts"}
    assert doc["expired"] is False
    assert doc["event"]["headers"] == [["cookie", "[redacted]"], ["x-event-type", "A"]]
    assert doc["event"]["body_size"] == 600
    assert doc["event"]["body_preview"] == "x" * dead.BODY_PREVIEW
    assert doc["deliveries"] == [
        {
            "target": "crm",
            "state": "dead",
            "attempts": 1,
            "reason": "HTTP 500",
            "replayed_after": 0,
            "dead_at": 1_790_000_000.0,
        }
    ]
    assert [(a["target"], a["status"], a["duration"]) for a in doc["attempts"]] == [
        ("crm", 500, 0.0125)
    ]


def test_dead_show_unknown_and_expired(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "dead", "show", "evt_NOPE")
    assert (code, out) == (1, "")
    assert err == "relay: no event evt_NOPE (unknown, or expired)\n"
    redis_client.zadd(keys.DEAD, {"evt_OLD:crm": 1_790_000_000.0})
    code, out, _ = run(capsys, "dead", "show", "evt_OLD")
    assert code == 0
    assert "expired: the event and its body are no longer kept (cannot be replayed)" in out
    _, out, _ = run(capsys, "dead", "show", "evt_OLD", "--json")
    assert orjson.loads(out)["event"] is None


# ---------------------------------------------------------------------------------------------
# relay replay


def test_replay_one_event(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    event_id = seed_dead(redis_client, "crm", made=10)
    code, out, err = run(capsys, "replay", event_id)
    assert code == 0
    assert out == f"Replayed {event_id} to crm (attempt 11)\n"
    assert redis_client.hget(keys.event_key(event_id), "s:crm") == b"pending"
    assert redis_client.zcard(keys.DEAD) == 0
    assert_due_now(redis_client, "crm", {event_id})
    [line] = logged(err)
    assert (line["event"], line["replayed"], line["failed"]) == ("replay finished", 1, 0)


def test_replay_event_with_several_dead_targets(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    event_id = seed_event(
        redis_client,
        deliveries={"crm": ("dead", 3, ""), "idle": ("gone", 1, ""), "x": ("delivered", 1, "")},
        dead_at={"crm": 1.0, "idle": 2.0},
    )
    code, out, _ = run(capsys, "replay", event_id, "--json")
    assert code == 0
    doc = orjson.loads(out)
    assert [(r["target"], r["attempt"]) for r in doc["results"]] == [("crm", 4), ("idle", 2)]
    assert_due_now(redis_client, "crm", {event_id})
    assert_due_now(redis_client, "idle", {event_id})
    assert due_entries(redis_client, "x") == {}
    code, out, _ = run(capsys, "replay", event_id)
    assert code == 1
    assert out == (
        f"Could not replay 1:\n  event {event_id} has no dead delivery to replay "
        "(crm: pending, idle: pending, x: delivered)\n"
    )


def test_replay_bulk_by_target_prints_a_count_without_asking(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [seed_dead(redis_client, "crm") for _ in range(3)]
    other = seed_dead(redis_client, "idle")
    code, out, err = run(capsys, "replay", "--target", "crm")
    assert code == 0
    assert out == "Replaying 3 dead letter(s)\nReplayed 3 dead letter(s).\n"
    assert "[y/N]" not in err  # stdin is not a terminal: no question (like rq)
    assert "replaying [" not in err  # nor a progress bar off a terminal
    assert redis_client.zrange(keys.DEAD, 0, -1) == [keys.dead_member(other, "idle").encode()]
    assert_due_now(redis_client, "crm", set(ids))
    assert due_entries(redis_client, "idle") == {}
    assert {redis_client.hget(keys.event_key(i), "s:crm") for i in ids} == {b"pending"}


def test_replay_since(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    recent = seed_dead(redis_client, "crm", at=now - 60)
    seed_dead(redis_client, "crm", at=now - 86400)
    recent_idle = seed_dead(redis_client, "idle", at=now - 120)
    code, out, err = run(capsys, "replay", "--since", "30m", "--json")
    assert code == 0, err
    doc = orjson.loads(out)
    assert (doc["selected"], doc["replayed"], doc["failed"]) == (2, 2, 0)
    assert {r["event_id"] for r in doc["results"]} == {recent, recent_idle}
    assert redis_client.zcard(keys.DEAD) == 1


def test_replay_dry_run(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    event_id = seed_dead(redis_client, "crm", made=2)
    code, out, _ = run(capsys, "replay", "--all", "--dry-run")
    assert code == 0
    assert rows(out) == [
        ["Would", "replay", "1", "dead", "letter(s):"],
        ["EVENT", "TARGET", "STATE", "NEXT", "ATTEMPT"],
        [event_id, "crm", "dead", "3"],
    ]
    _, out, _ = run(capsys, "replay", "--all", "--dry-run", "--json")
    doc = orjson.loads(out)
    assert doc["dry_run"] is True
    assert doc["results"][0]["outcome"] == "would_replay"
    assert redis_client.zcard(keys.DEAD) == 1
    assert make_queue(redis_client).count == 0
    assert due_entries(redis_client, "crm") == {}


def test_replay_dry_run_never_says_it_replayed(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_dead(redis_client, "crm")
    code, out, err = run(capsys, "replay", "--all", "--dry-run", "--json")
    assert code == 0
    [line] = logged(err)
    assert line["event"] == "replay dry run finished"
    assert (line["would_replay"], line["failed"], line["dry_run"]) == (1, 0, True)
    assert "replayed" not in line
    doc = orjson.loads(out)
    assert (doc["would_replay"], doc["selected"]) == (1, 1)
    assert "replayed" not in doc
    assert redis_client.zcard(keys.DEAD) == 1  # and it did not

    code, out, err = run(capsys, "replay", "--all", "--json")
    [line] = logged(err)
    assert (line["event"], line["replayed"]) == ("replay finished", 1)
    assert "would_replay" not in line
    assert orjson.loads(out)["replayed"] == 1


def test_replay_of_an_unrouted_event_says_why_in_one_line(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    event_id = seed_event(redis_client, deliveries={})
    code, out, _ = run(capsys, "replay", event_id)
    assert code == 1
    assert out == (
        f"Could not replay 1:\n  event {event_id} has no deliveries to replay "
        "(no route matched it)\n"
    )


def test_replay_of_expired_events_fails_clearly(
    env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    redis_client.zadd(keys.DEAD, {"evt_OLD:crm": time.time()})
    code, out, _ = run(capsys, "replay", "--target", "crm")
    assert code == 1
    assert out == (
        "Replaying 1 dead letter(s)\nCould not replay 1:\n  evt_OLD crm: event evt_OLD has "
        "expired: its body is no longer kept (retention 7 days), so it cannot be replayed\n"
    )
    code, out, _ = run(capsys, "replay", "evt_NOPE", "--json")
    assert code == 1
    assert orjson.loads(out)["results"][0]["message"] == (
        "no event evt_NOPE (unknown, or expired and no longer kept)"
    )


def test_replay_needs_a_selection(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "replay")
    assert code == 2
    assert "say what to replay" in err
    code, _, err = run(capsys, "replay", "evt_X", "--since", "1h")
    assert code == 2
    assert "EVENT_ID takes only --target" in err
    assert run(capsys, "replay", "--all") == (0, "Nothing to do\n", "")


@pytest.mark.parametrize(("answer", "replayed"), [("n\n", False), ("y\n", True)])
def test_replay_bulk_asks_on_a_terminal(
    env: str,
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    replayed: bool,
) -> None:
    seed_dead(redis_client, "crm")
    seed_dead(redis_client, "crm")
    monkeypatch.setattr(sys, "stdin", FakeTty(answer))
    code, _out, err = run(capsys, "replay", "--all")
    assert "Replay 2 dead letter(s)? [y/N]" in err
    assert code == (0 if replayed else 1)
    assert redis_client.zcard(keys.DEAD) == (0 if replayed else 2)
    if not replayed:
        assert "Aborted: nothing replayed." in err
    # --yes never asks.
    seed_dead(redis_client, "crm")
    monkeypatch.setattr(sys, "stdin", FakeTty(""))
    code, _, err = run(capsys, "replay", "--all", "--yes")
    assert code == 0
    assert "[y/N]" not in err


def test_progress_bar_draws_only_on_a_terminal() -> None:
    tty = FakeTty()
    bar = replay.ProgressBar(4, tty, width=8)
    for done in range(1, 5):
        bar.update(done)
    bar.finish()
    assert tty.getvalue() == (
        "\r  replaying [##------] 1/4\r  replaying [####----] 2/4"
        "\r  replaying [######--] 3/4\r  replaying [########] 4/4\n"
    )
    plain = io.StringIO()
    quiet = replay.ProgressBar(4, plain)
    quiet.update(2)
    quiet.finish()
    assert plain.getvalue() == ""


# ---------------------------------------------------------------------------------------------
# The installed console script, once, as operators run it


def test_console_script_lists_dead_letters(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    event_id = seed_dead(redis_client, "crm")
    relay = Path(sys.executable).parent / "relay"
    command = [str(relay)] if relay.exists() else [sys.executable, "-m", "relay"]
    environ = {**os.environ, "REDIS_URL": redis_url, "RELAY_ROUTES": str(tmp_path / "none.toml")}
    done = subprocess.run(
        [*command, "dead", "list", "--json"],
        env=environ,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [d["event_id"] for d in orjson.loads(done.stdout)] == [event_id]


# ---------------------------------------------------------------------------------------------
# End to end: relay serve, relay worker, relay replay, relay worker --burst


@pytest.mark.timeout(60)
def test_replayed_dead_letter_reaches_the_target_with_the_same_webhook_id(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    with TargetServer() as targets:
        # 500 to the first two requests of each webhook-id: two attempts end dead, the replay
        # (attempt 3) is delivered.
        retry = {"attempts": 2, "first": "500ms", "max": "1s"}
        spec = {"crm": {"url": targets.url("/fail/crm/2"), "retry": retry}}
        routes = tmp_path / "routes.toml"
        routes.write_text(routes_toml(spec))
        environ = relay_env(redis_url, routes)
        with relay_processes(tmp_path, environ) as procs:
            _, base = procs.serve()
            worker = procs.worker()
            status, answer = post(
                f"{base}/hooks/shop",
                b'{"order": 1}',
                {"content-type": "application/json", "x-event-type": "order.paid"},
            )
            assert status == 202, answer
            event_id = str(orjson.loads(answer)["id"])
            state = keys.event_key(event_id)
            assert wait_until(lambda: redis_client.hget(state, "s:crm") == b"dead", 30), (
                worker.output()
            )
            assert worker.terminate() == 0
            assert due_entries(redis_client, "crm") == {}  # dead: nothing left due

            replay = subprocess.run(
                [sys.executable, "-m", "relay", "replay", event_id, "--json"],
                env=environ,
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert replay.returncode == 0, replay.stderr
            [result] = orjson.loads(replay.stdout)["results"]
            assert (result["outcome"], result["attempt"]) == ("replayed", 3)
            # Dead, it had left crm's due set; replayed, it is due again at once.
            assert_due_now(redis_client, "crm", {event_id})

            burst = procs.worker("--burst", wait=False)
            assert burst.process.wait(60) == 0, burst.output()

    assert redis_client.hget(state, "s:crm") == b"delivered"
    assert due_entries(redis_client, "crm") == {}  # delivered: nothing left due
    got = targets.by_name("crm")
    assert [r.status for r in got] == [500, 500, 200]
    assert {r.headers["webhook-id"] for r in got} == {event_id}
    assert [r.headers["x-relay-attempt"] for r in got] == ["1", "2", "3"]
    assert {r.body for r in got} == {b'{"order": 1}'}
    stats = redis_client.hgetall(keys.target_stats_key("crm"))
    assert (stats[b"dead"], stats[b"replayed"], stats[b"delivered"]) == (b"1", b"1", b"1")
    assert ops.list_dead(redis_client) == []
