"""`relay serve --processes N`: N receivers on one port, one /metrics for all of them."""

from __future__ import annotations

import os
import signal
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from relay.store import keys
from tests.support.metrics import scrape, value
from tests.support.processes import RelayProcess, post, relay_env, wait_until
from tests.support.redis_server import free_port
from tests.support.seed_events import routes_toml

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    routes = tmp_path / "routes.toml"
    routes.write_text(routes_toml({"a": {"url": "http://127.0.0.1:9/a"}}, source="s"))
    return relay_env(redis_url, routes, WHSEC=SECRET, RELAY_SPOOL_DIR=str(tmp_path / "spool"))


@pytest.fixture
def started(tmp_path: Path, env: dict[str, str]) -> Iterator[list[RelayProcess]]:
    procs: list[RelayProcess] = []
    yield procs
    for proc in procs:
        proc.cleanup()


def serve(
    tmp_path: Path, env: dict[str, str], started: list[RelayProcess], *args: str
) -> tuple[RelayProcess, int]:
    port = free_port()
    proc = RelayProcess(["serve", "--port", str(port), *args], env, tmp_path, "serve")
    started.append(proc)
    return proc, port


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def log_events(proc: RelayProcess, event: str) -> list[dict[str, object]]:
    lines = (orjson.loads(line) for line in proc.output().splitlines() if line.startswith("{"))
    return [line for line in lines if line.get("event") == event]


def test_two_processes_share_the_port_and_metrics_count_for_both(
    tmp_path: Path, env: dict[str, str], started: list[RelayProcess], redis_client: redis.Redis
) -> None:
    parent, port = serve(tmp_path, env, started, "--processes", "2")
    assert wait_until(lambda: ready(port), 20), parent.output()
    assert wait_until(lambda: len(log_events(parent, "receiver_starting")) == 2, 20)
    ids = []
    for n in range(40):  # a new connection each: the kernel spreads them over both processes
        status, body = post(
            f"http://127.0.0.1:{port}/hooks/s",
            b'{"event": "order.paid", "n": %d}' % n,
            {"Content-Type": "application/json", "Connection": "close", "X-Event-Type": "paid"},
        )
        assert status == 202, body
        ids.append(orjson.loads(body)["id"])
    assert all(redis_client.exists(keys.event_key(i)) for i in ids)
    # Whichever process answers the scrape, it reports the requests of both.
    for _ in range(6):
        found = scrape(port)
        assert value(found, "relay_events_received_total", source="s", status="202") == 40
        assert value(found, "relay_redis_up") == 1
    [begun] = log_events(parent, "receiver processes started")
    children = [int(pid) for pid in begun["pids"]]  # type: ignore[attr-defined]
    # Both processes counted requests (prometheus-client's files carry the writer's pid).
    files = {p.name for p in Path(str(begun["metrics_dir"])).iterdir()}
    assert {f"counter_{pid}.db" for pid in children} <= files
    os.kill(children[0], signal.SIGKILL)  # a crashed child is replaced
    assert wait_until(lambda: len(log_events(parent, "receiver_starting")) == 3, 20)
    assert wait_until(lambda: ready(port), 20)
    assert parent.terminate() == 0, parent.output()
    [stopped] = log_events(parent, "receiver processes stopped")
    assert stopped["restarts"] == 1


def test_web_concurrency_sets_the_count_and_a_bad_value_exits_2(
    tmp_path: Path, env: dict[str, str], started: list[RelayProcess]
) -> None:
    parent, _ = serve(tmp_path, {**env, "WEB_CONCURRENCY": "2"}, started)
    assert wait_until(lambda: len(log_events(parent, "receiver_starting")) == 2, 20)
    assert parent.terminate() == 0, parent.output()
    bad, _ = serve(tmp_path, {**env, "WEB_CONCURRENCY": "many"}, started)
    assert bad.process.wait(20) == 2
    assert "WEB_CONCURRENCY='many' is not a positive integer" in bad.output()


def test_a_port_in_use_exits_1_before_forking(
    tmp_path: Path, env: dict[str, str], started: list[RelayProcess]
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = RelayProcess(
            ["serve", "--port", str(port), "--processes", "2"], env, tmp_path, "serve"
        )
        started.append(proc)
        assert proc.process.wait(20) == 1
    [line] = log_events(proc, "receiver cannot listen")
    assert line["port"] == port
    assert not log_events(proc, "receiver_starting")
