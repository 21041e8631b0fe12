"""relay.cli.common and the command registry of relay.cli.main."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
import redis

from relay.cli import common
from relay.cli.main import COMMANDS, build_parser, chosen_command
from relay.config.settings import Settings
from relay.core.errors import ConfigError, Problem
from tests.support.redis_server import free_port

# ---------------------------------------------------------------------------------------------
# redact_url: one function, one mask


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://u:pw@h:6379/0", "redis://u:****@h:6379/0"),
        ("rediss://:pw@h/1", "rediss://:****@h/1"),
        ("redis://:pw@[::1]:6380/0", "redis://:****@[::1]:6380/0"),
        (
            "https://relay.example.com/hooks/fellow/T0K3N",
            "https://relay.example.com/hooks/fellow/****",
        ),
        (
            "https://x.example/hooks/fellow/T0K3N/more?a=1",
            "https://x.example/hooks/fellow/****/more?a=1",
        ),
        ("https://x.example/hooks/fellow", "https://x.example/hooks/fellow"),  # no token
        ("https://u:pw@x.example/hooks/s/T", "https://u:****@x.example/hooks/s/****"),
        ("embedded (fakeredis, in this process)", "embedded (fakeredis, in this process)"),
        ("redis://h:notaport/0", common.MASK),  # cannot be parsed: nothing of it is shown
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert common.redact_url(url) == shown


@pytest.mark.parametrize("secret", ["pw", "T0K3N"])
def test_redact_url_never_shows_the_secret(secret: str) -> None:
    for url in (f"redis://u:{secret}@h:1/0", f"https://h.example/hooks/s/{secret}"):
        assert secret not in common.redact_url(url)


# ---------------------------------------------------------------------------------------------
# config_error and positive_int


def test_config_error_prints_every_problem_and_returns_the_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    exc = ConfigError(
        [Problem("routes.toml", "targets.crm", "url", "missing"), Problem("env", "", "", "bad")]
    )
    assert common.config_error("relay serve", exc) == common.EXIT_CONFIG == 2
    assert capsys.readouterr().err == (
        "relay serve: routes.toml: [targets.crm.url] missing\nrelay serve: env: bad\n"
    )
    assert common.config_error("relay worker --check", exc, code=1) == 1


@pytest.mark.parametrize(("text", "value"), [("1", 1), ("16", 16)])
def test_positive_int_takes_whole_numbers_from_one(text: str, value: int) -> None:
    assert common.positive_int(text) == value


@pytest.mark.parametrize(("text", "message"), [("0", "positive"), ("x", "whole number")])
def test_positive_int_names_the_bad_value(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        common.positive_int(text)


def test_since_option_is_a_usage_error_naming_the_option() -> None:
    assert common.since_option(None) is None
    assert common.since_option("2026-01-01T00:00:00Z") == 1767225600.0
    with pytest.raises(common.UsageError, match="--since: "):
        common.since_option("yesterday")


# ---------------------------------------------------------------------------------------------
# with_redis: the one wrapper of the operator commands


def ping(args: argparse.Namespace, settings: Settings, conn: redis.Redis) -> int:
    return 0 if conn.ping() else 1


def refuse(args: argparse.Namespace, settings: Settings, conn: redis.Redis) -> int:
    raise common.UsageError("say what")


def test_with_redis_runs_the_command_on_the_url_given(redis_url: str) -> None:
    assert common.with_redis("relay x", ping)(argparse.Namespace(url=redis_url)) == 0


def test_with_redis_reports_an_unreachable_redis_in_one_redacted_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    assert common.with_redis("relay x", ping)(argparse.Namespace(url=url)) == 1
    err = capsys.readouterr().err
    assert err.startswith("relay x: cannot reach Redis at redis://:****@127.0.0.1:")
    assert err.count("\n") == 1
    assert "hunter2" not in err


def test_with_redis_usage_error_exits_2(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert common.with_redis("relay x", refuse)(argparse.Namespace(url=redis_url)) == 2
    assert capsys.readouterr().err == "relay x: say what\n"


def test_with_redis_bad_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RELAY_RETENTION", "7 days")
    run = common.with_redis("relay x", ping, bad_environment=1)
    assert run(argparse.Namespace(url=None)) == 1
    assert "relay x: " in capsys.readouterr().err
    assert common.with_redis("relay x", ping)(argparse.Namespace(url=None)) == 2


# ---------------------------------------------------------------------------------------------
# The command registry


def test_help_lists_the_commands_in_registry_order(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    positions = [out.index(f"\n    {c.name}") for c in COMMANDS]
    assert positions == sorted(positions)
    for command in COMMANDS:
        assert command.help in out


def test_every_command_loads_and_runs_its_own_function() -> None:
    parser = build_parser()
    for command in COMMANDS:
        add_arguments, run = command.load()
        assert callable(add_arguments)
        assert callable(run)
    args = parser.parse_args(["status", "--url", "redis://x"])
    assert args._run is COMMANDS[4].load()[1]


def test_chosen_command_is_the_first_word_that_is_no_option() -> None:
    assert chosen_command(["--version"]) is None
    assert chosen_command(["check", "--json", "x.toml"]) == "check"
    assert chosen_command([]) is None


def test_relay_check_does_not_import_the_server_or_the_worker() -> None:
    code = (
        "import sys\n"
        "from relay.cli.main import build_parser, chosen_command\n"
        "build_parser(only=chosen_command(['check', 'routes.toml']))\n"
        "print(sorted(m for m in ('aiohttp', 'rq', 'fakeredis', 'worker') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
