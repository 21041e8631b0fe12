"""`relay check [PATH]`: routes.toml validated, and its report for people and for scripts.

Validation collects every problem as `file: [table.key] message`; warnings (things that work but
are probably not meant) never fail. Secret values are never printed: only the names of the
variables that hold them.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from relay.cli.check_filters import filter_warnings, route_text
from relay.config.fields import sort_problems
from relay.config.loading import load_routes
from relay.config.model import Route, RouteTable, Source, Target, event_location
from relay.core.errors import ConfigError, Problem
from relay.core.units import format_duration, format_size


@dataclass(frozen=True)
class CheckResult:
    """What `relay check PATH` found: the table when valid, problems, and warnings."""

    path: str
    table: RouteTable | None
    problems: tuple[Problem, ...]
    warnings: tuple[Problem, ...]  # includes `unset`
    unset: tuple[Problem, ...] = ()  # unset variables, when allowed (otherwise problems)
    raw: Mapping[str, Any] = field(default_factory=dict)  # the TOML document, for variable names

    @property
    def ok(self) -> bool:
        """Whether relay would start with this file."""
        return not self.problems


def check_file(path: str, env: Mapping[str, str], require_env: bool = True) -> CheckResult:
    """Validate routes.toml at `path`; missing variables are warnings when not `require_env`."""
    try:
        table = load_routes(path, env)
        strict: list[Problem] = []
    except ConfigError as exc:
        table, strict = None, exc.problems
    soft: list[Problem] = []
    if table is None and not require_env:
        try:
            table = load_routes(path, env, require_env=False)
            lax: list[Problem] = []
        except ConfigError as exc:
            lax = exc.problems
        # What only the strict load complains about is exactly the missing variables.
        soft = [p for p in strict if p not in lax]
        strict = lax
    raw = _raw_document(path) if table is not None else {}
    warnings = soft + (lint(table, raw) if table is not None else [])
    return CheckResult(
        path=path,
        table=table,
        problems=tuple(sort_problems(strict)),
        warnings=tuple(sort_problems(warnings)),
        unset=tuple(sort_problems(soft)),
        raw=raw,
    )


def _raw_document(path: str) -> Mapping[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def lint(table: RouteTable, raw: Mapping[str, Any] | None = None) -> list[Problem]:
    """Things that work but are probably not meant: unused names, unauthenticated sources."""
    raw = raw or {}
    warnings: list[Problem] = []

    def warn(where: str, message: str) -> None:
        warnings.append(Problem(table.path, where, "", message))

    used_sources = {r.source for r in table.routes}
    used_targets = {t for r in table.routes for t in r.targets}
    for name, source in table.sources.items():
        if name not in used_sources:
            warn(f"sources.{name}", "no route takes events from it: they are recorded as unrouted")
        names_token = bool(_var_name(raw, "sources", name, "token"))
        if source.token is None and source.secret is None and not names_token:
            warn(
                f"sources.{name}",
                "no token_env: anyone who can reach the relay can post events as this source",
            )
    for name, target in table.targets.items():
        if name not in used_targets:
            warn(f"targets.{name}", "no route sends events to it")
        parts = urlsplit(target.url)
        if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
            warn(f"targets.{name}", "plain http to a remote host: use https")
    return warnings + filter_warnings(table, raw)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _var_name(raw: Mapping[str, Any], kind: str, name: str, key: str) -> str | None:
    """The environment variable a table's `key_env` or `key = "${VAR}"` names, if any."""
    data = raw.get(kind, {}).get(name, {}) if isinstance(raw.get(kind), Mapping) else {}
    if not isinstance(data, Mapping):
        return None
    by_env, direct = data.get(f"{key}_env"), data.get(key)
    if isinstance(by_env, str) and by_env:
        return by_env
    if isinstance(direct, str) and direct.startswith("${") and direct.endswith("}"):
        return direct[2:-1]
    return None


def _shown_var(result: CheckResult, kind: str, name: str, key: str) -> str | None:
    var = _var_name(result.raw, kind, name, key)
    if var is None:
        return None
    missing = result.table is not None and var in result.table.missing_env
    return f"${var}" + (" (not set)" if missing else "")


def show_url(url: str) -> str:
    """A target URL for display: the query may carry a downstream app's key, so it is hidden."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="...")) if parts.query else url


def _source_summary(result: CheckResult, source: Source) -> dict[str, Any]:
    assert result.table is not None
    table = result.table
    token = _shown_var(result, "sources", source.name, "token")
    return {
        "kind": source.kind,
        "event": event_location(source),
        "methods": list(source.methods),
        "path": f"/hooks/{source.name}" + (f"/<{token.split()[0]}>" if token else ""),
        "token": token,
        "secret": _shown_var(result, "sources", source.name, "secret"),
        "max_body": format_size(source.max_body),
        "dedupe": (
            {"key": list(source.dedupe.key), "window": format_duration(source.dedupe.window)}
            if source.dedupe
            else None
        ),
        "spool": source.spool,
        "routes": [_route_json(r) for r in table.routes_of(source.name)],
        "reaches": list(table.reachable(source.name)),
    }


def _target_summary(result: CheckResult, target: Target) -> dict[str, Any]:
    assert result.table is not None
    fed_by = dict.fromkeys(r.source for r in result.table.routes if target.name in r.targets)
    return {
        "url": show_url(target.url),
        "timeout": format_duration(target.timeout),
        "signing": _shown_var(result, "targets", target.name, "signing_secret"),
        "keys": len(target.signing_secrets),
        "retry": {
            "attempts": target.retry.attempts,
            "first": format_duration(target.retry.first),
            "max": format_duration(target.retry.max),
        },
        "headers": [name for name, _ in target.headers],
        "body": target.body,
        "pause_on_gone": target.pause_on_gone,
        "rate": target.rate.text if target.rate is not None else None,
        "concurrency": target.concurrency,
        "order": target.order.text if target.order is not None else None,
        "enrich": target.enrich,
        "fed_by": list(fed_by),
    }


def control_text(target: Target) -> str | None:
    """`rate 10/s (one start every 100ms); concurrency 4; FIFO per body:memberId`, or None."""
    parts = []
    if target.rate is not None:
        parts.append(
            f"rate {target.rate.text} (one start every {format_duration(target.rate.interval)})"
        )
    if target.concurrency is not None:
        parts.append(
            "serial (concurrency 1)"
            if target.concurrency == 1
            else f"concurrency {target.concurrency}"
        )
    if target.order is not None:
        whole = target.order.field is None
        parts.append("FIFO for the whole target" if whole else f"FIFO per {target.order.text}")
    return "; ".join(parts) or None


def _route_json(route: Route) -> dict[str, Any]:
    return {
        "events": list(route.events),
        "targets": list(route.targets),
        "filter": route.filter.to_dict() if route.filter is not None else None,
    }


def result_json(result: CheckResult) -> dict[str, Any]:
    """The machine-readable form of a check (`--json`)."""

    def problems(items: Sequence[Problem]) -> list[dict[str, str]]:
        return [
            {"file": p.file, "table": p.table, "key": p.key, "message": p.message, "text": str(p)}
            for p in items
        ]

    out: dict[str, Any] = {
        "ok": result.ok,
        "path": result.path,
        "problems": problems(result.problems),
        "warnings": problems(result.warnings),
    }
    if result.table is not None and result.ok:
        table = result.table
        out["sources"] = {n: _source_summary(result, s) for n, s in table.sources.items()}
        out["targets"] = {n: _target_summary(result, t) for n, t in table.targets.items()}
        out["routes"] = [{"source": r.source, **_route_json(r)} for r in table.routes]
    return out


def render_check(result: CheckResult) -> str:
    """The human report of a check."""
    lines: list[str] = []
    if not result.ok:
        lines.extend(str(p) for p in result.problems)
        lines.extend(f"warning: {p}" for p in result.warnings)
        count = len(result.problems)
        lines.append(
            f"{result.path}: {count} problem{'s' if count != 1 else ''}; relay would not start"
        )
        return "\n".join(lines) + "\n"
    assert result.table is not None
    table = result.table
    lines.append(
        f"{result.path}: OK: {_plural(len(table.sources), 'source')}, "
        f"{_plural(len(table.targets), 'target')}, {_plural(len(table.routes), 'route')}"
    )
    for source in table.sources.values():
        lines.extend(_render_source(result, source))
    for target in table.targets.values():
        lines.extend(_render_target(result, target))
    if result.warnings:
        lines.append("")
        lines.extend(f"warning: {p}" for p in result.warnings)
    return "\n".join(lines) + "\n"


def _render_source(result: CheckResult, source: Source) -> list[str]:
    info = _source_summary(result, source)
    lines = [
        "",
        f"source {source.name} ({source.kind})",
        f"  url      {'|'.join(source.methods)} {info['path']}",
        f"  event    {info['event']}",
    ]
    auth = []
    if info["token"]:
        auth.append(f"path token from {info['token']}")
    if info["secret"]:
        auth.append(f"ms-signature keyed by {info['secret']}")
    lines.append(f"  auth     {', '.join(auth) or 'none'}")
    extras = [f"max body {info['max_body']}"]
    if source.dedupe:
        extras.append(f"dedupe on {', '.join(source.dedupe.key)} for {info['dedupe']['window']}")
    if source.spool:
        extras.append("spools to disk while Redis is down")
    lines.append(f"  intake   {'; '.join(extras)}")
    routes = result.table.routes_of(source.name) if result.table is not None else ()
    lines.extend(f"  route    {route_text(route)}" for route in routes)
    lines.append(f"  reaches  {', '.join(info['reaches']) or 'nothing (unrouted)'}")
    return lines


def _render_target(result: CheckResult, target: Target) -> list[str]:
    info = _target_summary(result, target)
    signing = info["signing"]
    retry = info["retry"]
    lines = [
        "",
        f"target {target.name}",
        f"  url      {info['url']}",
        f"  signing  Standard Webhooks, key from {signing}" if signing else "  signing  unsigned",
        f"  delivery timeout {info['timeout']}; {retry['attempts']} attempts, "
        f"backoff from {retry['first']} up to {retry['max']}"
        + ("; a 410 pauses it" if target.pause_on_gone else ""),
    ]
    if info["headers"] or target.body != "original":
        lines.append(
            f"  extra    headers: {', '.join(info['headers']) or 'none'}; body: {target.body}"
        )
    control = control_text(target)
    if control is not None:
        lines.append(f"  control  {control}")
    if target.enrich:
        lines.append(
            f"  enrich   {target.enrich}: course and program completions as JSON with their API "
            "record"
        )
    lines.append(f"  fed by   {', '.join(info['fed_by']) or 'no source'}")
    return lines


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"
