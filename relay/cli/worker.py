"""`relay worker`: RQ delivery workers with the scheduler, on the queue the receiver fills.

`relay worker --check` does not run a worker: it exits 0 when the delivery side is healthy and 1
with the reason on stderr (worker.health).
"""

from __future__ import annotations

import argparse
import os
import sys

from redis.exceptions import RedisError

from relay.cli.common import EXIT_CONFIG, EXIT_FAILED, config_error, connect, positive_int
from relay.config.loading import load_routes
from relay.config.settings import Settings
from relay.core.errors import ConfigError
from relay.core.logs import configure_logging
from worker.health import check, max_heartbeat_age
from worker.process import Operations, run_worker
from worker.processes import run_processes
from worker.rq_worker import DEFAULT_MAINTENANCE_INTERVAL, HEARTBEAT_TTL

#: Environment defaults of --metrics-port and --metrics-host.
METRICS_PORT_ENV = "RELAY_WORKER_METRICS_PORT"
METRICS_HOST_ENV = "RELAY_WORKER_METRICS_HOST"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of `relay worker`."""
    parser.add_argument(
        "--burst", action="store_true", help="deliver what is queued now, then exit"
    )
    parser.add_argument(
        "--processes",
        type=positive_int,
        default=1,
        metavar="N",
        help="run N worker processes (default 1)",
    )
    parser.add_argument(
        "--maintenance-interval",
        type=positive_int,
        default=DEFAULT_MAINTENANCE_INTERVAL,
        metavar="SECONDS",
        help="how often abandoned jobs of crashed workers are looked for "
        f"(default {DEFAULT_MAINTENANCE_INTERVAL})",
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics on this port (process i of --processes N: PORT + i); "
        f"default ${METRICS_PORT_ENV}, else no metrics endpoint",
    )
    parser.add_argument(
        "--metrics-host",
        default=None,
        metavar="HOST",
        help=f"address the metrics endpoint binds (default ${METRICS_HOST_ENV} or 127.0.0.1)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 0 if routes validate, Redis answers and a worker is heartbeating, else 1",
    )


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 1 to 65535, got {value}")
    return value


def operations(args: argparse.Namespace, env: dict[str, str]) -> Operations:
    """Metrics endpoint options from the flags, else the environment; ValueError when bad."""
    port = args.metrics_port
    if port is None and env.get(METRICS_PORT_ENV):
        try:
            port = _port(env[METRICS_PORT_ENV])
        except argparse.ArgumentTypeError as exc:
            raise ValueError(f"{METRICS_PORT_ENV}: {exc}") from None
    host = args.metrics_host or env.get(METRICS_HOST_ENV) or "127.0.0.1"
    return Operations(metrics_host=host, metrics_port=port)


def run_check(args: argparse.Namespace) -> int:
    """`relay worker --check`: 0 when healthy, else 1 with the reason on stderr."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        return config_error("relay worker --check", exc, code=EXIT_FAILED)
    max_age = max_heartbeat_age(args.maintenance_interval, HEARTBEAT_TTL)
    health = check(settings, os.environ, max_age)
    stream = sys.stdout if health.ok else sys.stderr
    verdict = "ok" if health.ok else "unhealthy"
    print(f"relay worker --check: {verdict}", file=stream)
    for line in health.lines:
        print(f"  {line}", file=stream)
    return 0 if health.ok else 1


def run(args: argparse.Namespace) -> int:
    """Load settings and routes, then run the worker(s); exit 2 on a configuration error."""
    if args.check:
        return run_check(args)
    try:
        settings = Settings.from_env()
        ops = operations(args, dict(os.environ))
    except ConfigError as exc:
        return config_error("relay worker", exc)
    except ValueError as exc:
        print(f"relay worker: bad environment: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.log_format)
    try:
        routes = load_routes(settings.routes_path, os.environ)
    except ConfigError as exc:
        return config_error("relay worker", exc)
    try:
        with connect(settings.redis_url) as probe:
            probe.ping()
    except RedisError as exc:
        print(f"relay worker: cannot reach Redis at REDIS_URL: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.processes > 1:
        return run_processes(
            settings,
            routes,
            args.processes,
            burst=args.burst,
            maintenance_interval=args.maintenance_interval,
            ops=ops,
        )
    return run_worker(
        settings,
        routes,
        burst=args.burst,
        maintenance_interval=args.maintenance_interval,
        ops=ops,
    )
