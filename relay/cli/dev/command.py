"""`relay dev`: Redis, the receiver and a worker in one command, for a first run.

With `REDIS_URL` unset it starts a Redis of its own: a `redis-server` child (data under
`./.relay-dev/redis`, AOF so a restart keeps events) when the binary is on PATH, else the embedded
in-process server of `relay.cli.dev.embedded`. The receiver and the worker are `relay serve` and
`relay worker` child processes (`relay.cli.dev.children`), so dev runs exactly the code
production runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
import tomllib
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path

import redis
import structlog

from relay.admin import parse_tokens
from relay.cli.common import EXIT_FAILED, config_error, redact_url
from relay.cli.dev.admin import fill_admin_env, generated_token
from relay.cli.dev.banner import BannerInfo, admin_url, local_url, render_banner, shown_path
from relay.cli.dev.children import (
    POLL_INTERVAL,
    STOP_ORDER,
    ChildGroup,
    StopRequested,
    http_ok,
    pick_port,
    port_is_free,
    wait_until,
)
from relay.cli.dev.echo import EchoTarget, echo_ports, start_echo_targets
from relay.cli.dev.own_redis import (
    redis_answers,
    redis_server_args,
    stale_redis,
    worker_registered,
)
from relay.cli.dev.values import (
    ENV_FILE,
    fill_dev_env,
    needed_env_vars,
    resolve_dev_paths,
    write_env_file,
)
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


def prepare(
    env: MutableMapping[str, str],
) -> tuple[Settings, RouteTable, dict[str, str], dict[str, str]]:
    """Fill dev values, then read settings and routes; raise ConfigError on a mistake.

    Returns the settings, the routes, the values generated for routes.toml, and those generated
    for the admin listener (RELAY_ADMIN_TOKENS, RELAY_ADMIN_PORT).
    """
    routes_path = env.get("RELAY_ROUTES", "") or Settings().routes_path
    try:
        text = Path(routes_path).read_text(encoding="utf-8")
        generated = fill_dev_env(env, needed_env_vars(text))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        generated = {}  # load_routes below reports the problem with file and position
    admin = fill_admin_env(env)
    settings = Settings.from_env(env)
    return settings, load_routes(settings.routes_path, env), generated, admin


@dataclass(frozen=True)
class Dev:
    """What one `relay dev` run works with."""

    args: argparse.Namespace
    env: dict[str, str]
    settings: Settings
    routes: RouteTable
    generated: dict[str, str]
    data_dir: Path
    admin: dict[str, str]  # admin listener values relay dev generated

    @property
    def env_file(self) -> Path:
        """The file a second terminal sources."""
        return self.data_dir / ENV_FILE


def run(args: argparse.Namespace) -> int:
    """Run `relay dev` until Ctrl-C; 0 on a requested stop, 1 when something failed."""
    env = dict(os.environ)
    own_redis = not env.get("REDIS_URL", "")
    data_dir = Path(args.data_dir).resolve()
    resolve_dev_paths(env, data_dir)
    try:
        settings, routes, generated, admin = prepare(env)
        parse_tokens(settings.admin_tokens)  # an operator's bad entry: named at start-up
    except ConfigError as exc:
        return config_error("relay dev", exc)
    configure_logging(settings.log_level, settings.log_format)
    if args.embedded and not own_redis:
        print("relay dev: --embedded and REDIS_URL exclude each other; unset one", file=sys.stderr)
        return 2
    dev = Dev(args, env, settings, routes, generated, data_dir, admin)
    if args.embedded or (own_redis and shutil.which("redis-server") is None):
        from relay.cli.dev.embedded import run_embedded  # loads fakeredis, aiohttp and RQ

        # The embedded Redis lives inside this process: no REDIS_URL can reach it.
        write_env_file(dev.env_file, {**generated, **admin, "RELAY_ROUTES": env["RELAY_ROUTES"]})
        return run_embedded(
            settings,
            routes,
            generated,
            echo_ports=echo_ports(args, routes),
            env_file=dev.env_file,
            admin_token=generated_token(admin),
        )
    return _run_children(dev, own_redis)


class Failed(Exception):
    """A step of `relay dev` failed; `others` when children were started and must be stopped."""

    def __init__(self, message: str, *, others: bool = True) -> None:
        super().__init__(message)
        self.others = others


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) while starting: stop what started and exit 0."""


def _run_children(dev: Dev, own_redis: bool) -> int:
    children = ChildGroup()
    stop = StopRequested()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    echoes: list[EchoTarget] = []
    try:
        redis_url, kind = _start_redis(dev, children, stop) if own_redis else _their_redis(dev)
        base_url = _start_relay(dev, redis_url, children, stop)
        echoes = _start_echoes(dev)
        info = BannerInfo(
            redis_url=redis_url,
            redis_kind=kind,
            base_url=base_url,
            routes=dev.routes,
            worker="relay worker (RQ, scheduler on) as a child process",
            generated=dev.generated,
            echo_urls=tuple(e.url for e in echoes),
            processes=tuple((name, p.pid) for name, p in children.children),
            group=children.group,
            env_file=dev.env_file,
            admin_url=admin_url(dev.settings),
            admin_token=generated_token(dev.admin),
        )
        print(render_banner(info), flush=True)
        _watch(children, stop)
    except Interrupted:
        return 0  # the finally clause stops what started
    except Failed as exc:
        tail = "; stopping the others" if exc.others else ""
        print(f"relay dev: {exc}{tail}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    finally:
        children.stop_all(STOP_ORDER, STOP_TIMEOUT)
        for echo in echoes:
            echo.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("relay dev: stopped receiver, worker" + (" and Redis" if own_redis else ""))
    return 0


def _wait(ready: Callable[[], bool], what: str, children: ChildGroup, stop: StopRequested) -> None:
    """Wait for `what`; raise Failed when it does not come, Interrupted on Ctrl-C."""
    failure = wait_until(ready, START_TIMEOUT, children, what, stop)
    if failure:
        raise Failed(failure)
    if stop.signal is not None:
        raise Interrupted


def _start_redis(dev: Dev, children: ChildGroup, stop: StopRequested) -> tuple[str, str]:
    """Start the dev redis-server and wait for it; (its URL, what the banner says of it)."""
    binary = shutil.which("redis-server")
    assert binary is not None  # run() chose embedded mode otherwise
    redis_dir = dev.data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    stale = stale_redis(redis_dir)
    if stale is not None:
        raise Failed(
            f"a redis-server (pid {stale}) from an earlier run still uses {redis_dir}; "
            f"stop it (kill {stale}) and run relay dev again",
            others=False,
        )
    port = pick_port(dev.args.redis_port)
    url = f"redis://127.0.0.1:{port}/0"
    children.spawn("redis-server", redis_server_args(binary, port, redis_dir), dev.env)
    try:
        _wait(lambda: redis_answers(url), "Redis", children, stop)
    except Failed as exc:
        raise Failed(f"{exc}; see {redis_dir / 'redis.log'}") from None
    kind = (
        f"redis-server started by relay dev, data and redis.log in "
        f"{shown_path(redis_dir)} (kept across runs)"
    )
    return url, kind


def _their_redis(dev: Dev) -> tuple[str, str]:
    """The Redis of REDIS_URL, once it answers."""
    url = dev.settings.redis_url
    try:
        redis_answers(url)
    except (OSError, redis.RedisError) as exc:
        raise Failed(f"REDIS_URL={redact_url(url)} does not answer: {exc}", others=False) from None
    return url, "from REDIS_URL (relay dev started no Redis of its own)"


def _start_relay(dev: Dev, redis_url: str, children: ChildGroup, stop: StopRequested) -> str:
    """Start `relay serve` and `relay worker` and wait for both; the receiver's base URL."""
    settings = dev.settings
    if not port_is_free(settings.port, settings.host or "0.0.0.0"):
        raise Failed(f"port {settings.port} is taken: set PORT to a free one")
    if settings.admin_tokens and not port_is_free(settings.admin_port, settings.admin_host):
        raise Failed(
            f"port {settings.admin_port} is taken: set RELAY_ADMIN_PORT to a free one "
            "(the admin listener: API and console)"
        )
    dev.env.update(REDIS_URL=redis_url, PORT=str(settings.port))
    values = {
        **dev.generated,
        **dev.admin,
        "RELAY_ROUTES": dev.env["RELAY_ROUTES"],
        "REDIS_URL": redis_url,
    }
    write_env_file(dev.env_file, values)
    relay = [sys.executable, "-m", "relay"]
    children.spawn("receiver", [*relay, "serve"], dev.env)
    children.spawn("worker", [*relay, "worker"], dev.env)
    base_url = local_url(settings)
    _wait(lambda: http_ok(f"{base_url}/readyz"), "the receiver's /readyz", children, stop)
    _wait(lambda: worker_registered(redis_url), "the worker", children, stop)
    return base_url


def _start_echoes(dev: Dev) -> list[EchoTarget]:
    """The echo targets `--echo-target` asks for, started."""
    ports = echo_ports(dev.args, dev.routes)
    if not ports:
        return []
    try:
        return start_echo_targets(ports)
    except (OSError, RuntimeError) as exc:
        raise Failed(f"the echo target cannot start: {exc}") from None


def _watch(children: ChildGroup, stop: StopRequested) -> None:
    """Return on Ctrl-C (or SIGTERM); raise Failed when a child exits by itself."""
    while stop.signal is None:
        dead = children.exited()
        if dead is not None:
            raise Failed(f"the {dead[0]} exited unexpectedly with code {dead[1]}")
        time.sleep(POLL_INTERVAL)
    log.info("dev_stopping", signal=signal.Signals(stop.signal).name)
