"""`relay serve` with RELAY_ADMIN_TOKENS: the admin listener on its own port, and never an admin
endpoint on the intake port; how it refuses a taken port or a bad token entry."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from relay.admin.api import OPERATIONS
from relay.cli.serve import receiver_app
from relay.config.settings import Settings
from tests.support.admin import ADMIN_ROUTES, READ_TOKEN, ROUTE_SECRETS, TOKENS_ENV, admin_routes
from tests.support.processes import Processes, RelayProcess, relay_env, wait_until
from tests.support.redis_server import free_port

pytestmark = [pytest.mark.needs_redis_server, pytest.mark.timeout(90)]


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)  # noqa: S310 - our own loopback URL
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def routes_file(tmp_path: Path) -> Path:
    path = tmp_path / "routes.toml"
    path.write_text(ADMIN_ROUTES)
    return path


@pytest.fixture
def processes(tmp_path: Path, redis_url: str, routes_file: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path, relay_env(redis_url, routes_file, **ROUTE_SECRETS))
    yield procs
    procs.cleanup()


def test_the_admin_listener_serves_the_api_and_the_intake_port_none_of_it(
    processes: Processes,
) -> None:
    admin_port = free_port()
    processes.env.update(RELAY_ADMIN_TOKENS=TOKENS_ENV, RELAY_ADMIN_PORT=str(admin_port))
    proc, intake = processes.serve()
    admin = f"http://127.0.0.1:{admin_port}"
    assert wait_until(lambda: get(f"{admin}/api/openapi.json")[0] == 200, 10), proc.output()
    status, body = get(f"{admin}/api/v1/status", READ_TOKEN)
    assert status == 200, body
    assert orjson.loads(body)["queue"]["name"] == "relay"
    assert get(f"{admin}/api/v1/status")[0] == 401
    # The intake port: no management endpoint, with or without a token.
    paths = ["/api/openapi.json", "/api/v1", *(op.path for op in OPERATIONS)]
    for path in paths:
        for token in (None, READ_TOKEN):
            status, _ = get(intake + path.replace("{id}", "x").replace("{name}", "crm"), token)
            assert status in (404, 405), (path, status)
    assert f'"port": {admin_port}'.replace(" ", "") in proc.output().replace(" ", "")


def test_receiver_app_routes_hold_no_admin_path() -> None:
    app = receiver_app(Settings(admin_tokens=TOKENS_ENV, admin_port=free_port()), admin_routes())
    paths = [r.resource.canonical for r in app.router.routes() if r.resource is not None]
    assert paths
    assert not [p for p in paths if p.startswith("/api") or p == "/"]


def test_without_tokens_there_is_no_admin_listener(processes: Processes) -> None:
    admin_port = free_port()
    processes.env["RELAY_ADMIN_PORT"] = str(admin_port)
    proc, _ = processes.serve()
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", admin_port), timeout=1),
    ):
        pass
    assert "admin_disabled" in proc.output()


def test_a_taken_admin_port_stops_serve_with_a_clear_message(
    tmp_path: Path, redis_url: str, routes_file: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = relay_env(
            redis_url,
            routes_file,
            PORT=str(free_port()),
            RELAY_ADMIN_TOKENS=TOKENS_ENV,
            RELAY_ADMIN_PORT=str(port),
            **ROUTE_SECRETS,
        )
        proc = RelayProcess(["serve"], env, tmp_path, "serve-taken")
        try:
            assert proc.process.wait(30) == 1
            output = proc.output()
        finally:
            proc.cleanup()
    assert f"cannot listen on 127.0.0.1:{port}" in output
    assert "RELAY_ADMIN_PORT" in output


@pytest.mark.parametrize(
    ("tokens", "said"),
    [
        ("alice:write:short", "at least 32 characters"),
        (f"alice:admin:{'v' * 32}", "scope must be read or write"),
        (f"alice:write:{'v' * 32} alice:read:{'u' * 32}", "used twice"),
        ("justonevalue", "not name:scope:value"),
    ],
)
def test_a_bad_token_entry_is_a_start_up_error_without_its_value(
    tmp_path: Path, redis_url: str, routes_file: Path, tokens: str, said: str
) -> None:
    env = relay_env(redis_url, routes_file, RELAY_ADMIN_TOKENS=tokens, **ROUTE_SECRETS)
    done = subprocess.run(
        [sys.executable, "-m", "relay", "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "RELAY_ADMIN_TOKENS" in done.stderr
    assert said in done.stderr
    assert "v" * 32 not in done.stderr
    assert "u" * 32 not in done.stderr
