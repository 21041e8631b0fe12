"""The worker in production: metrics, --check, live route reloads, retention, pause_on_gone.

Real redis-server, real loopback targets; the end-to-end tests run `relay worker` processes.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from rq import Worker
from structlog.testing import capture_logs

from relay.cli.main import main as relay_main
from relay.cli.worker import operations
from relay.config.loading import parse_routes
from relay.config.model import RouteTable
from relay.config.settings import Settings
from relay.core.metrics import render
from relay.core.times import format_time
from relay.store import keys
from relay.store.pauses import Pause, paused
from relay.store.queue import DELIVER_DUE, make_queue
from tests.support.metrics import samples, scrape, value
from tests.support.processes import RelayProcess, relay_env, relay_processes, wait_until
from tests.support.redis_server import free_port
from tests.support.seed_events import make_event, routes_toml, store_events
from tests.support.stored import due, field, states
from tests.support.targets import TargetServer
from worker import jobs
from worker.context import build_context, configure, current, swap_routes
from worker.exporter import build_registry, process_port, serve_metrics
from worker.health import Beat, check, judge, max_heartbeat_age
from worker.pause import pause_target, resume_target
from worker.poller import kick_if_due
from worker.processes import busy_ports
from worker.retention import TRIM_INTERVAL
from worker.rq_worker import relay_worker
from worker.runtime import get_runtime

FAST = {"attempts": 4, "first": "300ms", "max": "500ms"}


def write_routes(path: Path, spec: dict[str, dict[str, Any]]) -> None:
    # Write then rename, as editors do: the watcher never reads a half-written file.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(routes_toml(spec))
    tmp.replace(path)


def log_lines(proc: RelayProcess, event: str) -> list[dict[str, Any]]:
    """Log records (JSON lines) of a process whose event is `event`."""
    found = []
    for line in proc.output().splitlines():
        if f'"{event}"' not in line:
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if record.get("event") == event:
            found.append(record)
    return found


# ---------------------------------------------------------------------------------------------
# Metrics


def test_worker_metrics_count_a_known_sequence_exactly(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, targets: TargetServer
) -> None:
    spec = {
        "ok": {"url": targets.url("/ok/ok")},
        "gone": {"url": targets.url("/gone/gone"), "retry": FAST},
        "flaky": {"url": targets.url("/fail/flaky/1"), "retry": FAST},
    }
    routes = tmp_path / "routes.toml"
    write_routes(routes, spec)
    port = free_port()
    with relay_processes(tmp_path, relay_env(redis_url, routes)) as procs:
        procs.worker("--metrics-port", str(port))
        events = [make_event(["ok"]) for _ in range(3)]
        events += [make_event(["gone"]), make_event(["flaky"])]
        store_events(redis_client, events)

        def finished() -> bool:
            # ... and no kick left waiting: one the poller enqueued for the retry may be taken
            # only after the kick that delivered it has returned.
            return make_queue(redis_client).count == 0 and all(
                set(states(redis_client, e.id).values()) <= {"delivered", "gone"} for e in events
            )

        assert wait_until(finished, 30, 0.1), [states(redis_client, e.id) for e in events]
        found = scrape(port)

    attempts = {
        (dict(labels)["target"], dict(labels)["outcome"]): v
        for (name, labels), v in found.items()
        if name == "relay_delivery_attempts_total"
    }
    assert attempts == {
        ("ok", "delivered"): 3,
        ("gone", "gone"): 1,
        ("flaky", "retry"): 1,
        ("flaky", "delivered"): 1,
    }
    assert value(found, "relay_retries_scheduled_total", target="flaky") == 1
    assert value(found, "relay_retries_scheduled_total", target="ok") is None
    assert value(found, "relay_dead_letters_total", target="gone", reason="gone") == 1
    assert value(found, "relay_dead_letters_total", target="flaky", reason="dead") is None
    for target, count in (("ok", 3), ("gone", 1), ("flaky", 2)):
        name = "relay_delivery_attempt_duration_seconds_count"
        assert value(found, name, target=target) == count
    # End-to-end latency only for deliveries that succeeded, and no more than receipt to now.
    assert value(found, "relay_delivery_latency_seconds_count", target="ok") == 3
    assert value(found, "relay_delivery_latency_seconds_count", target="flaky") == 1
    assert value(found, "relay_delivery_latency_seconds_count", target="gone") is None
    latency_sum = value(found, "relay_delivery_latency_seconds_sum", target="flaky")
    assert latency_sum is not None
    assert 0 < latency_sum <= time.time() - events[-1].received_at
    # Gauges read from Redis at scrape time.
    assert value(found, "relay_dead_letters_stored") == 1
    assert value(found, "relay_redis_up") == 1
    assert value(found, "relay_queue_jobs", state="queued") == 0
    for target in spec:
        assert value(found, "relay_target_paused", target=target) == 0
    # No event id ever becomes a label.
    assert not any(e.id in str(labels) for e in events for (_, labels) in found)


def test_metrics_endpoint_binds_loopback_by_default_and_frees_its_port(
    redis_client: redis.Redis,
) -> None:
    args = argparse.Namespace(metrics_port=None, metrics_host=None)
    assert operations(args, {}).metrics_port is None
    ops = operations(args, {"RELAY_WORKER_METRICS_PORT": "9300"})
    assert (ops.metrics_host, ops.metrics_port) == ("127.0.0.1", 9300)
    flags = argparse.Namespace(metrics_port=9400, metrics_host="0.0.0.0")
    assert operations(flags, {"RELAY_WORKER_METRICS_PORT": "9300"}).metrics_port == 9400
    with pytest.raises(ValueError, match="RELAY_WORKER_METRICS_PORT"):
        operations(args, {"RELAY_WORKER_METRICS_PORT": "http"})
    assert [process_port(9300, i) for i in range(3)] == [9300, 9301, 9302]

    registry, metrics = build_registry(lambda: redis_client, lambda: ("a",))
    metrics.observe_attempt("a", "delivered", 0.02, 0.5)
    port = free_port()
    server = serve_metrics(registry, "127.0.0.1", port)
    try:
        assert server.address == ("127.0.0.1", port)
        found = scrape(port)
        assert value(found, "relay_delivery_attempts_total", target="a", outcome="delivered") == 1
        assert busy_ports("127.0.0.1", port, 1) == [port]
    finally:
        server.close()
    assert busy_ports("127.0.0.1", port, 1) == []


def test_processes_serve_metrics_on_port_plus_index_and_sighup_reaches_every_child(
    tmp_path: Path, redis_url: str, targets: TargetServer
) -> None:
    routes = tmp_path / "routes.toml"
    write_routes(routes, {"ok": {"url": targets.url("/ok/ok")}})
    port = free_port()
    while busy_ports("127.0.0.1", port, 2):
        port = free_port()
    with relay_processes(tmp_path, relay_env(redis_url, routes)) as procs:
        parent = procs.worker("--processes", "2", "--metrics-port", str(port))
        for p in (port, port + 1):
            assert value(scrape(p), "relay_redis_up") == 1
        os.kill(parent.pid, signal.SIGHUP)

        def reloaded() -> bool:
            lines = log_lines(parent, "routes_reloaded")
            return len([r for r in lines if r.get("reason") == "SIGHUP"]) == 2

        assert wait_until(reloaded, 10), parent.output()
        assert parent.alive()

        # An edit reaches both children and the parent, so a restarted child starts on it.
        write_routes(
            routes, {"ok": {"url": targets.url("/ok/ok")}, "extra": {"url": targets.url("/ok/x")}}
        )

        def edited() -> bool:
            lines = log_lines(parent, "routes_reloaded")
            return len([r for r in lines if r.get("reason") == "file changed"]) == 3

        assert wait_until(edited, 10), parent.output()
        conn = redis.Redis.from_url(redis_url)
        try:
            pids = {w.pid for w in Worker.all(queue=make_queue(conn))}
        finally:
            conn.close()
        assert len(pids) == 2
        os.kill(pids.pop(), signal.SIGKILL)
        assert wait_until(lambda: len(log_lines(parent, "worker starting")) == 3, 20)
        assert [r["targets"] for r in log_lines(parent, "worker starting")] == [1, 1, 2]
        assert parent.terminate() == 0, parent.output()


@pytest.mark.timeout(60)
def test_busy_metrics_port_is_a_clear_start_up_error(
    tmp_path: Path, redis_url: str, targets: TargetServer
) -> None:
    routes = tmp_path / "routes.toml"
    write_routes(routes, {"ok": {"url": targets.url("/ok/ok")}})
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with relay_processes(tmp_path, relay_env(redis_url, routes)) as procs:
            for extra in ((), ("--processes", "2")):
                proc = procs.worker("--metrics-port", str(port), *extra, wait=False)
                assert proc.process.wait(20) == 1
                assert "metrics" in proc.output()
                assert str(port) in proc.output()


# ---------------------------------------------------------------------------------------------
# relay worker --check


def test_judge_needs_one_recent_heartbeat() -> None:
    assert judge([], 35).ok is False
    assert "no worker is registered" in judge([], 35).lines[0]
    stale = judge([Beat("w1", 90.0), Beat("w2", None)], 35)
    assert stale.ok is False
    assert "within 35s" in stale.lines[0]
    assert "2 registered" in stale.lines[0]
    assert "newest heartbeat 90s ago" in stale.lines[0]
    fine = judge([Beat("w1", 90.0), Beat("w2", 3.0)], 35)
    assert fine.ok is True
    assert fine.lines == ("1 worker(s) heartbeating on the relay queue (newest 3.0s ago)",)
    # One maintenance interval of blocking dequeue, one job at most HEARTBEAT_TTL, some slack.
    assert max_heartbeat_age(10, 20) == 35


def test_check_sees_a_stale_heartbeat_as_dead(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    routes = tmp_path / "routes.toml"
    write_routes(routes, {"ok": {"url": "http://127.0.0.1:9/ok"}})
    settings = Settings(redis_url=redis_url, routes_path=str(routes))
    worker = Worker([make_queue(redis_client)], connection=redis_client, name="frozen")
    worker.register_birth()
    assert check(settings, {}, 35).ok is True
    redis_client.hset(worker.key, "last_heartbeat", "2020-01-01T00:00:00.000000Z")
    health = check(settings, {}, 35)
    assert health.ok is False
    assert "1 registered" in health.lines[-1]


def run_cli(
    *argv: str, env: dict[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(60)
def test_check_exit_codes(tmp_path: Path, redis_url: str, targets: TargetServer) -> None:
    routes = tmp_path / "routes.toml"
    write_routes(routes, {"ok": {"url": targets.url("/ok/ok")}})
    env = relay_env(redis_url, routes)

    nobody = run_cli("worker", "--check", env=env)
    assert nobody.returncode == 1
    assert "no worker is registered on the relay queue" in nobody.stderr

    away = run_cli(
        "worker", "--check", env={**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}"}
    )
    assert away.returncode == 1
    assert "cannot reach Redis" in away.stderr

    broken = tmp_path / "broken.toml"
    broken.write_text('[targets.ok]\nurl = "ftp://nowhere"\n')
    invalid = run_cli("worker", "--check", env={**env, "RELAY_ROUTES": str(broken)})
    assert invalid.returncode == 1
    assert "does not validate" in invalid.stderr
    assert "targets.ok" in invalid.stderr

    with relay_processes(tmp_path, env) as procs:
        proc = procs.worker()
        healthy = run_cli("worker", "--check", env=env)
        assert healthy.returncode == 0, healthy.stderr
        assert "1 worker(s) heartbeating" in healthy.stdout
        assert proc.terminate() == 0
    # A worker that stopped cleanly unregisters at once.
    after = run_cli("worker", "--check", env=env)
    assert after.returncode == 1
    assert "no worker is registered" in after.stderr


# ---------------------------------------------------------------------------------------------
# Live route reloads


@pytest.mark.timeout(60)
def test_route_edits_reach_a_running_worker_and_invalid_ones_change_nothing(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, targets: TargetServer
) -> None:
    routes = tmp_path / "routes.toml"
    write_routes(routes, {"t": {"url": targets.url("/delay/a/2")}})
    with relay_processes(tmp_path, relay_env(redis_url, routes)) as procs:
        worker = procs.worker()

        def arrived(name: str, event_id: str) -> bool:
            return any(r.headers["webhook-id"] == event_id for r in targets.by_name(name))

        # A delivery in flight (the target answers after 2 s) while the file changes.
        first = make_event(["t"])
        store_events(redis_client, [first])
        assert wait_until(lambda: arrived("a", first.id), 10)
        write_routes(routes, {"t": {"url": targets.url("/ok/b"), "headers": {"x-v": "2"}}})
        assert wait_until(lambda: log_lines(worker, "routes_reloaded"), 10), worker.output()
        assert wait_until(lambda: states(redis_client, first.id) == {"t": "delivered"}, 10)
        # ... finished on the route it started with: one request, to the old URL.
        assert [r.name for r in targets.received if r.headers["webhook-id"] == first.id] == ["a"]

        second = make_event(["t"])
        store_events(redis_client, [second])
        assert wait_until(lambda: arrived("b", second.id), 10)
        assert targets.by_name("b")[-1].headers["x-v"] == "2"

        # An invalid edit is logged and the routes in force stay as they were.
        write_routes(routes, {"t": {"url": "ftp://nowhere"}})
        assert wait_until(lambda: log_lines(worker, "routes_reload_rejected"), 10)
        [rejected] = log_lines(worker, "routes_reload_rejected")
        assert rejected["level"] == "error"
        assert any("targets.t" in p for p in rejected["problems"])
        third = make_event(["t"])
        store_events(redis_client, [third])
        assert wait_until(lambda: arrived("b", third.id), 10)

        # SIGHUP reloads at once (and no longer kills the worker, SIGHUP's default action).
        write_routes(routes, {"t": {"url": targets.url("/ok/c")}})
        os.kill(worker.pid, signal.SIGHUP)
        assert wait_until(lambda: len(log_lines(worker, "routes_reloaded")) >= 2, 10)
        fourth = make_event(["t"])
        store_events(redis_client, [fourth])
        assert wait_until(lambda: arrived("c", fourth.id), 10)
        os.kill(worker.pid, signal.SIGHUP)
        assert wait_until(
            lambda: any(r.get("reason") == "SIGHUP" for r in log_lines(worker, "routes_reloaded")),
            10,
        )
        assert worker.alive()
        assert len([r for r in targets.received if r.name == "a"]) == 1
        assert worker.terminate() == 0


def test_swap_routes_leaves_a_started_job_on_its_context(redis_client: redis.Redis) -> None:
    old = parse_routes(routes_toml({"t": {"url": "http://127.0.0.1:9/a"}}), "r.toml", {})
    new = parse_routes(routes_toml({"t": {"url": "http://127.0.0.1:9/b"}}), "r.toml", {})
    assert swap_routes(new) is False  # nothing installed yet: nothing to swap
    configure(build_context(Settings(), old, redis_client))
    try:
        started = current()
        assert swap_routes(new) is True
        assert started.routes.targets["t"].url.endswith("/a")
        assert current().routes.targets["t"].url.endswith("/b")
        assert current().store is started.store  # only the routes change
    finally:
        configure(None)


# ---------------------------------------------------------------------------------------------
# Retention


def seed_indexes(conn: redis.Redis, now: float, age: float, tag: str) -> None:
    for index in (keys.EVENTS_INDEX, keys.UNROUTED, keys.DEAD):
        conn.zadd(index, {f"{tag}-old": now - age, f"{tag}-new": now - 10})


def members(conn: redis.Redis, index: str) -> set[str]:
    return {m.decode() for m in conn.zrange(index, 0, -1)}


def test_maintenance_trims_indexes_once_per_interval(redis_client: redis.Redis) -> None:
    now = time.time()
    seed_indexes(redis_client, now, 7200, "a")
    worker = relay_worker(redis_client, maintenance_interval=10)
    assert worker.worker_ttl == 25
    worker.retention = 3600
    with capture_logs() as logs:
        worker.run_maintenance_tasks()
    for index in (keys.EVENTS_INDEX, keys.UNROUTED, keys.DEAD):
        assert members(redis_client, index) == {"a-new"}
    [line] = [entry for entry in logs if entry["event"] == "retention: old index entries trimmed"]
    assert (line["events"], line["unrouted"], line["dead_letters"]) == (1, 1, 1)
    assert 0 < redis_client.ttl(keys.TRIM_LOCK) <= TRIM_INTERVAL

    # Another pass (any process) within the interval leaves the indexes alone.
    seed_indexes(redis_client, now, 7200, "b")
    worker.run_maintenance_tasks()
    assert "b-old" in members(redis_client, keys.EVENTS_INDEX)
    redis_client.delete(keys.TRIM_LOCK)  # the interval is over
    worker.run_maintenance_tasks()
    assert members(redis_client, keys.EVENTS_INDEX) == {"a-new", "b-new"}

    # Retention 0 never trims everything.
    redis_client.delete(keys.TRIM_LOCK)
    worker.retention = 0
    seed_indexes(redis_client, now, 7200, "c")
    worker.run_maintenance_tasks()
    assert "c-old" in members(redis_client, keys.EVENTS_INDEX)


def test_relay_worker_enforces_relay_retention(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    routes = tmp_path / "routes.toml"
    write_routes(routes, {"t": {"url": "http://127.0.0.1:9/t"}})
    seed_indexes(redis_client, time.time(), 3 * 3600, "x")
    env = relay_env(redis_url, routes, RELAY_RETENTION="2h")
    with relay_processes(tmp_path, env) as procs:
        proc = procs.worker("--burst", wait=False)
        assert proc.process.wait(30) == 0, proc.output()
    for index in (keys.EVENTS_INDEX, keys.UNROUTED, keys.DEAD):
        assert members(redis_client, index) == {"x-new"}


# ---------------------------------------------------------------------------------------------
# pause_on_gone, relay pause / relay resume


def routes_for(spec: dict[str, dict[str, Any]]) -> RouteTable:
    return parse_routes(routes_toml(spec), "routes.toml", {})


def rq_jobs(conn: redis.Redis) -> tuple[list[str], int]:
    """Function names of the queued RQ jobs, and how many are scheduled for later."""
    queue = make_queue(conn)
    scheduled = queue.scheduled_job_registry.get_job_count(cleanup=False)
    return [job.func_name for job in queue.get_jobs()], int(scheduled)


def test_410_pauses_a_pause_on_gone_target_and_its_deliveries_are_held(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    gone_spec = {"url": targets.url("/gone/g"), "pause_on_gone": True, "retry": FAST}
    registry, metrics = build_registry(lambda: redis_client, lambda: ("g", "other"))
    use_routes(routes_for({"g": gone_spec, "other": {"url": targets.url("/gone/other")}}), metrics)
    first = make_event(["g"])
    store_events(redis_client, [first], enqueue=False)
    with capture_logs() as logs:
        jobs.deliver_due()
    assert states(redis_client, first.id) == {"g": "gone"}
    [loud] = [e for e in logs if e["event"] == "target paused: answered 410 Gone"]
    assert loud["log_level"] == "error"
    assert loud["target"] == "g"
    pause = paused(redis_client, ["g", "other"])
    assert list(pause) == ["g"]
    assert pause["g"].event_id == first.id
    assert "410" in pause["g"].reason
    found = samples(render(registry).decode())
    assert value(found, "relay_target_paused", target="g") == 1
    assert value(found, "relay_target_paused", target="other") == 0

    # A fresh event and a retry of an older one whose time has come, both due now: held, not
    # claimed, budget untouched; a delivery to another target goes on meanwhile.
    second, third, fourth = make_event(["g"]), make_event(["g"]), make_event(["other"])
    store_events(redis_client, [second, third, fourth], enqueue=False)
    redis_client.hset(keys.event_key(third.id), mapping={"s:g": "retrying", "n:g": 1})
    held = due(redis_client, "g")
    assert set(held) == {second.id, third.id}
    assert all(at <= time.time() for at in held.values())
    ctx, runtime = current(), get_runtime()
    claimed = jobs.claim(ctx, runtime)
    assert claimed == [(fourth.id, "other")]
    jobs.run_claimed(ctx, claimed)
    jobs.deliver_due()  # nor does a kick take them
    assert len(targets.by_name("g")) == 1  # only the first event's request
    assert len(targets.by_name("other")) == 1
    assert states(redis_client, second.id) == {"g": "pending"}
    assert states(redis_client, third.id) == {"g": "retrying"}
    assert field(redis_client, second.id, "n:g") == "0"
    assert field(redis_client, third.id, "n:g") == "1"
    # Still due at their own times (not leased, not pushed back), and no RQ job holds them.
    assert due(redis_client, "g") == held
    assert rq_jobs(redis_client) == ([], 0)
    # Nothing a worker could take: the poller does not kick for a paused target.
    assert jobs.anything_due(ctx, runtime) is False
    assert kick_if_due() is False
    assert rq_jobs(redis_client) == ([], 0)

    # The operator fixes the target and resumes it: the poller's next look kicks, and the held
    # deliveries go out as attempt 1 and 2.
    use_routes(routes_for({"g": {**gone_spec, "url": targets.url("/ok/g")}}), metrics)
    assert resume_target(redis_client, "g") is True
    assert kick_if_due() is True
    assert rq_jobs(redis_client) == ([DELIVER_DUE], 0)
    jobs.deliver_due()
    assert states(redis_client, second.id) == {"g": "delivered"}
    assert states(redis_client, third.id) == {"g": "delivered"}
    assert len(targets.by_name("g")) == 3
    attempts = {r.headers["webhook-id"]: r.headers["x-relay-attempt"] for r in targets.by_name("g")}
    assert attempts == {first.id: "1", second.id: "1", third.id: "2"}
    assert due(redis_client, "g") == {}


def test_410_without_pause_on_gone_does_not_pause(
    redis_client: redis.Redis, targets: TargetServer, use_routes: Any
) -> None:
    use_routes(routes_for({"g": {"url": targets.url("/gone/g")}}))
    event = make_event(["g"])
    store_events(redis_client, [event], enqueue=False)
    jobs.deliver_due()
    assert states(redis_client, event.id) == {"g": "gone"}
    assert paused(redis_client, ["g"]) == {}


def test_pause_values_round_trip_and_hand_written_ones_are_read() -> None:
    pause = Pause("t", 1700000000.5, "why", "ev1")
    assert Pause.from_json("t", pause.to_json()) == pause
    assert Pause.from_json("t", b"1") == Pause("t", 0.0, "1")
    assert Pause.from_json("t", b"not json") == Pause("t", 0.0, "not json")


def test_pause_and_resume_commands(
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    routes = tmp_path / "routes.toml"
    write_routes(routes, {"crm": {"url": "http://127.0.0.1:9/crm"}, "bi": {"url": "http://x/"}})
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("RELAY_ROUTES", str(routes))

    assert relay_main(["pause"]) == 0
    assert capsys.readouterr().out.strip() == "no target is paused"
    assert relay_main(["pause", "crm", "--reason", "maintenance window"]) == 0
    assert "crm: paused" in capsys.readouterr().out
    assert relay_main(["pause", "crm"]) == 0
    assert "already paused" in capsys.readouterr().out
    since = paused(redis_client, ["crm"])["crm"].at
    assert paused(redis_client, ["crm"])["crm"].reason == "maintenance window"
    assert relay_main(["pause"]) == 0
    assert capsys.readouterr().out == (
        f"crm  paused since {format_time(since)} (0s ago): maintenance window\n"
    )
    assert relay_main(["pause", "--json"]) == 0
    [listed] = orjson.loads(capsys.readouterr().out)
    assert listed == {
        "target": "crm",
        "reason": "maintenance window",
        "since": format_time(since),
        "at": since,
        "event_id": None,
    }

    assert relay_main(["pause", "crn"]) == 2
    err = capsys.readouterr().err
    assert "no target named 'crn'" in err
    assert "bi, crm" in err
    assert redis_client.exists(keys.paused_key("crn")) == 0

    assert relay_main(["resume", "crm"]) == 0
    assert "crm: resumed" in capsys.readouterr().out
    assert paused(redis_client, ["crm"]) == {}
    assert relay_main(["resume", "crm"]) == 0
    assert "was not paused" in capsys.readouterr().out

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}")
    assert relay_main(["resume", "crm"]) == 1
    assert "cannot reach Redis" in capsys.readouterr().err


def test_pause_target_keeps_the_first_reason(redis_client: redis.Redis) -> None:
    assert pause_target(redis_client, "t", "first", now=10.0) is True
    assert pause_target(redis_client, "t", "second", now=20.0) is False
    assert paused(redis_client, ["t", "t", "u"]) == {"t": Pause("t", 10.0, "first")}
    assert redis_client.ttl(keys.paused_key("t")) == -1  # no expiry: only an operator resumes
