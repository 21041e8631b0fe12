"""`relay dev`: the pure helpers, the in-process servers, and the whole command as a subprocess."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fakeredis
import pytest
from rq import Queue

from relay.cli import common
from relay.cli.dev import banner, children, echo, own_redis, values
from relay.cli.dev.app_thread import AppThread
from relay.cli.dev.echo import echo_app
from relay.cli.dev.embedded import ThreadScheduler, thread_scheduler_worker
from relay.config.loading import parse_routes
from relay.config.settings import Settings
from tests.support.dev_process import DevProcess
from tests.support.processes import group_alive
from tests.support.redis_server import RedisServer, free_port

ROUTES = """
[sources.fellow]
kind = "form"
token_env = "DEVTEST_FELLOW_TOKEN"

[sources.learn365]
kind = "aspnet"
secret = "${DEVTEST_LEARN365_SECRET}"

[sources.strigo]
kind = "resthooks"

[targets.crm]
url = "https://crm.example.com/hooks"
signing_secret_env = "DEVTEST_CRM_WHSEC"
headers = { authorization = "Bearer ${DEVTEST_CRM_KEY}" }

[[routes]]
source = "fellow"
targets = ["crm"]
"""


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST to a loopback URL; (status, body) whatever the status."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# ---------------------------------------------------------------------------------------------
# Which variables routes.toml needs, and their dev values


def test_needed_env_vars_finds_env_keys_and_references_in_order() -> None:
    needs = values.needed_env_vars(ROUTES)
    assert [(n.name, n.key) for n in needs] == [
        ("DEVTEST_FELLOW_TOKEN", "sources.fellow.token_env"),
        ("DEVTEST_LEARN365_SECRET", "sources.learn365.secret"),
        ("DEVTEST_CRM_WHSEC", "targets.crm.signing_secret_env"),
        ("DEVTEST_CRM_KEY", "targets.crm.headers.authorization"),
    ]


def test_needed_env_vars_names_each_variable_once_and_walks_arrays() -> None:
    text = """
    [sources.a]
    kind = "json"
    token_env = "SHARED"
    [sources.b]
    kind = "json"
    token = "${SHARED}"
    [[routes]]
    source = "a"
    targets = ["${IN_ARRAY}"]
    """
    assert [n.name for n in values.needed_env_vars(text)] == ["SHARED", "IN_ARRAY"]
    assert values.needed_env_vars(text)[1].key == "routes[0].targets[0]"


def test_needed_env_vars_ignores_literal_values() -> None:
    assert values.needed_env_vars('[targets.t]\nurl = "http://x/$HOME/{a}"\n') == ()


def test_dev_values_fit_what_routes_toml_accepts() -> None:
    whsec = values.dev_value("targets.crm.signing_secret_env")
    assert whsec.startswith("whsec_")
    assert len(base64.b64decode(whsec.removeprefix("whsec_"), validate=True)) == 24
    secret = values.dev_value("sources.learn365.secret")
    assert 32 <= len(secret) <= 64
    token = values.dev_value("sources.fellow.token_env")
    assert re.fullmatch(r"[A-Za-z0-9_-]{20,}", token)
    assert values.dev_value("sources.fellow.token_env") != token  # fresh every time


def test_fill_dev_env_sets_only_missing_variables_and_reports_them() -> None:
    env = {"DEVTEST_FELLOW_TOKEN": "mine", "DEVTEST_CRM_KEY": "  "}
    generated = values.fill_dev_env(env, values.needed_env_vars(ROUTES))
    assert env["DEVTEST_FELLOW_TOKEN"] == "mine"
    assert set(generated) == {"DEVTEST_LEARN365_SECRET", "DEVTEST_CRM_WHSEC", "DEVTEST_CRM_KEY"}
    assert all(env[name] == value for name, value in generated.items())


def test_filled_environment_makes_the_routes_file_valid() -> None:
    env: dict[str, str] = {}
    values.fill_dev_env(env, values.needed_env_vars(ROUTES))
    table = parse_routes(ROUTES, "routes.toml", env)
    assert table.sources["learn365"].secret is not None
    assert table.targets["crm"].signing_secrets[0].key_bytes()


# ---------------------------------------------------------------------------------------------
# The banner


def test_redact_url_hides_only_the_password() -> None:
    assert common.redact_url("redis://u:pw@h:6379/0") == "redis://u:****@h:6379/0"
    assert common.redact_url("rediss://:pw@h/1") == "rediss://:****@h/1"
    assert common.redact_url("redis://127.0.0.1:6380/0") == "redis://127.0.0.1:6380/0"


def test_banner_lists_urls_tokens_generated_values_and_how_to_stop() -> None:
    env: dict[str, str] = {}
    generated = values.fill_dev_env(env, values.needed_env_vars(ROUTES))
    table = parse_routes(ROUTES, "routes.toml", env)
    text = banner.render_banner(
        banner.BannerInfo(
            redis_url="redis://:topsecret@127.0.0.1:6380/0",
            redis_kind="redis-server started by relay dev",
            base_url="http://127.0.0.1:8000",
            routes=table,
            worker="relay worker",
            generated=generated,
            echo_urls=("http://127.0.0.1:9001", "http://127.0.0.1:9002"),
            processes=(("redis-server", 11), ("receiver", 12)),
            group=11,
        )
    )
    token = env["DEVTEST_FELLOW_TOKEN"]
    assert f"http://127.0.0.1:8000/hooks/fellow/{token}" in text
    assert "http://127.0.0.1:8000/hooks/learn365\n" in text  # signed, no path token
    assert "http://127.0.0.1:8000/hooks/strigo" in text
    assert "/healthz" in text
    assert "/readyz" in text
    assert "topsecret" not in text
    assert "redis://:****@127.0.0.1:6380/0" in text
    for name, value in generated.items():
        assert re.search(rf"{name} += {re.escape(value)}\n", text)
    assert "throwaway" in text
    assert "redis-server pid 11, receiver pid 12 (process group 11)" in text
    assert "Echo       http://127.0.0.1:9001  http://127.0.0.1:9002\n" in text
    assert "Ctrl-C" in text


def test_pick_port_falls_back_to_a_free_port_when_taken() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        other = children.pick_port(busy)
        assert other != busy
        assert children.port_is_free(other)


def _time_wait_port() -> int:
    """A loopback port whose only user is a socket in TIME-WAIT (the server closed first)."""
    import socket

    listener = socket.socket()
    # As aiohttp's listener does; Linux lets a new bind reuse the port only when both did.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = int(listener.getsockname()[1])
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the side that closes first keeps the TIME-WAIT
    client.close()
    listener.close()
    return port


def test_a_port_held_only_by_time_wait_is_free_for_a_quick_restart() -> None:
    import socket

    port = _time_wait_port()
    # The precondition: a plain bind (what port_is_free used to do) is refused...
    with socket.socket() as plain, pytest.raises(OSError, match="Address already in use"):
        plain.bind(("127.0.0.1", port))
    # ...yet aiohttp, which sets SO_REUSEADDR, could listen there, and so relay dev says free.
    assert children.port_is_free(port)
    assert children.pick_port(port) == port


def test_a_listening_port_is_taken_even_with_reuse_address() -> None:
    import socket

    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert not children.port_is_free(port)
        # The wildcard a HOST=0.0.0.0 server binds:
        assert not children.port_is_free(port, "0.0.0.0")


def test_dev_paths_are_made_absolute_and_the_spool_goes_under_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env: dict[str, str] = {}
    values.resolve_dev_paths(env, Path(".relay-dev").resolve())
    assert env["RELAY_ROUTES"] == str(tmp_path / "routes.toml")
    assert env["RELAY_SPOOL_DIR"] == str(tmp_path / ".relay-dev" / "spool")
    given = {"RELAY_ROUTES": "conf/r.toml", "RELAY_SPOOL_DIR": "sp"}
    values.resolve_dev_paths(given, tmp_path / "d")
    assert given == {
        "RELAY_ROUTES": str(tmp_path / "conf" / "r.toml"),
        "RELAY_SPOOL_DIR": str(tmp_path / "sp"),
    }


def test_redis_server_gets_absolute_paths_for_a_relative_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # redis-server changes into --dir before opening --logfile: a relative log path fails.
    monkeypatch.chdir(tmp_path)
    args = own_redis.redis_server_args("redis-server", 6380, Path(".relay-dev/redis").resolve())
    for flag in ("--dir", "--logfile", "--pidfile"):
        assert Path(args[args.index(flag) + 1]).is_absolute(), flag


def test_env_file_is_private_and_a_shell_gets_the_values_back(tmp_path: Path) -> None:
    wanted = {
        "FELLOW_TOKEN": "abc_-123",
        "CRM_WHSEC": "whsec_ab+/c=",
        "ODD": 'it\'s $HOME `x` "q"',
        "REDIS_URL": "redis://127.0.0.1:6380/0",
    }
    path = tmp_path / "dev" / "env"
    path.parent.mkdir()
    path.write_text("old")
    path.chmod(0o644)  # an older, wider file is narrowed
    values.write_env_file(path, wanted)
    assert path.stat().st_mode & 0o777 == 0o600
    script = ". " + str(path) + " && " + " && ".join(f'printf "%s\\n" "${name}"' for name in wanted)
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True, env={})
    assert out.stdout.splitlines() == list(wanted.values())


def test_banner_tells_how_to_use_the_env_file_from_another_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env: dict[str, str] = {}
    values.fill_dev_env(env, values.needed_env_vars(ROUTES))
    info = banner.BannerInfo(
        redis_url="redis://127.0.0.1:6380/0",
        redis_kind="k",
        base_url="http://127.0.0.1:8000",
        routes=parse_routes(ROUTES, "routes.toml", env),
        worker="w",
        env_file=tmp_path / ".relay-dev" / "env",
    )
    assert "source ./.relay-dev/env" in banner.render_banner(info)
    elsewhere = dataclasses.replace(info, env_file=Path("/elsewhere/env"))
    assert "source /elsewhere/env" in banner.render_banner(elsewhere)


def test_loopback_ports_are_the_local_targets_ports_once_each() -> None:
    text = """
    [targets.a]
    url = "http://127.0.0.1:9001/a"
    [targets.b]
    url = "http://localhost:9001/b"
    [targets.c]
    url = "http://localhost/c"
    [targets.d]
    url = "https://crm.example.com:9005/d"
    [targets.e]
    url = "http://127.0.0.1:9002/e?x=1"
    """
    assert echo.loopback_ports(parse_routes(text, "routes.toml", {})) == (80, 9001, 9002)


def test_local_url_replaces_a_wildcard_host_with_loopback() -> None:
    assert banner.local_url(Settings(host="0.0.0.0", port=8001)) == "http://127.0.0.1:8001"
    assert banner.local_url(Settings(host="::", port=8001)) == "http://127.0.0.1:8001"
    assert banner.local_url(Settings(host="127.0.0.2", port=80)) == "http://127.0.0.2:80"
    assert banner.local_url(Settings(host="::1", port=80)) == "http://[::1]:80"


def test_redis_server_args_keep_data_and_never_evict(tmp_path: Path) -> None:
    args = own_redis.redis_server_args("redis-server", 6390, tmp_path)
    pairs = dict(zip(args[1::2], args[2::2], strict=True))
    assert pairs["--bind"] == "127.0.0.1"
    assert pairs["--port"] == "6390"
    assert pairs["--dir"] == str(tmp_path)
    assert pairs["--appendonly"] == "yes"
    assert pairs["--appendfsync"] == "everysec"
    assert pairs["--maxmemory-policy"] == "noeviction"


def test_stale_redis_is_found_by_its_pidfile_only_when_it_is_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    assert own_redis.stale_redis(tmp_path) is None  # no pidfile
    assert redis_server.process is not None
    (tmp_path / "redis.pid").write_text(f"{redis_server.process.pid}\n")
    assert own_redis.stale_redis(tmp_path) == redis_server.process.pid
    (tmp_path / "redis.pid").write_text(f"{os.getpid()}\n")  # alive, but not a redis-server
    assert own_redis.stale_redis(tmp_path) is None
    # Alive, with "redis" in its arguments (as a test runner given a redis test file has): no.
    talker = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "redis-server", "tests/test_redis.py"]
    )
    try:
        (tmp_path / "redis.pid").write_text(f"{talker.pid}\n")
        assert own_redis.stale_redis(tmp_path) is None
    finally:
        talker.kill()
        talker.wait()
    (tmp_path / "redis.pid").write_text("not a pid")
    assert own_redis.stale_redis(tmp_path) is None


# ---------------------------------------------------------------------------------------------
# The supervisor

IGNORES_SIGTERM = (
    "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "pathlib.Path(sys.argv[1]).touch(); time.sleep(60)"
)


def test_wait_until_gives_up_at_once_when_a_stop_is_requested() -> None:
    stop = children.StopRequested()
    stop(signal.SIGINT, None)
    calls: list[int] = []
    group = children.ChildGroup()
    failure = children.wait_until(lambda: bool(calls.append(1)), 30, group, "x", stop)
    assert failure is None
    assert calls == []


def test_wait_until_reports_a_timeout() -> None:
    failure = children.wait_until(
        lambda: False, 0.2, children.ChildGroup(), "the thing", children.StopRequested()
    )
    assert failure == "waited 0.2 s for the thing in vain"


def test_wait_until_reports_a_child_that_exits() -> None:
    supervisor = children.ChildGroup()
    supervisor.spawn("quitter", [sys.executable, "-c", "raise SystemExit(3)"], os.environ)
    try:
        stop = children.StopRequested()
        failure = children.wait_until(lambda: False, 30, supervisor, "Godot", stop)
    finally:
        supervisor.stop_all([], timeout=5)
    assert failure == "the quitter exited with code 3 while waiting for Godot"


def test_supervisor_puts_children_in_one_group_and_kills_what_ignores_sigterm(
    tmp_path: Path,
) -> None:
    supervisor = children.ChildGroup()
    marks = [tmp_path / "a", tmp_path / "b"]
    first = supervisor.spawn(
        "a", [sys.executable, "-c", IGNORES_SIGTERM, str(marks[0])], os.environ
    )
    second = supervisor.spawn(
        "b", [sys.executable, "-c", IGNORES_SIGTERM, str(marks[1])], os.environ
    )
    try:
        assert supervisor.group == first
        assert os.getpgid(second) == first
        assert os.getpgid(first) != os.getpgid(0)  # not the terminal's (our) group
        deadline = time.monotonic() + 30  # both have installed their SIGTERM handler
        while not all(m.exists() for m in marks) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(m.exists() for m in marks)
        supervisor.stop(["a"], timeout=0.5)
        assert supervisor.children[0][1].returncode == -signal.SIGKILL
        assert supervisor.exited() == ("a", -signal.SIGKILL)
    finally:
        supervisor.stop_all([["b"]], timeout=0.5)
    assert supervisor.children[1][1].returncode == -signal.SIGKILL
    assert not group_alive(first)


# ---------------------------------------------------------------------------------------------
# In-process pieces of the embedded mode


def test_echo_target_prints_what_it_receives() -> None:
    lines: list[str] = []
    server = AppThread("echo", lambda: echo_app(lines.append), "127.0.0.1", free_port())
    server.start()
    try:
        status, _ = post(
            f"{server.url}/crm?x=1",
            b'{"event":"hello"}',
            {"x-relay-event": "hello", "webhook-id": "evt_1", "other": "no"},
        )
        assert status == 200
    finally:
        server.stop()
    assert not server.alive
    assert len(lines) == 1
    assert "POST /crm?x=1" in lines[0]
    assert "x-relay-event=hello" in lines[0]
    assert "webhook-id=evt_1" in lines[0]
    assert '{"event":"hello"}' in lines[0]
    assert "other" not in lines[0]


def test_app_thread_reports_a_taken_port() -> None:
    first = AppThread("one", lambda: echo_app(lambda _: None), "127.0.0.1", free_port())
    first.start()
    try:
        second = AppThread("two", lambda: echo_app(lambda _: None), "127.0.0.1", first.port)
        with pytest.raises(OSError, match="in use"):
            second.start()
        assert not second.failed  # start() reported it: not an unexpected end
    finally:
        first.stop()


def test_app_thread_that_ends_unasked_is_failed_and_says_so() -> None:
    calls: list[str] = []
    server = AppThread("echo", lambda: echo_app(lambda _: None), "127.0.0.1", free_port())
    server.on_unexpected_exit = lambda: calls.append("ended")
    server.start()
    assert server._loop is not None
    assert server._stopping is not None
    server._loop.call_soon_threadsafe(server._stopping.set)  # as if the server died by itself
    server._thread.join(10)
    assert server.failed
    assert calls == ["ended"]


def test_app_thread_stopped_on_request_is_not_failed() -> None:
    calls: list[str] = []
    server = AppThread("echo", lambda: echo_app(lambda _: None), "127.0.0.1", free_port())
    server.on_unexpected_exit = lambda: calls.append("ended")
    server.start()
    server.stop()
    assert not server.alive
    assert not server.failed
    assert calls == []


def test_thread_scheduler_moves_due_jobs_to_the_queue_in_the_shared_server() -> None:
    server = fakeredis.FakeServer()
    connection = fakeredis.FakeRedis(server=server)
    queue = Queue("relay-test", connection=connection)
    job = queue.enqueue_in(timedelta(seconds=0), "tests.test_dev.noop")
    assert job.id not in queue.job_ids  # scheduled, not queued
    scheduler = ThreadScheduler([queue], connection=fakeredis.FakeRedis(server=server))
    scheduler.acquire_locks()
    assert scheduler.acquired_locks == {"relay-test"}
    scheduler.start()
    try:
        deadline = time.monotonic() + 10
        while job.id not in queue.job_ids and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job.id in queue.job_ids
    finally:
        scheduler.halt()
    assert not scheduler._process.is_alive()


def test_thread_scheduler_worker_runs_retries_without_forking() -> None:
    from rq import Retry, SimpleWorker

    _CALLS.clear()
    server = fakeredis.FakeServer()
    connection = fakeredis.FakeRedis(server=server)
    queue = Queue("relay-test", connection=connection)
    job = queue.enqueue("tests.test_dev.fail_once", retry=Retry(max=1, interval=[1]))
    worker_class = thread_scheduler_worker(SimpleWorker)
    assert worker_class.__name__ == "EmbeddedSimpleWorker"
    worker = worker_class([queue], connection=connection)
    pids_before = os.getpid()
    # First pass fails the job and schedules the retry; the thread scheduler must enqueue it
    # from this same process (a forked scheduler would not see the in-memory data).
    worker.work(burst=True, with_scheduler=True)
    assert _CALLS == ["fail"]
    deadline = time.monotonic() + 10
    while job.get_status(refresh=True) != "finished" and time.monotonic() < deadline:
        time.sleep(0.2)
        worker.work(burst=True, with_scheduler=True)
    assert job.get_status(refresh=True) == "finished"
    assert os.getpid() == pids_before
    assert _CALLS == ["fail", "ok"]


_CALLS: list[str] = []


def noop() -> None:
    """A job that does nothing."""


def fail_once() -> str:
    """A job that fails on its first run only."""
    if not _CALLS:
        _CALLS.append("fail")
        raise RuntimeError("first run fails")
    _CALLS.append("ok")
    return "ok"


# ---------------------------------------------------------------------------------------------
# The whole command, as a user runs it


class Target:
    """A loopback HTTP target that records every request it gets."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.arrived = threading.Event()
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                target.received.append(
                    (self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                target.arrived.set()
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Target:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


DEV_ROUTES = """
[sources.demo]
kind = "json"
token_env = "DEVTEST_DEMO_TOKEN"

[targets.sink]
url = "{target}/sink"
signing_secret_env = "DEVTEST_SINK_WHSEC"
retry = {{ attempts = 3, first = "1s", max = "2s" }}

[[routes]]
source = "demo"
events = ["*"]
targets = ["sink"]
"""


@pytest.fixture
def dev_env(tmp_path: Path) -> dict[str, str]:
    """An environment for `relay dev` in tmp_path: no REDIS_URL, a free PORT, JSON logs."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "RELAY_", "DEVTEST_"))
    }
    env.update(
        PORT=str(free_port()),
        RELAY_ADMIN_PORT=str(free_port()),  # 8001, dev's default, may be taken on a shared machine
        RELAY_ROUTES=str(tmp_path / "routes.toml"),
        RELAY_LOG_FORMAT="json",
        RELAY_LOG_LEVEL="warning",
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )
    return env


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    with Target() as t:
        (tmp_path / "routes.toml").write_text(DEV_ROUTES.format(target=t.url))
        yield t


def pids_in_banner(output: str) -> tuple[dict[str, int], int | None]:
    """{child name: pid} and the process group from the banner's Processes line."""
    line = next(x for x in output.splitlines() if x.strip().startswith("Processes"))
    pids = {
        name: int(pid)
        for name, pid in re.findall(r"([\w -]+?) pid (\d+)", line.split("Processes", 1)[1])
    }
    group = re.search(r"process group (\d+)", line)
    return {k.strip(", "): v for k, v in pids.items()}, int(group.group(1)) if group else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def post_event_and_see_it_delivered(output: str, target: Target) -> None:
    """POST an event to the demo URL the banner shows; the target must receive it."""
    url = re.search(r"(http://127\.0\.0\.1:\d+/hooks/demo/\S+)", output)
    assert url, output
    status, body = post(
        url.group(1), b'{"event": "ping", "n": 1}', {"content-type": "application/json"}
    )
    assert status == 202, body
    event_id = json.loads(body)["id"]
    assert target.arrived.wait(30), "the target received nothing within 30 s"
    path, headers, delivered = target.received[0]
    assert path == "/sink"
    assert delivered == b'{"event": "ping", "n": 1}'
    assert headers["webhook-id"].startswith(event_id.split("-")[0])
    assert headers["webhook-signature"].startswith("v1,")


needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server on PATH"
)


@needs_redis_server
@pytest.mark.timeout(120)
def test_dev_with_its_own_redis_server_delivers_then_stops_everything(
    tmp_path: Path, dev_env: dict[str, str], target: Target
) -> None:
    data_dir = tmp_path / "devdata"
    dev_run = DevProcess(
        tmp_path, dev_env, "--data-dir", str(data_dir), "--redis-port", str(free_port())
    )
    try:
        output = dev_run.wait_for("Press Ctrl-C")
        assert "redis-server started by relay dev" in output
        assert "DEVTEST_DEMO_TOKEN" in output  # generated, and shown
        assert "DEVTEST_SINK_WHSEC = whsec_" in output
        pids, group = pids_in_banner(output)
        assert set(pids) == {"redis-server", "receiver", "worker"}
        assert group == pids["redis-server"]
        assert all(alive(pid) for pid in pids.values())
        post_event_and_see_it_delivered(output, target)
        assert dev_run.interrupt() == 0
    finally:
        dev_run.kill()
    assert "stopped receiver, worker and Redis" in dev_run.output
    assert not any(alive(pid) for pid in pids.values())
    assert group is not None
    assert not group_alive(group)  # nothing left in the group: not even RQ's scheduler
    assert (data_dir / "redis" / "appendonlydir").is_dir()  # AOF: a restart keeps events


@pytest.mark.timeout(120)
def test_dev_embedded_delivers_in_one_process_then_stops(
    tmp_path: Path, dev_env: dict[str, str], target: Target
) -> None:
    dev_run = DevProcess(tmp_path, dev_env, "--embedded")
    try:
        output = dev_run.wait_for("Press Ctrl-C")
        assert "embedded" in output
        assert "LOST" in output
        pids, group = pids_in_banner(output)
        assert pids == {"relay dev": dev_run.process.pid}
        assert group is None
        post_event_and_see_it_delivered(output, target)
        assert dev_run.interrupt() == 0
    finally:
        dev_run.kill()
    assert "stopped receiver, worker and the embedded Redis" in dev_run.output


@pytest.mark.timeout(120)
def test_dev_embedded_is_chosen_by_the_environment_variable_too(
    tmp_path: Path, dev_env: dict[str, str], target: Target
) -> None:
    dev_run = DevProcess(tmp_path, {**dev_env, "RELAY_DEV_EMBEDDED": "1"})
    try:
        assert "embedded (fakeredis" in dev_run.wait_for("Press Ctrl-C")
        assert dev_run.interrupt() == 0
    finally:
        dev_run.kill()


@pytest.mark.timeout(120)
def test_dev_uses_redis_url_and_leaves_that_redis_running(
    tmp_path: Path, dev_env: dict[str, str], target: Target, redis_url: str
) -> None:
    import redis

    dev_run = DevProcess(tmp_path, {**dev_env, "REDIS_URL": redis_url})
    try:
        output = dev_run.wait_for("Press Ctrl-C")
        assert redis_url in output
        assert "relay dev started no Redis of its own" in output
        pids, group = pids_in_banner(output)
        assert set(pids) == {"receiver", "worker"}
        post_event_and_see_it_delivered(output, target)
        assert dev_run.interrupt() == 0
    finally:
        dev_run.kill()
    assert not any(alive(pid) for pid in pids.values())
    assert group is not None
    assert not group_alive(group)
    client = redis.Redis.from_url(redis_url)
    assert client.ping()
    client.close()


@pytest.mark.timeout(60)
def test_dev_fails_early_when_redis_url_does_not_answer(
    tmp_path: Path, dev_env: dict[str, str], target: Target
) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    dev_run = DevProcess(tmp_path, {**dev_env, "REDIS_URL": url})
    try:
        assert dev_run.wait(30) == 1
    finally:
        dev_run.kill()
    assert "does not answer" in dev_run.output
    assert "hunter2" not in dev_run.output


@needs_redis_server
@pytest.mark.timeout(120)
def test_dev_stops_everything_when_a_child_dies(
    tmp_path: Path, dev_env: dict[str, str], target: Target
) -> None:
    dev_run = DevProcess(
        tmp_path, dev_env, "--data-dir", str(tmp_path / "d"), "--redis-port", str(free_port())
    )
    try:
        pids, group = pids_in_banner(dev_run.wait_for("Press Ctrl-C"))
        os.kill(pids["worker"], signal.SIGKILL)
        assert dev_run.wait(60) == 1
    finally:
        dev_run.kill()
    assert "the worker exited unexpectedly" in dev_run.output
    assert not any(alive(pid) for pid in pids.values())
    assert group is not None
    assert not group_alive(group)


def test_dev_reports_a_missing_routes_file(tmp_path: Path, dev_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "relay", "dev"],
        cwd=tmp_path,
        env={**dev_env, "RELAY_ROUTES": str(tmp_path / "nope.toml")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "nope.toml: file not found" in result.stderr


@pytest.mark.timeout(120)
def test_dev_echo_target_answers_for_loopback_targets_and_prints_deliveries(
    tmp_path: Path, dev_env: dict[str, str]
) -> None:
    port = free_port()
    (tmp_path / "routes.toml").write_text(DEV_ROUTES.format(target=f"http://127.0.0.1:{port}"))
    dev_run = DevProcess(tmp_path, dev_env, "--embedded", "--echo-target")
    try:
        output = dev_run.wait_for("Press Ctrl-C")
        assert f"Echo       http://127.0.0.1:{port}\n" in output
        url = re.search(r"(http://127\.0\.0\.1:\d+/hooks/demo/\S+)", output)
        assert url
        status, _ = post(url.group(1), b'{"event": "ping"}', {"content-type": "application/json"})
        assert status == 202
        printed = dev_run.wait_for(f"echo :{port} POST /sink", timeout=30)
        assert "x-relay-event=ping" in printed
        assert dev_run.interrupt() == 0
    finally:
        dev_run.kill()


def test_dev_refuses_embedded_with_redis_url(tmp_path: Path, dev_env: dict[str, str]) -> None:
    (tmp_path / "routes.toml").write_text(DEV_ROUTES.format(target="http://127.0.0.1:9"))
    result = subprocess.run(
        [sys.executable, "-m", "relay", "dev", "--embedded"],
        cwd=tmp_path,
        env={**dev_env, "REDIS_URL": "redis://127.0.0.1:9/0"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--embedded and REDIS_URL exclude each other" in result.stderr


@pytest.mark.timeout(60)
def test_dev_says_when_the_receiver_port_is_taken(
    tmp_path: Path, dev_env: dict[str, str], target: Target, redis_url: str
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(dev_env["PORT"])))
        taken.listen()
        dev_run = DevProcess(tmp_path, {**dev_env, "REDIS_URL": redis_url})
        try:
            assert dev_run.wait(30) == 1
        finally:
            dev_run.kill()
    assert f"port {dev_env['PORT']} is taken" in dev_run.output


@pytest.mark.timeout(120)
def test_dev_without_redis_server_on_path_falls_back_to_embedded(
    tmp_path: Path, dev_env: dict[str, str], target: Target
) -> None:
    env = {**dev_env, "PATH": str(tmp_path / "empty-bin")}
    dev_run = DevProcess(tmp_path, env)
    try:
        output = dev_run.wait_for("Press Ctrl-C")
        assert "embedded (fakeredis, in this process)" in output
        post_event_and_see_it_delivered(output, target)
        assert dev_run.interrupt() == 0
    finally:
        dev_run.kill()
