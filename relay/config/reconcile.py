"""A [sources.NAME.reconcile] table: where a call-once provider's API is, and how to read it."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from relay.config.fields import Collector, table_of
from relay.config.model import Reconcile, RouteTable, SourceKind
from relay.core.units import parse_duration

RECONCILE_KEYS = (
    "api",
    "api_key",
    "api_key_env",
    "every",
    "grace",
    "id_field",
    "completed_field",
    "page_size",
    "concurrency",
    "timeout",
)
#: Bounds that keep a pass polite to the provider and a typo from hammering it.
MIN_EVERY = 60.0
MAX_PAGE_SIZE = 500  # the largest page Fellow documents
MAX_CONCURRENCY = 32


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _api(c: Collector, table: str, value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        c.add(table, "api", 'missing; the academy\'s base URL, e.g. "https://academy.example.com"')
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        c.add(table, "api", f"{value!r} is not an http(s) URL")
        return None
    # The API key travels in the clear over http: only a loopback API (tests, a tunnel) may.
    if parts.scheme == "http" and not _loopback(parts.hostname):
        c.add(table, "api", "must be https (http only for a loopback address)")
        return None
    if parts.query or parts.fragment:
        c.add(table, "api", "a base URL takes no query or fragment")
        return None
    return value.rstrip("/")


def _duration(c: Collector, table: str, data: Mapping[str, Any], key: str, default: float) -> float:
    if key not in data:
        return default
    try:
        value = parse_duration(data[key])
    except ValueError as exc:
        c.add(table, key, str(exc))
        return default
    if value <= 0:
        c.add(table, key, "must be more than 0 seconds")
    return value


def _count(
    c: Collector, table: str, data: Mapping[str, Any], key: str, default: int, top: int
) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        c.add(table, key, f"must be a whole number from 1 to {top}")
        return default
    return value


def _field(c: Collector, table: str, data: Mapping[str, Any], key: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value.strip():
        c.add(table, key, "must be a non-empty field name")
        return default
    return value


def load_reconcile(c: Collector, source: str, kind: SourceKind, value: Any) -> Reconcile | None:
    """The Reconcile of [sources.NAME.reconcile]; None (problems in `c`) when it is not valid."""
    table = f"sources.{source}.reconcile"
    data = table_of(c, f"sources.{source}", "reconcile", value)
    if data is None:
        return None
    ok = len(c.problems)
    if kind is not SourceKind.FORM:
        c.add(
            table, "", f"reconciliation reads Fellow Digitals' API: form sources only, not {kind}"
        )
    c.unknown_keys(table, data, RECONCILE_KEYS)
    api = _api(c, table, data.get("api"))
    found = c.secret(table, data, "api_key", "the API key")
    if found is None and "api_key" not in data and "api_key_env" not in data:
        c.add(table, "api_key_env", "missing; the environment variable holding the API key")
    every = _duration(c, table, data, "every", 900.0)
    if 0 < every < MIN_EVERY:
        c.add(table, "every", f"at least {MIN_EVERY:.0f}s: a pass lists every member")
    grace = _duration(c, table, data, "grace", 300.0)
    timeout = _duration(c, table, data, "timeout", 30.0)
    page_size = _count(c, table, data, "page_size", 100, MAX_PAGE_SIZE)
    concurrency = _count(c, table, data, "concurrency", 8, MAX_CONCURRENCY)
    id_field = _field(c, table, data, "id_field", "id")
    completed_field = _field(c, table, data, "completed_field", "completed")
    if len(c.problems) != ok or api is None or found is None:
        return None
    return Reconcile(
        api=api,
        api_key=found[0][0],
        every=every,
        grace=grace,
        id_field=id_field,
        completed_field=completed_field,
        page_size=page_size,
        concurrency=concurrency,
        timeout=timeout,
    )


def reconciled_sources(table: RouteTable) -> tuple[tuple[str, float], ...]:
    """(name, every in seconds) of each source with a `reconcile` table, in file order."""
    return tuple(
        (name, source.reconcile.every)
        for name, source in table.sources.items()
        if source.reconcile is not None
    )
