"""A [targets.NAME] table of routes.toml: a downstream app and how it is delivered to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from relay.config.breaker import load_breaker
from relay.config.control import CONTROL_KEYS, load_control
from relay.config.fields import ENV_REF, HEADER_NAME, NAME, Collector, table_of
from relay.config.model import BODY_FORMATS, ENRICH_PROVIDERS, RetryPolicy, Target
from relay.core import constants
from relay.core.headers import is_reserved
from relay.core.secrets import Secret
from relay.core.units import parse_duration

#: Shortest Standard Webhooks key, in decoded bytes (the spec asks for 24 to 64).
MIN_SIGNING_KEY_BYTES = 16

TARGET_KEYS = (
    "url",
    "timeout",
    "signing_secret",
    "signing_secret_env",
    "retry",
    "headers",
    "body",
    "pause_on_gone",
    "breaker",
    *CONTROL_KEYS,
    "enrich",
)
RETRY_KEYS = ("attempts", "first", "max")


def load_target(c: Collector, name: str, data: Mapping[str, Any]) -> Target | None:
    table = f"targets.{name}"
    ok = len(c.problems)
    if not NAME.match(name):
        c.add(table, "", "target names may hold letters, digits, '_', '-' and '.'")
    c.unknown_keys(table, data, TARGET_KEYS)
    url = data.get("url")
    if url is None:
        c.add(table, "url", "missing; the address events are delivered to")
        url = ""
    elif not isinstance(url, str):
        c.add(table, "url", "must be a string like 'https://app.example.com/hooks'")
        url = ""
    else:
        problem = url_problem(url)
        if problem:
            c.add(table, "url", problem)
    timeout = constants.DEFAULT_TIMEOUT
    if "timeout" in data:
        try:
            timeout = parse_duration(data["timeout"])
            if timeout <= 0:
                raise ValueError("the timeout must be more than 0 seconds")
        except ValueError as exc:
            c.add(table, "timeout", str(exc))
    secrets = _signing_secrets(c, table, data)
    retry = RetryPolicy()
    if "retry" in data:
        retry = _load_retry(c, table, data["retry"]) or retry
    headers = _load_headers(c, table, data["headers"]) if "headers" in data else ()
    body = data.get("body", "original")
    if body not in BODY_FORMATS:
        c.add(table, "body", f"must be one of: {', '.join(BODY_FORMATS)}")
    pause = c.flag(table, data, "pause_on_gone", False)
    breaker = load_breaker(c, table, data["breaker"]) if "breaker" in data else None
    rate, concurrency, order = load_control(c, table, data)
    enrich = data.get("enrich")
    if enrich is not None and enrich not in ENRICH_PROVIDERS:
        names = " or ".join(f'"{name}"' for name in ENRICH_PROVIDERS)
        c.add(table, "enrich", f"must be {names} (the provider whose events are enriched)")
    if len(c.problems) != ok:
        return None
    return Target(
        name=name,
        url=url,
        timeout=timeout,
        signing_secrets=secrets,
        retry=retry,
        headers=headers,
        body=str(body),
        pause_on_gone=pause,
        breaker=breaker,
        rate=rate,
        concurrency=concurrency,
        order=order,
        enrich=enrich,
    )


def _signing_secrets(c: Collector, table: str, data: Mapping[str, Any]) -> tuple[Secret, ...]:
    found = c.secret(table, data, "signing_secret", "the signing secret")
    if found is None:
        return ()
    secrets, key = found
    for secret in secrets:
        # Messages name the variable, never the value.
        if not secret.reveal().startswith("whsec_"):
            c.add(
                table,
                key,
                f"the value of {secret.name} must be a Standard Webhooks secret ('whsec_<base64>')",
            )
            continue
        try:
            size = len(secret.key_bytes())
        except ValueError:
            c.add(table, key, f"the value of {secret.name} is not valid base64 after 'whsec_'")
            continue
        if size < MIN_SIGNING_KEY_BYTES:
            c.add(
                table,
                key,
                f"the key in {secret.name} is {size} bytes: too short "
                f"(at least {MIN_SIGNING_KEY_BYTES}; the spec asks for 24 to 64)",
            )
    return secrets


def _load_headers(c: Collector, table: str, value: Any) -> tuple[tuple[str, Secret], ...]:
    raw = table_of(c, table, "headers", value)
    where = f"{table}.headers"
    headers: list[tuple[str, Secret]] = []
    for hname, hvalue in (raw or {}).items():
        lname = hname.lower()
        if not HEADER_NAME.match(hname):
            c.add(where, hname, "is not a valid header name")
        elif is_reserved(lname):
            c.add(where, hname, "is set by relay itself on every delivery")
        elif not isinstance(hvalue, str):
            c.add(where, hname, "must be a string")
        elif ref := ENV_REF.match(hvalue):
            env_value = c.env_value(where, hname, ref.group(1), f"header {hname}")
            if env_value is not None:
                if "\r" in env_value or "\n" in env_value:
                    c.add(where, hname, f"the value of {ref.group(1)} holds a line break")
                else:
                    headers.append((lname, Secret(env_value, name=ref.group(1))))
        elif "\r" in hvalue or "\n" in hvalue:
            c.add(where, hname, "must not hold a line break")
        else:
            headers.append((lname, Secret(hvalue, name="")))
    return tuple(headers)


def _load_retry(c: Collector, table: str, value: Any) -> RetryPolicy | None:
    where = f"{table}.retry"
    data = table_of(c, table, "retry", value)
    if data is None:
        return None
    c.unknown_keys(where, data, RETRY_KEYS)
    attempts = data.get("attempts", constants.DEFAULT_ATTEMPTS)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 100:
        c.add(where, "attempts", "must be a whole number from 1 to 100")
        attempts = constants.DEFAULT_ATTEMPTS
    delays = {}
    defaults = (("first", constants.DEFAULT_FIRST_DELAY), ("max", constants.DEFAULT_MAX_DELAY))
    for key, default in defaults:
        try:
            delays[key] = parse_duration(data.get(key, default))
            if delays[key] <= 0:
                raise ValueError(f"the {key} delay must be more than 0 seconds")
        except ValueError as exc:
            c.add(where, key, str(exc))
            delays[key] = default
    if delays["first"] > delays["max"]:
        c.add(where, "first", "the first delay cannot be longer than the max delay")
    return RetryPolicy(attempts=attempts, first=delays["first"], max=delays["max"])


def url_problem(url: str) -> str | None:
    """Why a target URL cannot be used, or None when it is fine."""
    if url != url.strip() or any(ch.isspace() or ord(ch) < 32 for ch in url):
        return f"{url!r} holds spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        return f"{url!r} is not a valid URL: {exc}"
    del port
    if parts.scheme not in ("http", "https"):
        return f"{url!r} must start with http:// or https://"
    if not parts.hostname:
        return f"{url!r} has no host"
    if parts.username is not None or parts.password is not None:
        return f"{url!r} carries credentials: put them in headers from the environment"
    if parts.fragment or url.endswith("#"):
        return f"{url!r} has a '#fragment', which is never sent to the server: remove it"
    return None
