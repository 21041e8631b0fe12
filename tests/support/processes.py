"""Start and stop real `relay serve` and `relay worker` processes for end-to-end tests.

Each process runs in its own session (process group) so a test can SIGKILL one worker, and the
teardown can take down what it left behind (RQ's forked scheduler outlives a killed worker).

Every process started here registers its log file and the secrets of its environment (see
`secrets_of_env`); at the end of the session tests/conftest.py greps every registered log for
every registered secret (`find_leaks`) and fails the run if one appears.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import orjson
import redis
from rq import Worker

from relay.config.loading import load_routes
from relay.core.secrets import Secret
from tests.support.redis_server import free_port

# ---------------------------------------------------------------------------------------------
# The secret grep: registered logs and the secrets they must never contain
# ---------------------------------------------------------------------------------------------

#: Environment variables whose values are secrets, by the end of their name.
SECRET_SUFFIXES = ("_TOKEN", "_SECRET", "_WHSEC", "_KEY")
SECRET_NAMES = frozenset({"RELAY_STATUS_TOKEN", "TOKEN", "SECRET", "WHSEC", "KEY"})
#: Shorter values cannot be told apart from ordinary text (relay refuses tokens this short).
MIN_SECRET_LENGTH = 8

#: log file -> {secret name: value} of the process that writes it (the whole session).
_REGISTERED: dict[Path, dict[str, str]] = {}


@dataclass(frozen=True)
class Leak:
    """A registered secret found in a registered log: names only, never the value."""

    log: Path
    secret_name: str
    line: int  # 1-based number of the first line where it appears

    def describe(self) -> str:
        """One line for the session report (the secret's value is never printed)."""
        return f"{self.log}:{self.line}: secret {self.secret_name} appears in this log"


def _is_secret_name(name: str) -> bool:
    return name in SECRET_NAMES or name.endswith(SECRET_SUFFIXES)


def _route_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """Secrets routes.toml (RELAY_ROUTES) takes from the environment: tokens, keys, headers."""
    path = env.get("RELAY_ROUTES")
    if not path:
        return {}
    try:
        table = load_routes(path, env, require_env=False)
    except Exception:  # a test's deliberately broken routes.toml: the env rules still apply
        return {}
    found: list[tuple[str, Secret]] = []
    for source in table.sources.values():
        found += [(f"sources.{source.name}.token", source.token)] if source.token else []
        found += [(f"sources.{source.name}.secret", source.secret)] if source.secret else []
    for target in table.targets.values():
        found += [(f"targets.{target.name}.signing_secret", s) for s in target.signing_secrets]
        found += [(f"targets.{target.name}.headers.{h}", s) for h, s in target.headers if s.name]
    return {secret.name or where: secret.reveal() for where, secret in found}


def secrets_of_env(env: Mapping[str, str]) -> dict[str, str]:
    """The secret values a relay process with this environment holds, by name.

    Variables named *_TOKEN, *_SECRET, *_WHSEC, *_KEY or RELAY_STATUS_TOKEN, any `whsec_`
    value (and the key after its prefix), every secret its routes.toml reads from the env, and
    the value of each RELAY_ADMIN_TOKENS entry.
    """
    found = {name: value for name, value in env.items() if _is_secret_name(name)}
    found |= {name: value for name, value in env.items() if value.startswith("whsec_")}
    found |= _route_secrets(env)
    # RELAY_ADMIN_TOKENS="name:scope:value ...": each value is a secret; the whole is not one.
    for entry in env.get("RELAY_ADMIN_TOKENS", "").split():
        name, _, rest = entry.partition(":")
        found[f"RELAY_ADMIN_TOKENS ({name})"] = rest.partition(":")[2]
    for name, value in list(found.items()):
        if value.startswith("whsec_"):
            found[f"{name} (key after whsec_)"] = value.removeprefix("whsec_")
    return {name: value for name, value in found.items() if len(value) >= MIN_SECRET_LENGTH}


def register_log(path: Path, secrets: Mapping[str, str]) -> None:
    """Have the session-end grep check `path`, and every registered log for `secrets`."""
    _REGISTERED.setdefault(path, {}).update(secrets)


def registered_logs() -> dict[Path, dict[str, str]]:
    """Every log registered in this session, with the secrets its process held."""
    return {path: dict(secrets) for path, secrets in _REGISTERED.items()}


def _needles(value: str) -> tuple[bytes, ...]:
    # As written raw (console, plain text) and as a JSON string escapes it (JSON lines).
    raw = value.encode()
    escaped = orjson.dumps(value)[1:-1]
    return (raw,) if escaped == raw else (raw, escaped)


def find_leaks(registered: Mapping[Path, Mapping[str, str]] | None = None) -> list[Leak]:
    """Grep every registered log for every registered secret (missing logs are skipped)."""
    registered = registered_logs() if registered is None else registered
    names: dict[str, str] = {}  # value -> first name it was registered under
    for secrets in registered.values():
        for name, value in secrets.items():
            names.setdefault(value, name)
    leaks: list[Leak] = []
    for path in registered:
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            continue
        for value, name in names.items():
            positions = [text.find(needle) for needle in _needles(value)]
            at = min((p for p in positions if p >= 0), default=-1)
            if at >= 0:
                leaks.append(Leak(path, name, text.count(b"\n", 0, at) + 1))
    return leaks


class RelayProcess:
    """One `relay ...` child process with its output in a file."""

    def __init__(
        self,
        args: list[str],
        env: Mapping[str, str],
        cwd: Path,
        name: str,
        *,
        prefix: Sequence[str] = (),
    ) -> None:
        """Start `relay ARGS`; `prefix` runs it through another command (`ip netns exec NS`)."""
        self.log_path = cwd / f"{name}-{time.monotonic_ns()}.log"
        register_log(self.log_path, secrets_of_env(env))
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "relay", *args],
            env=dict(env),
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        """Everything the process wrote so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM and wait for the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL this process only (its children live on, as in a real crash)."""
        if self.alive():
            self.process.kill()
        self.process.wait(10)

    def cleanup(self) -> None:
        """Kill the whole process group, whatever is left of it."""
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        self._log.close()


def relay_env(redis_url: str, routes_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a relay process for tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(
        {
            "REDIS_URL": redis_url,
            "RELAY_ROUTES": str(routes_path),
            "HOST": "127.0.0.1",
            "RELAY_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def wait_until(condition: object, timeout: float, interval: float = 0.05) -> bool:
    """Poll a callable until it returns true or `timeout` seconds pass."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


class Processes:
    """Factory of relay processes for one test; everything is cleaned up at the end."""

    def __init__(self, cwd: Path, env: Mapping[str, str]) -> None:
        self.cwd = cwd
        self.env = dict(env)
        self.started: list[RelayProcess] = []

    def serve(self) -> tuple[RelayProcess, str]:
        """Start `relay serve` on a free port; return it and its base URL once /readyz is 200."""
        port = free_port()
        proc = RelayProcess(["serve"], {**self.env, "PORT": str(port)}, self.cwd, "serve")
        self.started.append(proc)
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if not proc.alive():
                raise RuntimeError(f"relay serve exited:\n{proc.output()}")
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=1) as response:  # noqa: S310
                    return bool(response.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        if not wait_until(ready, 20):
            raise RuntimeError(f"relay serve not ready:\n{proc.output()}")
        return proc, base

    def worker(self, *args: str, wait: bool = True) -> RelayProcess:
        """Start `relay worker`; by default wait until its RQ worker(s) registered in Redis."""
        if not wait:
            proc = RelayProcess(["worker", *args], self.env, self.cwd, "worker")
            self.started.append(proc)
            return proc
        conn = redis.Redis.from_url(self.env["REDIS_URL"])
        before = Worker.count(connection=conn)
        proc = RelayProcess(["worker", *args], self.env, self.cwd, "worker")
        self.started.append(proc)
        processes = int(args[args.index("--processes") + 1]) if "--processes" in args else 1

        def registered() -> bool:
            if not proc.alive():
                return True  # burst mode may already be done; callers check the exit code
            return bool(Worker.count(connection=conn) >= before + processes)

        try:
            if not wait_until(registered, 20):
                raise RuntimeError(f"relay worker did not start:\n{proc.output()}")
        finally:
            conn.close()
        return proc

    def cleanup(self) -> None:
        for proc in self.started:
            proc.cleanup()


@contextmanager
def relay_processes(cwd: Path, env: Mapping[str, str]) -> Iterator[Processes]:
    """Processes for one test, all killed at the end."""
    procs = Processes(cwd, env)
    try:
        yield procs
    finally:
        procs.cleanup()


def post(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
    """POST with the standard library (tests stay independent of the code under test)."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def group_alive(group: int) -> bool:
    """Whether any process of process group `group` is still alive."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True
