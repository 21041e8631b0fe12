"""Shared fixtures: a real redis-server for the session, a clean database per test.

And the session's secret grep: every relay process started through tests/support/processes.py
registered its log and its secrets; if any registered log contains any registered secret, the
session fails (naming the log and the secret, never printing the value). Under pytest-xdist
(`-n N`) each worker hands what it registered to the controller, which greps them all.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, settings

from tests.support.processes import Leak, find_leaks, register_log, registered_logs
from tests.support.redis_server import RedisServer, redis_server_binary

#: Fixtures more than one module uses (targets, use_routes, restored_logging) live there.
pytest_plugins = ["tests.support.fixtures", "tests.support.sentinel"]

REQUIRE_REAL_REDIS = os.environ.get("RELAY_REQUIRE_REDIS_SERVER") == "1"

# Hypothesis' 200 ms deadline per example and its too_slow health check time the machine, not the
# code: with the suite's pytest-xdist workers sharing two cores (and a benchmark perhaps beside
# them), an example now and then takes 0.5 s and the test failed as "flaky". Every property is
# still checked on every example; a hang is still caught by pytest-timeout.
settings.register_profile("relay", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("relay")

_LEAKS = pytest.StashKey[list[Leak]]()


def pytest_configure(config: pytest.Config) -> None:
    if redis_server_binary() is None:
        if REQUIRE_REAL_REDIS:
            raise pytest.UsageError(
                "RELAY_REQUIRE_REDIS_SERVER=1 but redis-server is not on PATH: install it "
                "(apt-get install redis-server)"
            )
        sys.stderr.write(
            "relay tests: redis-server not found; tests that need a real server are skipped\n"
        )


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the whole session (tests needing their own use make_redis)."""
    if redis_server_binary() is None:
        pytest.skip("needs redis-server (set RELAY_REQUIRE_REDIS_SERVER=1 to make this fail)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_redis(tmp_path: Path) -> Iterator[type[RedisServer]]:
    """Factory for a private redis-server a test may stop, kill and restart."""
    if redis_server_binary() is None:
        pytest.skip("needs redis-server (set RELAY_REQUIRE_REDIS_SERVER=1 to make this fail)")
    started: list[RedisServer] = []

    class _Private(RedisServer):
        def __init__(self, **kwargs: object) -> None:
            super().__init__(tmp_path / f"redis-{len(started)}", **kwargs)  # type: ignore[arg-type]
            started.append(self)

    yield _Private
    for server in started:
        server.kill()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's redis-server, with the database flushed before each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A redis-py client on the flushed test database."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


#: The key of a pytest-xdist worker's output that carries its registered logs to the controller.
_WORKER_LOGS = "relay_registered_logs"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Grep every registered relay log for every registered secret; a hit fails the session.

    A pytest-xdist worker does not grep: a worker's exit status never fails the run, so it sends
    its registered logs to the controller (pytest_testnodedown), which greps them all at its end.
    """
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[_WORKER_LOGS] = {str(path): s for path, s in registered_logs().items()}
        return
    leaks = find_leaks()
    session.config.stash[_LEAKS] = leaks
    if leaks and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """pytest-xdist's controller: register the logs (and secrets) a finished worker registered."""
    workeroutput: dict[str, object] = getattr(node, "workeroutput", {})
    logs = workeroutput.get(_WORKER_LOGS, {})
    assert isinstance(logs, dict)
    for path, secrets in logs.items():
        register_log(Path(path), secrets)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    """Report the secret grep: every leak by log and secret name, or one line when clean."""
    logs = registered_logs()
    if not logs:
        return
    leaks = config.stash.get(_LEAKS, [])
    secrets = {value for found in logs.values() for value in found.values()}
    missing = sum(1 for path in logs if not path.exists())
    if leaks:
        terminalreporter.section("secrets found in relay logs", sep="=", red=True, bold=True)
        for leak in leaks:
            terminalreporter.write_line(leak.describe())
        terminalreporter.write_line(f"{len(leaks)} leak(s): the session fails")
    else:
        terminalreporter.write_line(
            f"secret grep: {len(logs) - missing} relay log(s) checked for {len(secrets)} "
            f"secret(s): none found" + (f" ({missing} log(s) already deleted)" if missing else "")
        )
