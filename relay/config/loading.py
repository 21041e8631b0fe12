"""routes.toml: the operator's file, loaded into frozen values (relay.config.model) and validated.

Every mistake is collected (not just the first) as a `Problem` naming file, table and key, so
`relay check` can list them all at once, sorted. Each table kind is read by a module of its own
(relay.config.sources, relay.config.targets); the routes and the whole file are read here.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from relay.config.fields import Collector, hint, repeated, sort_problems, string_list, table_of
from relay.config.filters import Filter, compile_filter, parse_field
from relay.config.model import ENRICHED_EVENTS, Route, RouteTable, Target, compile_route
from relay.config.sources import load_source
from relay.config.targets import load_target
from relay.core.errors import ConfigError, Problem

ROUTE_KEYS = ("source", "events", "targets", "filter")
_FILTER_EXAMPLE = '{ "body:course.id" = ["42", "7*"], "header:x-tenant" = "acme" }'
TOP_KEYS = ("sources", "targets", "routes")


def load_route(
    c: Collector, index: int, data: Any, sources: Mapping[str, Any], targets: Mapping[str, Any]
) -> Route | None:
    table = f"routes[{index}]"
    if not isinstance(data, Mapping):
        c.add(table, "", "each [[routes]] entry must be a table")
        return None
    ok = len(c.problems)
    c.unknown_keys(table, data, ROUTE_KEYS)
    source = data.get("source")
    if source is None:
        c.add(table, "source", "missing; the source this route takes events from")
    elif not isinstance(source, str):
        c.add(table, "source", "must be the name of a source, as a string")
    elif source not in sources:
        c.add(table, "source", f"no source named '{source}' in [sources]{hint(source, sources)}")
    events = string_list(c, table, "events", data.get("events", ["*"]))
    for pattern in events or ():
        if not pattern.strip():
            c.add(table, "events", 'an empty pattern matches nothing; "*" matches every event')
        elif pattern != pattern.strip():
            c.add(table, "events", f"{pattern!r}: event types never start or end with spaces")
    for pattern in repeated(events or ()):
        c.add(table, "events", f"'{pattern}' is listed more than once")
    if "targets" not in data:
        c.add(table, "targets", "missing; the targets these events go to")
        names = None
    else:
        names = string_list(c, table, "targets", data["targets"])
    for name in names or ():
        if name not in targets:
            c.add(table, "targets", f"no target named '{name}' in [targets]{hint(name, targets)}")
    for name in repeated(names or ()):
        c.add(table, "targets", f"'{name}' is listed more than once")
    route_filter = _load_filter(c, table, data["filter"]) if "filter" in data else None
    if len(c.problems) != ok or events is None or names is None or not isinstance(source, str):
        return None
    return compile_route(source, events, names, route_filter)


def _load_filter(c: Collector, table: str, value: Any) -> Filter | None:
    """`filter = { "body:PATH" = ["glob", ...], "header:NAME" = "glob" }`, every part checked."""
    if not isinstance(value, Mapping):
        c.add(table, "filter", f"must be a table of field = glob patterns, like {_FILTER_EXAMPLE}")
        return None
    if not value:
        c.add(table, "filter", "is empty: name at least one field, or leave the filter out")
        return None
    where = f"{table}.filter"
    spec: dict[str, tuple[str, ...]] = {}
    for name, patterns in value.items():
        key = json.dumps(name)  # quoted, as the key must be written in TOML: "body:course.id"
        try:
            parse_field(name)
        except ValueError as exc:
            c.add(where, key, str(exc))
            continue
        found = _filter_patterns(c, where, key, patterns)
        if found is not None:
            spec[name] = found
    if len(spec) != len(value):
        return None
    return compile_filter(spec)


def _filter_patterns(c: Collector, where: str, key: str, value: Any) -> tuple[str, ...] | None:
    """One field's glob patterns: a string or a non-empty list of strings, none repeated."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        c.add(where, key, 'must be a glob pattern or a list of them, like ["42", "7*"]')
        return None
    if not items:
        c.add(where, key, "is an empty list: it would match nothing; list at least one pattern")
        return None
    wrong = [item for item in items if not isinstance(item, str)]
    for item in wrong:
        if isinstance(item, bool | int | float):
            text = json.dumps(item)
            c.add(where, key, f'patterns are strings: write {text} as "{text}"')
        else:
            c.add(where, key, "patterns are strings, not tables or lists")
    for pattern in repeated(p for p in items if isinstance(p, str)):
        c.add(where, key, f"'{pattern}' is listed more than once")
    return None if wrong or len(set(items)) != len(items) else tuple(items)


def check_enrichment(
    c: Collector,
    raw_sources: Mapping[str, Any],
    targets: Mapping[str, Target],
    routes: list[Route | None],
) -> None:
    """A target with `enrich` may receive Fellow completions only from a source whose API relay
    can read: one with a [sources.NAME.reconcile] table, whose settings the fetch uses."""
    for index, route in enumerate(routes):
        if route is None:
            continue
        raw = raw_sources.get(route.source)
        if isinstance(raw, Mapping) and "reconcile" in raw:
            continue  # its own problems, if any, are reported with the table
        completions = [event for event in ENRICHED_EVENTS if route.matches(event)]
        for name in route.targets:
            target = targets.get(name)
            if not completions or target is None or target.enrich is None:
                continue
            c.add(
                f"targets.{name}",
                "enrich",
                f"routes[{index}] sends {' and '.join(completions)} of source '{route.source}' "
                f"to this target, but '{route.source}' has no [sources.{route.source}.reconcile] "
                f"table: the record is fetched with that table's API settings. Add one, or "
                f"route only other events of '{route.source}' here",
            )


def parse_routes(
    text: str, path: str, env: Mapping[str, str], *, require_env: bool = True
) -> RouteTable:
    """Validate the text of a routes.toml; raise ConfigError listing every problem, sorted.

    With `require_env=False` a variable missing from `env` is not a problem: the secret it would
    give is left out and the variable is listed in `RouteTable.missing_env`.
    """
    c = Collector(path, env, require_env)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(path, "", "", f"not valid TOML: {exc}")]) from exc
    c.unknown_keys("", doc, TOP_KEYS)
    raw_sources = table_of(c, "", "sources", doc.get("sources", {})) or {}
    raw_targets = table_of(c, "", "targets", doc.get("targets", {})) or {}
    raw_routes = doc.get("routes", [])
    if not isinstance(raw_routes, list):
        c.add("", "routes", "must be an array of tables: write [[routes]]")
        raw_routes = []

    def each(
        kind: str, raw: Mapping[str, Any], load: Callable[[Collector, str, Mapping[str, Any]], Any]
    ) -> dict[str, Any]:
        loaded = {}
        for name, data in raw.items():
            table = table_of(c, kind, name, data)
            if table is not None:
                value = load(c, name, table)
                if value is not None:
                    loaded[name] = value
        return loaded

    sources = each("sources", raw_sources, load_source)
    targets = each("targets", raw_targets, load_target)
    routes = [load_route(c, i, r, raw_sources, raw_targets) for i, r in enumerate(raw_routes)]
    check_enrichment(c, raw_sources, targets, routes)
    if c.problems:
        raise ConfigError(sort_problems(c.problems))
    return RouteTable(
        path=path,
        sources=MappingProxyType(sources),
        targets=MappingProxyType(targets),
        routes=tuple(r for r in routes if r is not None),
        missing_env=tuple(sorted(c.missing_env)),
    )


def load_routes(
    path: str | Path, env: Mapping[str, str], *, require_env: bool = True
) -> RouteTable:
    """Read and validate routes.toml at `path`; raise ConfigError listing every problem."""
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError([Problem(shown, "", "", "file not found")]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(shown, "", "", f"cannot be read: {exc}")]) from exc
    return parse_routes(text, shown, env, require_env=require_env)
