"""Reading routes.toml's fields: every problem collected with file, table and key.

Secrets never live in the file: it names environment variables (`secret_env = "X"` or
`secret = "${X}"`) and a missing variable is a problem (`require_env=False` turns that off for
dry runs and CI checks without the production secrets).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from relay.core.errors import Problem
from relay.core.secrets import Secret

ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Source and target names: they appear in URLs, Redis keys and metric labels.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def hint(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key putting routes[2] before routes[10]."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text)
    )


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Problems in a stable order: by file, table (numbers in order), key, then message."""
    return sorted(problems, key=lambda p: (p.file, _natural(p.table), p.key, p.message))


class Collector:
    """Accumulates problems for one file so every mistake is reported together."""

    def __init__(self, path: str, env: Mapping[str, str], require_env: bool) -> None:
        self.path = path
        self.env = env
        self.require_env = require_env
        self.problems: list[Problem] = []
        self.missing_env: dict[str, None] = {}

    def add(self, table: str, key: str, message: str) -> None:
        self.problems.append(Problem(self.path, table, key, message))

    def unknown_keys(self, table: str, data: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        for key in data:
            if key not in allowed:
                self.add(table, key, f"unknown key '{key}'{hint(key, allowed)}")

    def flag(self, table: str, data: Mapping[str, Any], key: str, default: bool) -> bool:
        """A true/false key; a problem (and False) when it is anything else."""
        value = data.get(key, default)
        if not isinstance(value, bool):
            self.add(table, key, "must be true or false")
            return False
        return value

    def env_value(self, table: str, key: str, var: str, what: str) -> str | None:
        """The value of an environment variable, or None with a problem (or a note when lax)."""
        value = self.env.get(var)
        if value is None:
            if self.require_env:
                self.add(table, key, f"environment variable {var} is not set (needed for {what})")
            else:
                self.missing_env[var] = None
            return None
        if not value.strip():
            self.add(table, key, f"environment variable {var} is empty (needed for {what})")
            return None
        return value

    def secret(
        self, table: str, data: Mapping[str, Any], key: str, what: str
    ) -> tuple[tuple[Secret, ...], str] | None:
        """Secrets from `key = "${VAR}"` or `key_env = "VAR"`, and the key the file used.

        None when neither is given or on a problem. A variable may hold several secrets
        separated by spaces (key rotation); callers that take one check the count.
        """
        direct, by_env = data.get(key), data.get(f"{key}_env")
        if direct is not None and by_env is not None:
            self.add(table, key, f"give either '{key}' or '{key}_env', not both")
            return None
        if direct is None and by_env is None:
            return None
        if direct is not None:
            shown_key = key
            ref = ENV_REF.match(direct) if isinstance(direct, str) else None
            if not ref:
                self.add(
                    table,
                    key,
                    f'{what} must name an environment variable, like "${{VAR}}", or use '
                    f"'{key}_env': secrets never live in routes.toml",
                )
                return None
            var = ref.group(1)
        else:
            shown_key = f"{key}_env"
            if not isinstance(by_env, str) or not by_env:
                self.add(table, shown_key, "must be the name of an environment variable")
                return None
            ref = ENV_REF.match(by_env)
            if ref:
                self.add(
                    table, shown_key, f'write the bare variable name: {shown_key} = "{ref[1]}"'
                )
                return None
            if not ENV_NAME.match(by_env):
                self.add(table, shown_key, f"{by_env!r} is not a valid environment variable name")
                return None
            var = by_env
        value = self.env_value(table, shown_key, var, what)
        if value is None:
            return None
        return tuple(Secret(part, name=var) for part in value.split()), shown_key


def table_of(c: Collector, where: str, key: str, value: Any) -> Mapping[str, Any] | None:
    if not isinstance(value, Mapping):
        c.add(where, key, "must be a table")
        return None
    return value


def string_list(c: Collector, table: str, key: str, value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        c.add(table, key, "must be a list of strings")
        return None
    if not value:
        c.add(table, key, "is empty; list at least one")
        return None
    return tuple(value)


def repeated(items: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    twice: dict[str, None] = {}
    for item in items:
        if item in seen:
            twice[item] = None
        seen.add(item)
    return list(twice)
