"""Settings read once from an explicit mapping (the environment), with typed casts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from relay.core import constants
from relay.core.acks import MIN_MAX_LAG, PRIMARY_ONLY, AckReplicas
from relay.core.errors import ConfigError, Problem
from relay.core.redis_url import check_redis_url
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
    admin_host: str = "127.0.0.1"
    admin_port: int = constants.DEFAULT_ADMIN_PORT
    # `name:scope:value ...`, parsed (and checked) by relay.admin.tokens; never logged. Unset:
    # no admin listener, since nobody could use it.
    admin_tokens: str = field(default="", repr=False)
    # The console's cookie is Secure when X-Forwarded-Proto says https: only a proxy in front
    # of the admin listener may say so, hence off unless the operator turns it on.
    admin_trust_proxy: bool = False
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    #: Replicas that must confirm a batch's commit (WAIT) before its 202: a number (0: the
    #: primary's word) or `all` (every replica online at commit time, at least one), with
    #: RELAY_ACK_MAX_LAG inside it: the value travels as one to the intake and the spool drain.
    ack_replicas: AckReplicas = PRIMARY_ONLY
    #: How often each worker looks whether a reconciliation pass is due (seconds).
    reconcile_tick: float = 15.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from the environment; raise ConfigError naming each bad variable."""
        read = _EnvReader(os.environ if env is None else env)
        log_format = read.choice("RELAY_LOG_FORMAT", ("auto", "json", "console"))
        settings = cls(
            redis_url=read.redis_url("REDIS_URL", constants.DEFAULT_REDIS_URL),
            routes_path=read.text("RELAY_ROUTES", constants.DEFAULT_ROUTES_PATH),
            host=read.text("HOST", "127.0.0.1"),
            port=int(read.number("PORT", constants.DEFAULT_PORT, int)),
            intake_timeout=read.duration("RELAY_INTAKE_TIMEOUT", constants.DEFAULT_INTAKE_TIMEOUT),
            read_timeout=read.positive("RELAY_READ_TIMEOUT", constants.DEFAULT_READ_TIMEOUT),
            keepalive_timeout=read.positive(
                "RELAY_KEEPALIVE_TIMEOUT", constants.DEFAULT_KEEPALIVE_TIMEOUT
            ),
            retention=read.duration("RELAY_RETENTION", float(constants.DEFAULT_RETENTION)),
            spool_dir=read.text("RELAY_SPOOL_DIR", "./.relay-spool"),
            spool_max=read.size("RELAY_SPOOL_MAX", constants.DEFAULT_SPOOL_MAX),
            status_token=read.text("RELAY_STATUS_TOKEN", ""),
            admin_host=read.text("RELAY_ADMIN_HOST", "127.0.0.1"),
            admin_port=int(read.number("RELAY_ADMIN_PORT", constants.DEFAULT_ADMIN_PORT, int)),
            admin_tokens=read.text("RELAY_ADMIN_TOKENS", "").strip(),
            admin_trust_proxy=read.choice("RELAY_ADMIN_TRUST_PROXY", ("0", "1")) == "1",
            log_format=log_format,
            log_level=read.text("RELAY_LOG_LEVEL", "info").lower(),
            ack_replicas=read.ack_replicas("RELAY_ACK_REPLICAS", "RELAY_ACK_MAX_LAG"),
            reconcile_tick=read.positive("RELAY_RECONCILE_TICK", 15.0),
        )
        if settings.admin_tokens and settings.admin_port == settings.port and settings.port:
            read.problems.append(
                Problem("environment", "", "RELAY_ADMIN_PORT", "must differ from PORT (intake)")
            )
        if read.problems:
            raise ConfigError(read.problems)
        return settings


class _EnvReader:
    """Typed reads of environment variables; a bad value is noted in `problems`, and the
    default is used, so that one ConfigError names every bad variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[Problem] = []

    def _problem(self, name: str, message: str) -> None:
        self.problems.append(Problem("environment", "", name, message))

    def text(self, name: str, default: str) -> str:
        """The value, or `default` when unset or empty."""
        return self.env.get(name, "") or default

    def redis_url(self, name: str, default: str) -> str:
        """A Redis URL relay can connect with (plain or Sentinel); the message never shows it."""
        value = self.text(name, default)
        try:
            check_redis_url(value)
        except ValueError as exc:
            self._problem(name, str(exc))
            return default
        return value

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        """One of `allowed` (the first is the default)."""
        value = self.text(name, allowed[0])
        if value not in allowed:
            self._problem(name, f"must be {', '.join(allowed[:-1])} or {allowed[-1]}")
        return value

    def number(self, name: str, default: float, cast: type[int] | type[float]) -> float:
        """A number of at least 0."""
        raw = self.env.get(name)
        if not raw:
            return default
        try:
            value = cast(raw)
            if value < 0:
                raise ValueError
            return value
        except ValueError:
            self._problem(name, f"{raw!r} is not a valid number")
            return default

    def ack_replicas(self, name: str, lag_name: str) -> AckReplicas:
        """A replica count of at least 0, or `all` (unset means 0), with the lag limit read
        from `lag_name` (a duration of at least MIN_MAX_LAG)."""
        max_lag = self.duration(lag_name, constants.DEFAULT_ACK_MAX_LAG)
        if not max_lag >= MIN_MAX_LAG:
            self._problem(
                lag_name,
                f"must be at least {MIN_MAX_LAG:g}s: replicas acknowledge once a second, so a "
                "healthy one often shows a lag of 1 s",
            )
            max_lag = constants.DEFAULT_ACK_MAX_LAG
        raw = self.env.get(name)
        ack = PRIMARY_ONLY
        if raw:
            try:
                ack = AckReplicas.parse(raw)
            except ValueError:
                self._problem(name, f"{raw!r} is neither a whole number of at least 0 nor all")
        return replace(ack, max_lag=max_lag)

    def duration(self, name: str, default: float) -> float:
        """A duration such as `30s` or `1.5` (seconds)."""
        raw = self.env.get(name)
        if not raw:
            return default
        try:
            return parse_duration(raw)
        except ValueError as exc:
            self._problem(name, str(exc))
            return default

    def positive(self, name: str, default: float) -> float:
        """A duration of more than 0 seconds."""
        # 0 would switch a timeout off (aiohttp's keep-alive cut), which is never wanted.
        value = self.duration(name, default)
        if value <= 0:
            self._problem(name, "must be more than 0 seconds")
            return default
        return value

    def size(self, name: str, default: int) -> int:
        """A size such as `64MiB` (bytes)."""
        raw = self.env.get(name)
        if not raw:
            return default
        try:
            return parse_size(raw)
        except ValueError as exc:
            self._problem(name, str(exc))
            return default
