"""The admin listener of `relay dev`: a throwaway write token and a free port, unless set.

A first run should reach the management API and the console with nothing configured, as it
reaches the receiver: when RELAY_ADMIN_TOKENS is unset, relay dev makes one write token named
`dev`; when RELAY_ADMIN_PORT is unset, it takes 8001, or any free port when 8001 is taken.
"""

from __future__ import annotations

import secrets
from collections.abc import MutableMapping

from relay.cli.dev.children import pick_port
from relay.core import constants

#: The name of the token relay dev generates (audit lines say who acted: "dev").
DEV_PRINCIPAL = "dev"


def fill_admin_env(env: MutableMapping[str, str]) -> dict[str, str]:
    """Set RELAY_ADMIN_TOKENS and RELAY_ADMIN_PORT when unset; return the ones generated."""
    generated: dict[str, str] = {}
    if not env.get("RELAY_ADMIN_TOKENS", "").strip():
        value = secrets.token_urlsafe(32)
        generated["RELAY_ADMIN_TOKENS"] = f"{DEV_PRINCIPAL}:write:{value}"
    if not env.get("RELAY_ADMIN_PORT", "").strip():
        host = env.get("RELAY_ADMIN_HOST", "") or "127.0.0.1"
        generated["RELAY_ADMIN_PORT"] = str(pick_port(constants.DEFAULT_ADMIN_PORT, host))
    env.update(generated)
    return generated


def generated_token(generated: MutableMapping[str, str] | dict[str, str]) -> str:
    """The value of the token relay dev generated, or "" when the operator set their own."""
    entry = generated.get("RELAY_ADMIN_TOKENS", "")
    return entry.split(":", 2)[2] if entry else ""
