"""Dev values for the variables routes.toml names, the paths children get, and the env file.

`relay dev` must start from a fresh copy with no variable set: every secret routes.toml names
gets a throwaway value of the right shape, and the values go to an env file that a second
terminal can `source` to run the operator commands against the same relay.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shlex
import tomllib
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.config.settings import Settings

#: The env file's name in the data dir: `source .relay-dev/env`.
ENV_FILE = "env"

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


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
