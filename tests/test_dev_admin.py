"""`relay dev` and the admin listener: a throwaway write token, a free port, the banner's lines,
and the API answering with that token, in both of dev's modes."""

from __future__ import annotations

import os
import re
import shutil
import socket
import urllib.request
from pathlib import Path

import orjson
import pytest

from relay.cli.dev import admin, banner
from relay.config.loading import parse_routes
from relay.config.settings import Settings
from relay.core import constants
from tests.support.dev_process import DevProcess
from tests.support.redis_server import free_port

ROUTES = """
[sources.demo]
kind = "json"

[targets.sink]
url = "http://127.0.0.1:9/sink"

[[routes]]
source = "demo"
events = ["*"]
targets = ["sink"]
"""


def test_fill_admin_env_makes_a_write_token_and_keeps_what_is_set() -> None:
    env: dict[str, str] = {"RELAY_ADMIN_PORT": "9555"}
    generated = admin.fill_admin_env(env)
    assert set(generated) == {"RELAY_ADMIN_TOKENS"}
    name, scope, value = env["RELAY_ADMIN_TOKENS"].split(":", 2)
    assert (name, scope, len(value) >= 32) == ("dev", "write", True)
    assert admin.generated_token(generated) == value
    mine = {"RELAY_ADMIN_TOKENS": "me:read:" + "m" * 32, "RELAY_ADMIN_PORT": "9555"}
    assert admin.fill_admin_env(dict(mine)) == {}
    assert admin.generated_token({}) == ""


def test_fill_admin_env_takes_another_port_when_8001_is_taken() -> None:
    with socket.socket() as held:
        try:
            held.bind(("127.0.0.1", constants.DEFAULT_ADMIN_PORT))
            held.listen()
        except OSError:
            pass  # something else holds it already: the same situation
        env: dict[str, str] = {}
        admin.fill_admin_env(env)
    assert int(env["RELAY_ADMIN_PORT"]) != constants.DEFAULT_ADMIN_PORT


def test_the_banner_shows_the_admin_listener_and_its_token() -> None:
    settings = Settings(admin_tokens="dev:write:" + "t" * 40, admin_port=8123)
    info = banner.BannerInfo(
        redis_url="redis://127.0.0.1:6380/0",
        redis_kind="test",
        base_url="http://127.0.0.1:8000",
        routes=parse_routes(ROUTES, "routes.toml", {}),
        worker="test",
        admin_url=banner.admin_url(settings),
        admin_token="t" * 40,
    )
    text = banner.render_banner(info)
    assert "Admin      http://127.0.0.1:8123   console at /, API at /api/v1" in text
    assert "token (write): " + "t" * 40 in text
    assert banner.admin_url(Settings()) == ""


def get_json(url: str, token: str) -> object:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        return orjson.loads(response.read())


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "mode",
    [
        "--embedded",
        pytest.param(
            "redis-server",
            marks=pytest.mark.skipif(shutil.which("redis-server") is None, reason="no binary"),
        ),
    ],
)
def test_dev_serves_the_api_with_the_token_in_its_banner(tmp_path: Path, mode: str) -> None:
    (tmp_path / "routes.toml").write_text(ROUTES)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "RELAY_"))}
    env.update(
        PORT=str(free_port()),
        RELAY_ADMIN_PORT=str(free_port()),
        RELAY_ROUTES=str(tmp_path / "routes.toml"),
        RELAY_LOG_FORMAT="json",
        RELAY_LOG_LEVEL="warning",
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )
    args = ["--embedded"] if mode == "--embedded" else ["--redis-port", str(free_port())]
    dev_run = DevProcess(tmp_path, env, *args, "--data-dir", str(tmp_path / "data"))
    try:
        output = dev_run.wait_for("Press Ctrl-C")
        url = re.search(r"Admin\s+(http://127\.0\.0\.1:\d+)", output)
        token = re.search(r"token \(write\): (\S+)", output)
        assert url, output
        assert token, output
        assert url.group(1).endswith(env["RELAY_ADMIN_PORT"])
        routes = get_json(f"{url.group(1)}/api/v1/routes", token.group(1))
        assert list(routes["targets"]) == ["sink"]  # type: ignore[index]
        env_file = (tmp_path / "data" / "env").read_text()
        assert f"dev:write:{token.group(1)}" in env_file
        assert dev_run.interrupt() == 0
    finally:
        dev_run.kill()
