"""The management API's bearer tokens: `RELAY_ADMIN_TOKENS="alice:write:VALUE ci:read:VALUE"`.

Each entry is `name:scope:value`, separated by whitespace. The name is what the audit log and
the console show (never the value); the scope is `read` (every GET) or `write` (also replay and
pause). Values are at least 32 characters, so that they cannot be guessed, and are looked up in
constant time: every configured value is compared with `hmac.compare_digest`, with no early exit.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from relay.core.errors import ConfigError, Problem

#: The variable the tokens come from.
ENV_VAR = "RELAY_ADMIN_TOKENS"

#: 32 characters of a random token (e.g. `secrets.token_urlsafe(24)`) carry 144+ bits.
MIN_VALUE_LENGTH = 32

#: Names appear in audit lines and on the console: keep them plain words.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]*")


class Scope(StrEnum):
    """What a token may do: `read` every GET; `write` also every POST."""

    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a token's name and scope (never its value)."""

    name: str
    scope: Scope

    @property
    def can_write(self) -> bool:
        """Whether this principal may replay, pause and resume."""
        return self.scope is Scope.WRITE


@dataclass(frozen=True)
class _Token:
    principal: Principal
    value: bytes

    def __repr__(self) -> str:  # a token must never reach a log line through a repr
        return f"_Token({self.principal!r}, value=<hidden>)"


@dataclass(frozen=True)
class TokenSet:
    """The configured tokens; `lookup` maps a presented value to its principal."""

    tokens: tuple[_Token, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.tokens)

    @property
    def principals(self) -> tuple[Principal, ...]:
        """Every configured principal (names and scopes only)."""
        return tuple(t.principal for t in self.tokens)

    def lookup(self, presented: str) -> Principal | None:
        """The principal whose value is `presented`, or None; constant time in the value."""
        given = presented.encode("utf-8", "surrogateescape")
        found: Principal | None = None
        for token in self.tokens:
            # Every value is compared (no early exit), so timing says nothing about which
            # token, or how much of one, matched.
            if hmac.compare_digest(given, token.value):
                found = token.principal
        return found

    def named(self, name: str) -> Principal | None:
        """The principal of the token named `name`, or None (the console's session names it)."""
        return next((t.principal for t in self.tokens if t.principal.name == name), None)

    def sign(self, name: str, message: bytes) -> bytes | None:
        """HMAC-SHA256 of `message` keyed by the value of the token named `name`, or None.

        The console signs its sessions with it: the value never leaves this class, and
        rotating or removing a token ends the console sessions signed in with it.
        """
        token = next((t for t in self.tokens if t.principal.name == name), None)
        return None if token is None else hmac.digest(token.value, message, "sha256")


def _shown(text: str) -> str:
    """A part of an entry as an error message may quote it: anything as long as a token value
    might be one written in the wrong place, so it is withheld."""
    return repr(text) if len(text) < MIN_VALUE_LENGTH else "(withheld: as long as a token)"


def _parse_entry(entry: str, index: int) -> tuple[_Token | None, str | None]:
    """One `name:scope:value` entry, or why it is wrong (the message never quotes a value)."""
    parts = entry.split(":", 2)
    if len(parts) != 3:
        return None, f"entry {index} is not name:scope:value"
    name, scope, value = parts
    if not _NAME.fullmatch(name) or len(name) >= MIN_VALUE_LENGTH:
        return None, (
            f"entry {index}: the name {_shown(name)} must be letters, digits, _ . @ - "
            f"(fewer than {MIN_VALUE_LENGTH})"
        )
    if scope not in tuple(Scope):
        return None, f"entry {index} ({name}): scope must be read or write, not {_shown(scope)}"
    if len(value) < MIN_VALUE_LENGTH:
        return None, (
            f"entry {index} ({name}): the token must be at least {MIN_VALUE_LENGTH} characters "
            f"(it has {len(value)}); make one with: python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'"
        )
    return _Token(Principal(name, Scope(scope)), value.encode("utf-8", "surrogateescape")), None


def parse_tokens(text: str) -> TokenSet:
    """The tokens of a RELAY_ADMIN_TOKENS value; raise ConfigError naming every bad entry."""
    tokens: list[_Token] = []
    problems: list[str] = []
    for index, entry in enumerate(text.split(), start=1):
        token, problem = _parse_entry(entry, index)
        if problem is not None:
            problems.append(problem)
        elif token is not None:
            tokens.append(token)
    names = [t.principal.name for t in tokens]
    problems += [
        f"name {n!r} is used twice" for n in sorted({n for n in names if names.count(n) > 1})
    ]
    values = [t.value for t in tokens]
    if len(set(values)) != len(values):
        problems.append("two entries have the same token value")
    if problems:
        raise ConfigError([Problem("environment", "", ENV_VAR, p) for p in problems])
    return TokenSet(tuple(tokens))


def tokens_from_env(env: Mapping[str, str]) -> TokenSet:
    """The tokens of RELAY_ADMIN_TOKENS in `env` (empty when unset)."""
    return parse_tokens(env.get(ENV_VAR, ""))
