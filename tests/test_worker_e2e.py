"""End to end: real redis-server, real `relay serve` and `relay worker`, loopback targets."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from standardwebhooks.webhooks import Webhook

from relay.store import keys
from relay.store.deliveries import attempt_records
from tests.support.processes import (
    Processes,
    group_alive,
    post,
    relay_env,
    relay_processes,
    wait_until,
)
from tests.support.redis_server import free_port
from tests.support.seed_events import routes_toml
from tests.support.stored import states, stored_event
from tests.support.targets import TargetServer, refused_url

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAST = {"attempts": 4, "first": "500ms", "max": "1s"}


def setup(tmp_path: Path, redis_url: str, spec: dict[str, dict[str, Any]]) -> dict[str, str]:
    routes = tmp_path / "routes.toml"
    routes.write_text(routes_toml(spec))
    return relay_env(redis_url, routes, WHSEC=SECRET)


def send(base: str, body: bytes, event_type: str = "order.paid") -> str:
    status, answer = post(
        f"{base}/hooks/shop",
        body,
        {"content-type": "application/json", "x-event-type": event_type, "x-shop-sig": "abc"},
    )
    assert status == 202, answer
    return str(orjson.loads(answer)["id"])


@pytest.mark.timeout(60)
def test_every_event_reaches_every_healthy_target_and_failures_end_as_promised(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, targets: TargetServer
) -> None:
    spec = {
        "ok": {"url": targets.url("/ok/ok"), "signing_secret_env": "WHSEC"},
        "flaky": {"url": targets.url("/fail/flaky/2"), "retry": FAST},
        "slow": {"url": targets.url("/slow/slow/1/2"), "retry": FAST},
        "gone": {"url": targets.url("/gone/gone"), "retry": FAST},
        "down": {"url": refused_url(), "retry": {**FAST, "attempts": 3}},
        "hang": {"url": targets.url("/hang/hang"), "timeout": 1, "retry": {**FAST, "attempts": 2}},
    }
    with relay_processes(tmp_path, setup(tmp_path, redis_url, spec)) as procs:
        _, base = procs.serve()
        procs.worker()
        bodies = [b'{"n": %d,  "keep"  : "these bytes\\u00e9"}\n' % i for i in range(4)]
        ids = [send(base, body) for body in bodies]

        def finished() -> bool:
            return all(
                set(states(redis_client, i).values()) <= {"delivered", "dead", "gone"}
                and len(states(redis_client, i)) == 6
                for i in ids
            )

        assert wait_until(finished, 60, 0.2), [states(redis_client, i) for i in ids]

    for event_id, body in zip(ids, bodies, strict=True):
        assert states(redis_client, event_id) == {
            "ok": "delivered",
            "flaky": "delivered",
            "slow": "delivered",
            "gone": "gone",
            "down": "dead",
            "hang": "dead",
        }
        got = {
            r.name: [x for x in targets.by_name(r.name) if x.headers["webhook-id"] == event_id]
            for r in targets.received
        }
        # Healthy targets: the body byte for byte, the signature verifies with the reference lib.
        [ok] = got["ok"]
        assert ok.body == body
        assert ok.headers["content-type"] == "application/json"
        assert ok.headers["x-shop-sig"] == "abc"
        assert ok.headers["x-relay-event"] == "order.paid"
        Webhook(SECRET).verify(ok.body, dict(ok.headers), json_parse=False)
        assert [r.body for r in got["flaky"]] == [body] * 3
        assert [r.headers["x-relay-attempt"] for r in got["flaky"]] == ["1", "2", "3"]
        assert len(got["gone"]) == 1  # 410 stops at once
        assert len(got["hang"]) == 2

        records = attempt_records(redis_client, event_id)
        by_target: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            by_target.setdefault(record["target"], []).append(record)
        # Retries happen at their scheduled times (the scheduler polls every second).
        flaky = by_target["flaky"]
        for record, arrival in zip(flaky, got["flaky"][1:], strict=False):
            due = record["at"] + record["retry_in_s"]
            assert due - 0.1 <= arrival.at <= due + 3.0
        # Retry-After: 2 is honoured for the 429.
        [first_slow, _] = got["slow"]
        assert by_target["slow"][0]["retry_in_s"] == 2.0
        assert got["slow"][1].at >= first_slow.at + 2.0 - 0.1
        # Dead letters hold the event, the target, every attempt and the reason.
        for name, attempts in (("down", 3), ("hang", 2), ("gone", 1)):
            assert redis_client.zscore(keys.DEAD, keys.dead_member(event_id, name)) is not None
            assert len(by_target[name]) == attempts
        assert all("connection failed" in r["error"] for r in by_target["down"])
        assert all(r["error"] == "timeout after 1s" for r in by_target["hang"])
        reason = redis_client.hget(keys.event_key(event_id), "r:down")
        assert reason is not None
        assert b"out of attempts (3)" in reason
        assert stored_event(redis_client, event_id).body == body


def test_warm_shutdown_finishes_the_delivery_in_hand(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, targets: TargetServer
) -> None:
    spec = {"slowpoke": {"url": targets.url("/delay/slowpoke/2"), "timeout": 10}}
    with relay_processes(tmp_path, setup(tmp_path, redis_url, spec)) as procs:
        _, base = procs.serve()
        worker = procs.worker()
        # The scheduler runs in a child that holds a short lock (another worker takes over fast).
        lock = "rq:scheduler-lock:relay"
        assert wait_until(lambda: redis_client.exists(lock), 10)
        assert 0 < int(redis_client.ttl(lock)) <= 15
        event_id = send(base, b'{"x": 1}')
        assert wait_until(lambda: len(targets.received) == 1, 15)
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(30) == 0
        output = worker.output()
    assert states(redis_client, event_id) == {"slowpoke": "delivered"}
    [record] = attempt_records(redis_client, event_id)
    assert record["status"] == 200
    assert len(targets.received) == 1
    assert "worker stopped" in output


def test_burst_with_several_processes_drains_and_exits(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, targets: TargetServer
) -> None:
    spec = {"a": {"url": targets.url("/ok/a")}, "b": {"url": targets.url("/ok/b")}}
    with relay_processes(tmp_path, setup(tmp_path, redis_url, spec)) as procs:
        _, base = procs.serve()
        ids = [send(base, b'{"i": %d}' % i) for i in range(20)]
        worker = procs.worker("--burst", "--processes", "2", wait=False)
        assert worker.process.wait(60) == 0, worker.output()
    assert all(states(redis_client, i) == {"a": "delivered", "b": "delivered"} for i in ids)
    assert len(targets.received) == 40


def test_bad_routes_exit_2_with_every_problem(tmp_path: Path, redis_url: str) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text('[targets.x]\nurl = "ftp://nope"\nretry = { attempts = 0 }\n')
    env = relay_env(redis_url, routes)
    procs = Processes(tmp_path, env)
    try:
        proc = procs.worker(wait=False)
        assert proc.process.wait(30) == 2
        output = proc.output()
    finally:
        procs.cleanup()
    assert "targets.x" in output
    assert "url" in output
    assert "attempts" in output


def test_sigterm_to_the_parent_stops_every_worker_process(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, targets: TargetServer
) -> None:
    spec = {"a": {"url": targets.url("/ok/a")}}
    with relay_processes(tmp_path, setup(tmp_path, redis_url, spec)) as procs:
        parent = procs.worker("--processes", "2")
        parent.process.send_signal(signal.SIGTERM)
        assert parent.process.wait(30) == 0, parent.output()
        assert wait_until(lambda: not group_alive(parent.pid), 10)  # children and schedulers too


def test_unreachable_redis_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(routes_toml({"a": {"url": "http://127.0.0.1:9/x"}}))
    env = relay_env(f"redis://127.0.0.1:{free_port()}/0", routes)
    procs = Processes(tmp_path, env)
    try:
        proc = procs.worker(wait=False)
        assert proc.process.wait(30) == 1
        assert "cannot reach Redis" in proc.output()
    finally:
        procs.cleanup()


@pytest.mark.parametrize(("level", "rq_lines"), [("info", False), ("debug", True)])
def test_rq_per_job_lines_are_logged_only_at_debug(
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    targets: TargetServer,
    level: str,
    rq_lines: bool,
) -> None:
    # RQ logs four INFO lines per job and relay's kicks are jobs: at info they drowned the
    # lines a person watches (issue 12). They stay available at debug.
    env = setup(tmp_path, redis_url, {"ok": {"url": targets.url("/ok/ok")}})
    env["RELAY_LOG_LEVEL"] = level
    with relay_processes(tmp_path, env) as procs:
        _, base = procs.serve()
        worker = procs.worker()
        event_id = send(base, b'{"n": 1}')
        assert wait_until(lambda: states(redis_client, event_id) == {"ok": "delivered"}, 30)
        assert worker.terminate() == 0
        output = worker.output()
    assert "worker starting" in output  # relay's own lines are there either way
    assert ("Job OK" in output) is rq_lines, output[-2000:]
