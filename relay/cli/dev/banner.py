"""The banner `relay dev` prints once everything answers: what it started and where."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from relay.cli.common import redact_url
from relay.config.model import RouteTable
from relay.config.settings import Settings


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
    admin_url: str = ""  # the admin listener (API and console); "" when not started
    admin_token: str = ""  # the write token relay dev generated, shown for a first run


def shown_path(path: Path) -> str:
    """A path as a person would type it from here: relative below the working directory."""
    try:
        return "./" + str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def local_url(settings: Settings) -> str:
    """The receiver's base URL as seen from this machine."""
    wildcard = settings.host in ("", "0.0.0.0", "::")
    host = "127.0.0.1" if wildcard else settings.host
    return f"http://{'[' + host + ']' if ':' in host else host}:{settings.port}"


def hook_url(base_url: str, routes: RouteTable, source: str) -> str:
    """The URL a provider posts to for a source, with its dev path token when it has one."""
    token = routes.sources[source].token
    return f"{base_url}/hooks/{source}" + (f"/{token.reveal()}" if token else "")


def _sources(info: BannerInfo) -> list[str]:
    if not info.routes.sources:
        return ["    (routes.toml has no [sources] yet)"]
    width = max(len(name) for name in info.routes.sources)
    return [
        f"    {name:<{width}}  {hook_url(info.base_url, info.routes, name)}"
        for name in info.routes.sources
    ]


def _generated(values: Mapping[str, str]) -> list[str]:
    if not values:
        return []
    width = max(len(n) for n in values)
    return [
        "",
        "  Generated throwaway dev values for variables routes.toml needs (not set):",
        *(f"    {name:<{width}} = {value}" for name, value in values.items()),
        "  They change on every run; set the variables yourself to keep them.",
    ]


def _admin(info: BannerInfo) -> list[str]:
    if not info.admin_url:
        return []
    lines = [f"  Admin      {info.admin_url}   console at /, API at /api/v1"]
    if info.admin_token:
        lines.append(f"             token (write): {info.admin_token}")
    else:
        lines.append("             sign in with a token of RELAY_ADMIN_TOKENS")
    return lines


def admin_url(settings: Settings) -> str:
    """The admin listener's base URL as seen from this machine, or "" when it is off."""
    if not settings.admin_tokens:
        return ""
    wildcard = settings.admin_host in ("", "0.0.0.0", "::")
    host = "127.0.0.1" if wildcard else settings.admin_host
    return f"http://{'[' + host + ']' if ':' in host else host}:{settings.admin_port}"


def render_banner(info: BannerInfo) -> str:
    """The text printed once everything answers."""
    lines = ["", "relay dev is running", ""]
    lines.append(f"  Redis      {redact_url(info.redis_url)}")
    lines.append(f"             {info.redis_kind}")
    lines.append(f"  Receiver   {info.base_url}")
    lines += _sources(info)
    lines.append(f"  Health     {info.base_url}/healthz   {info.base_url}/readyz")
    lines.append(f"  Worker     {info.worker}")
    lines += _admin(info)
    if info.echo_urls:
        lines.append(f"  Echo       {'  '.join(info.echo_urls)}")
        lines.append("             loopback targets that print every delivery they receive")
    lines.append(f"  Routes     {shown_path(Path(info.routes.path))}")
    lines += _generated(info.generated)
    if info.env_file is not None:
        lines.append("")
        lines.append("  In another terminal, for relay check, relay status and the rest:")
        lines.append(f"    source {shown_path(info.env_file)}")
    if info.processes:
        procs = ", ".join(f"{name} pid {pid}" for name, pid in info.processes)
        group = f" (process group {info.group})" if info.group else ""
        lines += ["", f"  Processes  {procs}{group}"]
    lines += ["", "  Press Ctrl-C to stop everything.", ""]
    return "\n".join(lines)
