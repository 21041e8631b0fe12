"""`relay dev`: Redis, the receiver and a worker in one command, for a first run.

With `REDIS_URL` unset it starts a Redis of its own: a `redis-server` child (data under
`./.relay-dev/redis`, AOF so a restart keeps events) when the binary is on PATH, else the embedded
in-process server of `relay.cli.dev.embedded`. The receiver and the worker are `relay serve` and
`relay worker` child processes, so dev runs exactly the code production runs.

Every child goes into ONE process group of its own, not the terminal's: Ctrl-C reaches only this
supervisor, which stops the receiver and the worker first (one SIGTERM each, so RQ does a warm
shutdown rather than the cold one a second signal would force) and Redis last, so the worker's
final writes land. On Linux each child also gets SIGTERM if this process dies without cleaning up.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import structlog

from relay.config.loading import load_routes
from relay.config.model import RouteTable
from relay.config.settings import Settings
from relay.core.errors import ConfigError
from relay.core.logs import configure_logging

log = structlog.get_logger("relay.dev")

#: A fixed port keeps the dev Redis URL the same from run to run; taken, any free port will do.
DEFAULT_REDIS_PORT = 6380
DEFAULT_DATA_DIR = "./.relay-dev"
DEFAULT_ECHO_PORT = 8999
#: Long enough for a first start on a slow laptop (imports, AOF load), short enough to fail loudly.
START_TIMEOUT = 30.0
#: A warm RQ shutdown finishes the job in hand; deliveries are bounded by their own timeouts.
STOP_TIMEOUT = 15.0
POLL_INTERVAL = 0.1

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


# ---------------------------------------------------------------------------------------------
# Dev values for the variables routes.toml names


@dataclass(frozen=True)
class EnvNeed:
    """An environment variable routes.toml names, and the key that names it."""

    name: str
    key: str  # dotted location, e.g. "targets.crm.signing_secret_env"


def needed_env_vars(text: str) -> tuple[EnvNeed, ...]:
    """Variables a routes.toml names (`*_env` keys and `${VAR}` values), first mention first."""
    found: dict[str, EnvNeed] = {}

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                path = f"{where}.{key}" if where else str(key)
                if str(key).endswith("_env") and isinstance(item, str) and item:
                    found.setdefault(item, EnvNeed(item, path))
                else:
                    walk(item, path)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{where}[{index}]")
        elif isinstance(value, str):
            for name in _ENV_REF.findall(value):
                found.setdefault(name, EnvNeed(name, where))

    walk(tomllib.loads(text), "")
    return tuple(found.values())


def dev_value(key: str) -> str:
    """A throwaway value fit for the key that names the variable."""
    leaf = key.rsplit(".", 1)[-1].removesuffix("_env")
    if leaf == "signing_secret":  # Standard Webhooks: whsec_ and a base64 key
        return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    if leaf == "secret":  # ASP.NET WebHooks senders use 32 to 64 characters
        return secrets.token_hex(20)
    return secrets.token_urlsafe(18)  # path tokens and header values: URL-safe


def fill_dev_env(env: MutableMapping[str, str], needs: Sequence[EnvNeed]) -> dict[str, str]:
    """Set every needed variable that is unset or empty; return the ones generated."""
    generated: dict[str, str] = {}
    for need in needs:
        if not env.get(need.name, "").strip():
            generated[need.name] = env[need.name] = dev_value(need.key)
    return generated


# ---------------------------------------------------------------------------------------------
# Paths and the env file for a second terminal

ENV_FILE = "env"  # in the data dir: `source .relay-dev/env`


def resolve_dev_paths(env: MutableMapping[str, str], data_dir: Path) -> None:
    """Make every path the children get absolute; put dev's spool under the data dir.

    Children must never resolve a relative path themselves: redis-server changes into `--dir`
    before it opens `--logfile`, so a relative log path would be looked up in the wrong place.
    """
    env["RELAY_ROUTES"] = str(Path(env.get("RELAY_ROUTES", "") or Settings().routes_path).resolve())
    env["RELAY_SPOOL_DIR"] = str(
        Path(env.get("RELAY_SPOOL_DIR", "") or data_dir / "spool").resolve()
    )


def render_env_file(values: Mapping[str, str]) -> str:
    """`export NAME='value'` lines a POSIX shell can source."""
    lines = [
        "# Written by `relay dev` on every start: the values it generated and the Redis it uses.",
        "# `source` this file in another terminal to run relay check, relay status and the rest.",
    ]
    lines.extend(f"export {name}={shlex.quote(value)}" for name, value in values.items())
    return "\n".join(lines) + "\n"


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Write the env file readable by its owner only (it holds throwaway secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        os.fchmod(file.fileno(), 0o600)  # an older file may have had wider rights
        file.write(render_env_file(values))


def shown_path(path: Path) -> str:
    """A path as a person would type it from here: relative below the working directory."""
    try:
        return "./" + str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------
# The banner


def redact_url(url: str) -> str:
    """A Redis URL with its password hidden, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:****@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class BannerInfo:
    """What `relay dev` started, for the banner."""

    redis_url: str
    redis_kind: str  # one line saying what the Redis is and what survives a restart
    base_url: str  # http://127.0.0.1:PORT
    routes: RouteTable
    worker: str
    generated: Mapping[str, str] = field(default_factory=dict)
    echo_urls: tuple[str, ...] = ()
    processes: tuple[tuple[str, int], ...] = ()  # (name, pid) of each child
    group: int | None = None
    env_file: Path | None = None


def hook_url(base_url: str, routes: RouteTable, source: str) -> str:
    """The URL a provider posts to for a source, with its dev path token when it has one."""
    token = routes.sources[source].token
    return f"{base_url}/hooks/{source}" + (f"/{token.reveal()}" if token else "")


def render_banner(info: BannerInfo) -> str:
    """The text printed once everything answers."""
    lines = ["", "relay dev is running", ""]
    lines.append(f"  Redis      {redact_url(info.redis_url)}")
    lines.append(f"             {info.redis_kind}")
    lines.append(f"  Receiver   {info.base_url}")
    width = max((len(name) for name in info.routes.sources), default=0)
    for name in info.routes.sources:
        lines.append(f"    {name:<{width}}  {hook_url(info.base_url, info.routes, name)}")
    if not info.routes.sources:
        lines.append("    (routes.toml has no [sources] yet)")
    lines.append(f"  Health     {info.base_url}/healthz   {info.base_url}/readyz")
    lines.append(f"  Worker     {info.worker}")
    if info.echo_urls:
        lines.append(f"  Echo       {'  '.join(info.echo_urls)}")
        lines.append("             loopback targets that print every delivery they receive")
    lines.append(f"  Routes     {shown_path(Path(info.routes.path))}")
    if info.generated:
        lines.append("")
        lines.append("  Generated throwaway dev values for variables routes.toml needs (not set):")
        name_width = max(len(n) for n in info.generated)
        for name, value in info.generated.items():
            lines.append(f"    {name:<{name_width}} = {value}")
        lines.append("  They change on every run; set the variables yourself to keep them.")
    if info.env_file is not None:
        lines.append("")
        lines.append("  In another terminal, for relay check, relay status and the rest:")
        lines.append(f"    source {shown_path(info.env_file)}")
    if info.processes:
        procs = ", ".join(f"{name} pid {pid}" for name, pid in info.processes)
        group = f" (process group {info.group})" if info.group else ""
        lines.append("")
        lines.append(f"  Processes  {procs}{group}")
    lines.append("")
    lines.append("  Press Ctrl-C to stop everything.")
    lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Child processes


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on host:port right now, binding the way servers do.

    aiohttp (asyncio's create_server), redis-server and the echo targets all set SO_REUSEADDR,
    so a port held only by TIME-WAIT sockets of an earlier run is free for them; a plain bind
    would call it taken for a minute after every restart. A listening socket still makes it
    taken.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(preferred: int, host: str = "127.0.0.1") -> int:
    """`preferred` when free on host, else a port the kernel picks."""
    if preferred and port_is_free(preferred, host):
        return preferred
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    # PR_SET_PDEATHSIG (Linux): a supervisor killed with SIGKILL must not leave Redis running.
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@dataclass
class Supervisor:
    """Starts children into one process group and stops them in order."""

    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    group: int | None = None

    def spawn(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> int:
        """Start a child in the dev process group; return its pid."""
        process = subprocess.Popen(
            list(args),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            # The first child leads a new group; the others join it. Not the terminal's group:
            # Ctrl-C must reach only the supervisor, which orders the shutdown.
            process_group=0 if self.group is None else self.group,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        if self.group is None:
            self.group = process.pid
        self.children.append((name, process))
        log.debug("dev_child_started", child=name, pid=process.pid)
        return process.pid

    def exited(self) -> tuple[str, int] | None:
        """(name, exit code) of the first child that has exited, or None."""
        for name, process in self.children:
            code = process.poll()
            if code is not None:
                return name, code
        return None

    def stop(self, names: Sequence[str], timeout: float) -> None:
        """SIGTERM the named children, wait up to `timeout`, then SIGKILL what is left."""
        chosen = [(n, p) for n, p in self.children if n in names and p.poll() is None]
        for _, process in chosen:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, process in chosen:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("dev_child_killed", child=name, pid=process.pid, waited=timeout)
                process.kill()
                process.wait()

    def stop_all(self, order: Sequence[Sequence[str]], timeout: float) -> None:
        """Stop children stage by stage, then kill anything left in the group (grandchildren)."""
        for names in order:
            self.stop(names, timeout)
        self.stop([n for n, _ in self.children], timeout)
        if self.group is not None:
            # Grandchildren (RQ forks its scheduler) are not ours to wait for: kill the group
            # and poll until it is empty, bounded.
            deadline = time.monotonic() + timeout
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.group, signal.SIGKILL)
                while time.monotonic() < deadline:
                    os.killpg(self.group, 0)  # raises ProcessLookupError once the group is empty
                    time.sleep(POLL_INTERVAL)
                log.warning("dev_group_not_empty", group=self.group)


class _StopRequested:
    """Records SIGINT/SIGTERM so the supervisor's loop can stop everything in order."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum


def wait_until(
    ready: Callable[[], bool],
    timeout: float,
    supervisor: Supervisor,
    what: str,
    stop: _StopRequested,
) -> str | None:
    """Poll `ready` until true or a stop is requested; else say why (a child died, time ran out)."""
    deadline = time.monotonic() + timeout
    while stop.signal is None:
        dead = supervisor.exited()
        if dead is not None:
            return f"the {dead[0]} exited with code {dead[1]} while waiting for {what}"
        try:
            if ready():
                return None
        except (OSError, redis.RedisError):
            pass
        if time.monotonic() > deadline:
            return f"waited {timeout:g} s for {what} in vain"
        time.sleep(POLL_INTERVAL)
    return None


def http_ok(url: str) -> bool:
    """Whether a GET of a loopback URL answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - our own URL
            return int(response.status) == 200
    except urllib.error.URLError:
        return False


def redis_answers(url: str) -> bool:
    """Whether the Redis at `url` answers PING (short timeouts)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        return bool(client.ping())
    finally:
        client.close()


def worker_registered(url: str) -> bool:
    """Whether at least one RQ worker is registered on the Redis at `url`."""
    from rq import Worker

    client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        return int(Worker.count(connection=client)) > 0
    finally:
        client.close()


def redis_server_args(binary: str, port: int, data_dir: Path) -> list[str]:
    """The command line of the dev redis-server."""
    return [
        binary,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(data_dir),
        "--appendonly", "yes",  # a dev restart keeps queued events and retries
        "--appendfsync", "everysec",
        "--save", "",
        "--maxmemory-policy", "noeviction",  # never evict queued work
        "--pidfile", str(data_dir / "redis.pid"),
        "--logfile", str(data_dir / "redis.log"),
        "--daemonize", "no",
    ]  # fmt: skip


def stale_redis(data_dir: Path) -> int | None:
    """The pid of a redis-server an earlier dev run left on this data dir, if still alive."""
    try:
        pid = int((data_dir / "redis.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid  # no /proc: trust the pidfile
    return pid if b"redis" in cmdline else None


# ---------------------------------------------------------------------------------------------
# The command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `relay dev`."""
    parser.add_argument(
        "--embedded",
        action="store_true",
        default=os.environ.get("RELAY_DEV_EMBEDDED", "") == "1",
        help="use the in-memory embedded Redis even when redis-server is installed "
        "(also RELAY_DEV_EMBEDDED=1)",
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("RELAY_DEV_DIR", DEFAULT_DATA_DIR),
        help=f"where the dev redis-server keeps its data (default {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--redis-port",
        type=int,
        default=DEFAULT_REDIS_PORT,
        help=f"port of the dev redis-server, if free (default {DEFAULT_REDIS_PORT})",
    )
    parser.add_argument(
        "--echo-target",
        action="store_true",
        help="answer for every target of routes.toml on 127.0.0.1/localhost with a server "
        "that prints what it receives (or, when there is none, one on --echo-port)",
    )
    parser.add_argument(
        "--echo-port",
        type=int,
        default=DEFAULT_ECHO_PORT,
        help=f"port of the echo target when no target is on loopback (default {DEFAULT_ECHO_PORT})",
    )


def prepare(env: MutableMapping[str, str]) -> tuple[Settings, RouteTable, dict[str, str]]:
    """Fill dev values, then read settings and routes; raise ConfigError on a mistake."""
    routes_path = env.get("RELAY_ROUTES", "") or Settings().routes_path
    try:
        text = Path(routes_path).read_text(encoding="utf-8")
        generated = fill_dev_env(env, needed_env_vars(text))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        generated = {}  # load_routes below reports the problem with file and position
    settings = Settings.from_env(env)
    return settings, load_routes(settings.routes_path, env), generated


def run(args: argparse.Namespace) -> int:
    """Run `relay dev` until Ctrl-C; 0 on a requested stop, 1 when something failed."""
    env = dict(os.environ)
    own_redis = not env.get("REDIS_URL", "")
    data_dir = Path(args.data_dir).resolve()
    resolve_dev_paths(env, data_dir)
    try:
        settings, routes, generated = prepare(env)
    except ConfigError as exc:
        print(f"relay dev: the configuration cannot be used:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.embedded and not own_redis:
        print("relay dev: --embedded and REDIS_URL exclude each other; unset one", file=sys.stderr)
        return 2
    env_file = data_dir / ENV_FILE
    if args.embedded or (own_redis and shutil.which("redis-server") is None):
        from relay.cli.dev.embedded import run_embedded

        # The embedded Redis lives inside this process: no REDIS_URL can reach it.
        write_env_file(env_file, {**generated, "RELAY_ROUTES": env["RELAY_ROUTES"]})
        return run_embedded(
            settings, routes, generated, echo_ports=echo_ports(args, routes), env_file=env_file
        )
    return _run_children(args, env, settings, routes, generated, own_redis, data_dir)


def local_url(settings: Settings) -> str:
    """The receiver's base URL as seen from this machine."""
    wildcard = settings.host in ("", "0.0.0.0", "::")
    host = "127.0.0.1" if wildcard else settings.host
    return f"http://{'[' + host + ']' if ':' in host else host}:{settings.port}"


def loopback_ports(routes: RouteTable) -> tuple[int, ...]:
    """Ports of the targets on this machine's loopback (127.0.0.1 or localhost), sorted."""
    ports = set()
    for target in routes.targets.values():
        parts = urlsplit(target.url)
        if parts.hostname in ("127.0.0.1", "localhost"):
            ports.add(parts.port or (443 if parts.scheme == "https" else 80))
    return tuple(sorted(ports))


def echo_ports(args: argparse.Namespace, routes: RouteTable) -> tuple[int, ...]:
    """Where `--echo-target` listens: free loopback target ports, else `--echo-port`."""
    if not args.echo_target:
        return ()
    # Echo servers speak plain HTTP and cannot take privileged ports.
    ports = tuple(p for p in loopback_ports(routes) if p >= 1024 and port_is_free(p))
    return ports or (pick_port(args.echo_port),)


def _run_children(
    args: argparse.Namespace,
    env: dict[str, str],
    settings: Settings,
    routes: RouteTable,
    generated: dict[str, str],
    own_redis: bool,
    data_dir: Path,
) -> int:
    env_file = data_dir / ENV_FILE
    supervisor = Supervisor()
    stop = _StopRequested()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    echoes: list[Any] = []
    try:
        if own_redis:
            binary = shutil.which("redis-server")
            assert binary is not None  # run() chose embedded mode otherwise
            redis_dir = data_dir / "redis"
            redis_dir.mkdir(parents=True, exist_ok=True)
            stale = stale_redis(redis_dir)
            if stale is not None:
                print(
                    f"relay dev: a redis-server (pid {stale}) from an earlier run still uses "
                    f"{redis_dir}; stop it (kill {stale}) and run relay dev again",
                    file=sys.stderr,
                )
                return 1
            port = pick_port(args.redis_port)
            redis_url = f"redis://127.0.0.1:{port}/0"
            supervisor.spawn("redis-server", redis_server_args(binary, port, redis_dir), env)
            kind = (
                f"redis-server started by relay dev, data and redis.log in "
                f"{shown_path(redis_dir)} (kept across runs)"
            )
            failure = wait_until(
                lambda: redis_answers(redis_url), START_TIMEOUT, supervisor, "Redis", stop
            )
            if failure:
                return _fail(supervisor, f"{failure}; see {redis_dir / 'redis.log'}")
            if stop.signal is not None:
                return 0
        else:
            redis_url = settings.redis_url
            kind = "from REDIS_URL (relay dev started no Redis of its own)"
            try:
                redis_answers(redis_url)
            except (OSError, redis.RedisError) as exc:
                print(
                    f"relay dev: REDIS_URL={redact_url(redis_url)} does not answer: {exc}",
                    file=sys.stderr,
                )
                return 1
        if not port_is_free(settings.port, settings.host or "0.0.0.0"):
            return _fail(supervisor, f"port {settings.port} is taken: set PORT to a free one")
        env.update(REDIS_URL=redis_url, PORT=str(settings.port))
        write_env_file(
            env_file, {**generated, "RELAY_ROUTES": env["RELAY_ROUTES"], "REDIS_URL": redis_url}
        )
        relay = [sys.executable, "-m", "relay"]
        supervisor.spawn("receiver", [*relay, "serve"], env)
        supervisor.spawn("worker", [*relay, "worker"], env)
        base_url = local_url(settings)
        failure = wait_until(
            lambda: http_ok(f"{base_url}/readyz"),
            START_TIMEOUT,
            supervisor,
            "the receiver's /readyz",
            stop,
        ) or wait_until(
            lambda: worker_registered(redis_url), START_TIMEOUT, supervisor, "the worker", stop
        )
        if failure:
            return _fail(supervisor, failure)
        if stop.signal is not None:
            return 0  # Ctrl-C while starting: the finally clause stops what started
        ports = echo_ports(args, routes)
        if ports:
            from relay.cli.dev.embedded import start_echo_targets

            try:
                echoes = start_echo_targets(ports)
            except (OSError, RuntimeError) as exc:
                return _fail(supervisor, f"the echo target cannot start: {exc}")
        info = BannerInfo(
            redis_url=redis_url,
            redis_kind=kind,
            base_url=base_url,
            routes=routes,
            worker="relay worker (RQ, scheduler on) as a child process",
            generated=generated,
            echo_urls=tuple(e.url for e in echoes),
            processes=tuple((name, p.pid) for name, p in supervisor.children),
            group=supervisor.group,
            env_file=env_file,
        )
        print(render_banner(info), flush=True)
        while stop.signal is None:
            dead = supervisor.exited()
            if dead is not None:
                return _fail(supervisor, f"the {dead[0]} exited unexpectedly with code {dead[1]}")
            time.sleep(POLL_INTERVAL)
        log.info("dev_stopping", signal=signal.Signals(stop.signal).name)
        supervisor.stop_all([("receiver", "worker"), ("redis-server",)], STOP_TIMEOUT)
        print("relay dev: stopped receiver, worker" + (" and Redis" if own_redis else ""))
        return 0
    finally:
        supervisor.stop_all([("receiver", "worker"), ("redis-server",)], STOP_TIMEOUT)
        for echo in echoes:
            echo.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _fail(supervisor: Supervisor, message: str) -> int:
    print(f"relay dev: {message}; stopping the others", file=sys.stderr, flush=True)
    supervisor.stop_all([("receiver", "worker"), ("redis-server",)], STOP_TIMEOUT)
    return 1
