"""Settings read once from an explicit mapping (the environment), with typed casts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from relay.core import constants
from relay.core.errors import ConfigError, Problem
from relay.core.units import parse_duration, parse_size


@dataclass(frozen=True)
class Settings:
    """Process settings; every field comes from one environment variable."""

    redis_url: str = constants.DEFAULT_REDIS_URL
    routes_path: str = constants.DEFAULT_ROUTES_PATH
    host: str = "127.0.0.1"
    port: int = constants.DEFAULT_PORT
    intake_timeout: float = constants.DEFAULT_INTAKE_TIMEOUT
    read_timeout: float = constants.DEFAULT_READ_TIMEOUT  # whole request body, else 408
    keepalive_timeout: float = constants.DEFAULT_KEEPALIVE_TIMEOUT  # idle or unfinished headers
    retention: float = float(constants.DEFAULT_RETENTION)
    spool_dir: str = "./.relay-spool"
    spool_max: int = constants.DEFAULT_SPOOL_MAX  # bytes
    status_token: str = ""  # protects /status when set; never logged
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from the environment; raise ConfigError naming each bad variable."""
        env = os.environ if env is None else env
        problems: list[Problem] = []

        def get(name: str, default: str) -> str:
            return env.get(name, "") or default

        def number(name: str, default: float, cast: type[int] | type[float]) -> float:
            raw = env.get(name)
            if not raw:
                return default
            try:
                value = cast(raw)
                if value < 0:
                    raise ValueError
                return value
            except ValueError:
                problems.append(Problem("environment", "", name, f"{raw!r} is not a valid number"))
                return default

        def duration(name: str, default: float) -> float:
            raw = env.get(name)
            if not raw:
                return default
            try:
                return parse_duration(raw)
            except ValueError as exc:
                problems.append(Problem("environment", "", name, str(exc)))
                return default

        def positive(name: str, default: float) -> float:
            # 0 would switch a timeout off (aiohttp's keep-alive cut), which is never wanted.
            value = duration(name, default)
            if value <= 0:
                problems.append(Problem("environment", "", name, "must be more than 0 seconds"))
                return default
            return value

        def size(name: str, default: int) -> int:
            raw = env.get(name)
            if not raw:
                return default
            try:
                return parse_size(raw)
            except ValueError as exc:
                problems.append(Problem("environment", "", name, str(exc)))
                return default

        log_format = get("RELAY_LOG_FORMAT", "auto")
        if log_format not in ("auto", "json", "console"):
            problems.append(
                Problem("environment", "", "RELAY_LOG_FORMAT", "must be auto, json or console")
            )
        settings = cls(
            redis_url=get("REDIS_URL", constants.DEFAULT_REDIS_URL),
            routes_path=get("RELAY_ROUTES", constants.DEFAULT_ROUTES_PATH),
            host=get("HOST", "127.0.0.1"),
            port=int(number("PORT", constants.DEFAULT_PORT, int)),
            intake_timeout=duration("RELAY_INTAKE_TIMEOUT", constants.DEFAULT_INTAKE_TIMEOUT),
            read_timeout=positive("RELAY_READ_TIMEOUT", constants.DEFAULT_READ_TIMEOUT),
            keepalive_timeout=positive(
                "RELAY_KEEPALIVE_TIMEOUT", constants.DEFAULT_KEEPALIVE_TIMEOUT
            ),
            retention=duration("RELAY_RETENTION", float(constants.DEFAULT_RETENTION)),
            spool_dir=get("RELAY_SPOOL_DIR", "./.relay-spool"),
            spool_max=size("RELAY_SPOOL_MAX", constants.DEFAULT_SPOOL_MAX),
            status_token=get("RELAY_STATUS_TOKEN", ""),
            log_format=log_format,
            log_level=get("RELAY_LOG_LEVEL", "info").lower(),
        )
        if problems:
            raise ConfigError(problems)
        return settings
