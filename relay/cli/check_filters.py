"""Route filters in `relay check`: how a route's filter is shown, what a dry run says of each
route (taken, or the first field that failed), and the warnings filters earn.

The verdicts come from `RouteTable.explain`, which runs the same `Filter.failing` the
receiver's routing runs (relay.config.filters); this module only words them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from relay.config.filters import Absent, Scope, quoted
from relay.config.model import Route, RouteTable, RouteVerdict
from relay.core.errors import Problem
from relay.core.headers import RECONCILED_HEADER

__all__ = ["filter_warnings", "route_text", "verdict_json", "verdict_lines"]


def route_text(route: Route) -> str:
    """`COURSEMEMBER_* -> crm` and, with a filter, `if body:course.id is "42" or "7*"`."""
    text = f"{', '.join(route.events)} -> {', '.join(route.targets)}"
    if route.filter is None:
        return text
    conditions = [
        f"{one.ref.text} is {' or '.join(quoted(p) for p in one.patterns)}"
        for one in route.filter.fields
    ]
    return f"{text}  if {' and '.join(conditions)}"


def verdict_lines(verdicts: Sequence[RouteVerdict]) -> list[str]:
    """One line per route of the source: matched, or why not (the first field that failed)."""
    lines = []
    for verdict in verdicts:
        route = verdict.route
        head = f"  routes[{verdict.index}]  "
        targets = f"-> {', '.join(route.targets)}"
        if verdict.matched:
            lines.append(f"{head}matched      {targets}")
        elif verdict.unmatched is not None:
            lines.append(f"{head}not matched  {targets}: {verdict.unmatched.describe()}")
        else:
            events = ", ".join(route.events)
            lines.append(f"{head}not matched  {targets}: the event type is none of {events}")
    return lines


def verdict_json(verdict: RouteVerdict) -> dict[str, Any]:
    """A route's verdict for `--json`: `failed` names the field, its value (or why it has
    none: `absent` is "missing", "null" or "an object or array") and its patterns."""
    failed = None
    if verdict.unmatched is not None:
        value = verdict.unmatched.value
        failed = {
            "field": verdict.unmatched.field,
            "value": None if isinstance(value, Absent) else value,
            "absent": value.value if isinstance(value, Absent) else None,
            "patterns": list(verdict.unmatched.patterns),
        }
    return {
        "route": verdict.index,
        "targets": list(verdict.route.targets),
        "matched": verdict.matched,
        "event_matched": verdict.event_matched,
        "failed": failed,
    }


def filter_warnings(table: RouteTable, raw: Mapping[str, Any]) -> list[Problem]:
    """Filters that work but are probably not meant: a header filter on a reconciled source
    never takes the events relay rebuilds (they carry no provider headers)."""
    raw_sources = raw.get("sources")
    raw_sources = raw_sources if isinstance(raw_sources, Mapping) else {}
    warnings = []
    for index, route in enumerate(table.routes):
        source = table.sources.get(route.source)
        raw_source = raw_sources.get(route.source)
        # The raw file too: without its API key (--allow-missing-env) a source has no reconcile.
        reconciled = (source is not None and source.reconcile is not None) or (
            isinstance(raw_source, Mapping) and "reconcile" in raw_source
        )
        if route.filter is None or not reconciled:
            continue
        for one in route.filter.fields:
            if one.ref.scope is Scope.HEADER and one.ref.name != RECONCILED_HEADER:
                warnings.append(
                    Problem(
                        table.path,
                        f"routes[{index}].filter",
                        f'"{one.ref.text}"',
                        "events relay reconciles carry no provider headers: this route never "
                        "takes them",
                    )
                )
    return warnings
