"""What every command shares: the Redis connection, error exits, argument types, URL redaction.

As in rq's `cli/helpers.py`: an operator command is a function of (args, settings, connection)
wrapped by `with_redis`, which reads the environment, connects with the operator bounds of
`relay.store.clients`, and turns the failures every command can meet into one line on stderr
and an exit code.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis

from relay.config.settings import Settings
from relay.core.errors import ConfigError
from relay.core.redis_url import SENTINEL_SCHEMES, redact_sentinel_url, scheme_of
from relay.core.times import parse_since
from relay.store.clients import OPERATOR, sync_client

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "MASK",
    "RedisCommand",
    "UsageError",
    "config_error",
    "configured_targets",
    "connect",
    "non_negative_int",
    "positive_int",
    "print_json",
    "redact_url",
    "since_option",
    "with_redis",
]

#: Exit codes: 1 the command ran and failed (Redis away, unknown event), 2 it could not start.
EXIT_FAILED, EXIT_USAGE = 1, 2
EXIT_CONFIG = EXIT_USAGE

#: What a secret in a URL is replaced with, wherever relay prints one.
MASK = "****"

#: The relay's own hook paths, /hooks/<source>/<token>: the token is a credential.
_HOOK_PATH = re.compile(r"^(/hooks/[^/]+/)([^/]+)(.*)$")

#: An operator command: the parsed arguments, the settings and a Redis connection to an exit code.
RedisCommand = Callable[[argparse.Namespace, Settings, redis.Redis], int]


class UsageError(Exception):
    """An argument or environment value that cannot be used: nothing was done (exit code 2)."""


def redact_url(url: str) -> str:
    """A URL safe to print: its password and the token of a relay hook path masked."""
    if scheme_of(url) in SENTINEL_SCHEMES:  # several hosts: not for urlsplit
        return redact_sentinel_url(url) or MASK
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # unparseable: printing it whole could show a secret
        return MASK
    if parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:{MASK}@{host}" + (f":{port}" if port else "")
        parts = parts._replace(netloc=netloc)
    match = _HOOK_PATH.match(parts.path)
    if match:
        parts = parts._replace(path=f"{match.group(1)}{MASK}{match.group(3)}")
    elif parts.password is None:
        return url  # nothing to hide: as given, byte for byte
    return urlunsplit(parts)


def config_error(prog: str, exc: ConfigError, *, code: int = EXIT_CONFIG) -> int:
    """Print every problem of `exc` as `prog: problem` on stderr; return the exit code."""
    for problem in exc.problems:
        print(f"{prog}: {problem}", file=sys.stderr)
    return code


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1, with a message naming the bad value."""
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: a whole number of 0 or more, with a message naming the bad value."""
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def connect(url: str) -> redis.Redis:
    """A client for an operator command: it fails within seconds when Redis is away."""
    return sync_client(url, OPERATOR)


def _routes_data(path: str, quiet: bool = False) -> dict[str, object] | None:
    """routes.toml as plain TOML (no secret resolved); None when missing or unreadable (said
    on stderr unless `quiet`)."""
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        if not quiet:
            print(f"relay: {path}: {exc} (target names taken from Redis only)", file=sys.stderr)
        return None


def configured_targets(path: str) -> tuple[str, ...] | None:
    """Target names in routes.toml, in file order; None when there is no file or it is unreadable.

    Only the names are read, without resolving any secret: an operator's machine need not have
    the targets' environment variables. An unreadable file is reported on stderr.
    """
    data = _routes_data(path)
    if data is None:
        return None
    targets = data.get("targets")
    return tuple(str(name) for name in targets) if isinstance(targets, dict) else ()


def configured_reconciled(path: str) -> tuple[str, ...]:
    """Names of the sources with a `reconcile` table in routes.toml, in file order (quietly
    none when the file is missing or unreadable: configured_targets says so)."""
    sources = (_routes_data(path, quiet=True) or {}).get("sources")
    if not isinstance(sources, dict):
        return ()
    return tuple(
        str(name)
        for name, table in sources.items()
        if isinstance(table, dict) and isinstance(table.get("reconcile"), dict)
    )


def since_option(value: str | None, flag: str = "--since") -> float | None:
    """Unix seconds of a `--since` (or `flag`) value (2h, 30m, 7d or ISO-8601), None when not
    given."""
    try:
        return None if value is None else parse_since(value)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def print_json(value: Any) -> None:
    """One indented JSON document on stdout, for scripts."""
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def with_redis(
    prog: str, command: RedisCommand, *, bad_environment: int = EXIT_CONFIG
) -> Callable[[argparse.Namespace], int]:
    """`command` run with settings and a connection to `--url` (else REDIS_URL).

    A bad environment exits `bad_environment`, a UsageError 2 and a Redis error 1, each with one
    line on stderr.
    """

    def run(args: argparse.Namespace) -> int:
        try:
            settings = Settings.from_env()
        except ConfigError as exc:
            return config_error(prog, exc, code=bad_environment)
        url = args.url or settings.redis_url
        try:
            with connect(url) as conn:
                return command(args, settings, conn)
        except UsageError as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            print(f"{prog}: cannot reach Redis at {redact_url(url)}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except redis.RedisError as exc:
            print(f"{prog}: Redis at {redact_url(url)}: {exc}", file=sys.stderr)
            return EXIT_FAILED

    return run
