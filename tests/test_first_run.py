"""A newcomer's first run: `make run` (`relay dev --echo-target`) in a fresh copy of the repo.

Everything is as a user meets it: the working directory is a new copy of the repository, relay
dev's paths are its relative defaults, nothing relay reads is set in the environment, the Redis
is a real `redis-server` relay dev starts, the event is the Quick start's Fellow post with the
bytes curl sends, and Ctrl-C goes to the whole foreground process group.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from relay.cli.dev.command import needed_env_vars
from tests.support.dev_process import DevProcess
from tests.support.processes import group_alive
from tests.support.redis_server import free_port

REPO = Path(__file__).resolve().parents[1]
QUICK_START_BODY = b"event=COURSEMEMBER_CREATED&courseId=1&memberId=2"


def fresh_copy(dest: Path) -> Path:
    """The repository as a clone would have it, with the work in progress: what git would keep."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        name = os.fsdecode(raw)
        source = REPO / name
        if not source.is_file():  # deleted in the work tree, not yet committed
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest / name)
    return dest


def relay_command() -> list[str]:
    """The console script `make run` calls (`.venv/bin/relay`), else the module."""
    script = Path(sys.executable).with_name("relay")
    return [str(script)] if script.exists() else [sys.executable, "-m", "relay"]


def newcomer_env(copy: Path) -> dict[str, str]:
    """The environment of a fresh shell: nothing relay reads, a free PORT only."""
    needed = {need.name for need in needed_env_vars((copy / "routes.toml").read_text())}
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("RELAY_", "REDIS_URL")) and name not in needed
    }
    # 8000 and 8001 may be held by something else on a shared machine; the ports are the only
    # things set (relay dev would take another for the admin listener, but racing other runs).
    env["PORT"] = str(free_port())
    env["RELAY_ADMIN_PORT"] = str(free_port())
    return env


def curl_post(url: str, body: bytes) -> tuple[int, bytes]:
    """`curl -d BODY URL`: the same request line, headers and bytes."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.putrequest("POST", parts.path, skip_accept_encoding=True)
        connection.putheader("User-Agent", "curl/7.88.1")
        connection.putheader("Accept", "*/*")
        connection.putheader("Content-Length", str(len(body)))
        connection.putheader("Content-Type", "application/x-www-form-urlencoded")
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def processes_using(path: Path) -> list[str]:
    """Processes whose working directory or command line is under `path` (Linux /proc)."""
    found = []
    needle = str(path).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if needle in cmdline or cwd.startswith(str(path)):
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {command}")
    return found


def wait_for_delivery(dev_run: DevProcess, event_id: str) -> None:
    """The echo target prints the delivery to crm: its request line, then the body as sent."""
    body = re.escape(QUICK_START_BODY.decode())
    delivery = re.compile(rf"echo :\d+ POST /crm webhook-id={event_id}\b.*\n\s+{body}")
    deadline = time.monotonic() + 30
    while not delivery.search(dev_run.output) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert delivery.search(dev_run.output), dev_run.output


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs Linux /proc")
@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "redis", [pytest.param("redis-server", marks=pytest.mark.needs_redis_server), "embedded"]
)
def test_make_run_from_a_fresh_copy_delivers_the_quick_start_event_and_leaves_nothing(
    tmp_path: Path, redis: str
) -> None:
    copy = fresh_copy(tmp_path / "relay")
    env = newcomer_env(copy)
    if redis == "redis-server" and shutil.which("redis-server") is None:
        if os.environ.get("RELAY_REQUIRE_REDIS_SERVER") == "1":
            pytest.fail("RELAY_REQUIRE_REDIS_SERVER=1 but redis-server is not on PATH")
        pytest.skip("needs redis-server on PATH (the first run with one)")
    if redis == "embedded":  # a machine without redis-server: nothing else on PATH either
        (tmp_path / "bin").mkdir()
        env["PATH"] = str(tmp_path / "bin")
    groups = []
    dev_run = DevProcess(copy, env, "--echo-target", command=relay_command(), new_session=True)
    try:
        groups.append(dev_run.process.pid)
        banner = dev_run.wait_for("Press Ctrl-C to stop everything.", timeout=90)
        fellow = re.search(r"fellow\s+(http://127\.0\.0\.1:\d+/hooks/fellow/\S+)", banner)
        assert fellow, banner
        status, answer = curl_post(fellow.group(1), QUICK_START_BODY)
        assert status == 202, answer
        event_id = json.loads(answer)["id"]
        wait_for_delivery(dev_run, event_id)

        data = copy / ".relay-dev"
        assert not (copy / ".relay-spool").exists()  # dev's spool lives under .relay-dev
        assert stat.S_IMODE((data / "env").stat().st_mode) == 0o600
        assert "source ./.relay-dev/env" in banner
        if redis == "redis-server":
            children = re.search(r"process group (\d+)", banner)
            assert children, banner
            groups.append(int(children.group(1)))
            # Relative defaults resolved against the copy: Redis's log is where the docs say.
            assert (data / "redis" / "redis.log").is_file()
            # A second terminal: `source .relay-dev/env`, then an operator command finds it.
            second = subprocess.run(
                ["sh", "-c", f". ./.relay-dev/env && {' '.join(relay_command())} events list"],
                cwd=copy,
                env={k: v for k, v in env.items() if k != "PORT"},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert second.returncode == 0, second.stderr
            assert event_id in second.stdout

        os.killpg(dev_run.process.pid, signal.SIGINT)  # Ctrl-C reaches the foreground group
        assert dev_run.wait(60) == 0, dev_run.output
    finally:
        dev_run.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (any(map(group_alive, groups)) or processes_using(copy)):
        time.sleep(0.1)
    assert not any(map(group_alive, groups))
    assert processes_using(copy) == []
