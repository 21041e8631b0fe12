"""Route filters in `relay check`: validation, the summary, and the dry run's per-route verdicts.

The properties run `relay check`'s own dry run (relay.cli.check_dry_run.dry_run: the receiver's
`accept()` for the targets, `RouteTable.explain` for the verdicts) on tables loaded from
routes.toml text, so what they hold for is what `relay check` prints and what the receiver does.
"""

from __future__ import annotations

import fnmatch
import glob
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from relay.cli.check_dry_run import DryEvent, dry_run
from relay.config.filters import Absent, scalar_text
from relay.config.loading import parse_routes
from relay.config.model import RouteTable
from relay.store.reconcile import Kind, Membership
from tests.support.check_cli import run_check
from worker.fellow.plan import Change
from worker.fellow.synth import synthesize

ROUTES = """
[sources.shop]
kind = "json"
event = "type"

[sources.fellow]
kind = "form"

[targets.lms]
url = "https://lms.example/hook"

[targets.crm]
url = "https://crm.example/hook"

[[routes]]
source = "shop"
events = ["course.*"]
targets = ["lms"]
filter = { "body:course.id" = ["42", "7*"], "header:x-tenant" = "acme" }

[[routes]]
source = "shop"
events = ["course.*"]
targets = ["crm"]

[[routes]]
source = "fellow"
events = ["COURSEMEMBER_*"]
targets = ["lms"]
filter = { "body:courseId" = "7" }
"""


def write(tmp_path: Path, text: str, name: str = "routes.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def dry(tmp_path: Path, body: str, *extra: str, source: str = "shop") -> tuple[int, str]:
    path = write(tmp_path, ROUTES)
    sample = write(tmp_path, body, "sample")
    return run_check(path, "--source", source, "--body", sample, *extra)


# --- the summary and validation ----------------------------------------------------------------


def test_the_summary_shows_each_filter(tmp_path: Path) -> None:
    code, out = run_check(write(tmp_path, ROUTES))
    assert code == 0, out
    condition = 'body:course.id is "42" or "7*" and header:x-tenant is "acme"'
    assert f"  route    course.* -> lms  if {condition}\n" in out
    assert "  route    course.* -> crm\n" in out


def test_the_json_summary_has_each_filter(tmp_path: Path) -> None:
    code, out = run_check(write(tmp_path, ROUTES), "--json")
    assert code == 0
    routes = json.loads(out)["routes"]
    assert routes[0]["filter"] == {"body:course.id": ["42", "7*"], "header:x-tenant": ["acme"]}
    assert routes[1]["filter"] is None
    assert json.loads(out)["sources"]["fellow"]["routes"][0]["filter"] == {"body:courseId": ["7"]}


def test_bad_filters_fail_the_check_with_file_table_and_key(tmp_path: Path) -> None:
    broken = ROUTES.replace(
        '{ "body:course.id" = ["42", "7*"], "header:x-tenant" = "acme" }',
        '{ "course.id" = "42", "header:x-tenant" = [7] }',
    ).replace('filter = { "body:courseId" = "7" }', "filter = {}")
    path = write(tmp_path, broken)
    code, out = run_check(path)
    assert code == 1
    assert out.splitlines() == [
        f"{path}: [routes[0].filter.\"course.id\"] write 'body:<field path>' or "
        "'header:<name>', e.g. \"body:course.id\"",
        f'{path}: [routes[0].filter."header:x-tenant"] patterns are strings: write 7 as "7"',
        f"{path}: [routes[2].filter] is empty: name at least one field, or leave the filter out",
        f"{path}: 3 problems; relay would not start",
    ]


def test_a_header_filter_on_a_reconciled_source_is_a_warning(tmp_path: Path) -> None:
    text = ROUTES.replace(
        '[sources.fellow]\nkind = "form"\n',
        '[sources.fellow]\nkind = "form"\n[sources.fellow.reconcile]\n'
        'api = "https://academy.example.com"\napi_key_env = "FELLOW_API_KEY"\n',
    ).replace('{ "body:courseId" = "7" }', '{ "body:courseId" = "7", "header:x-a" = "1" }')
    path = write(tmp_path, text)
    code, out = run_check(path, "--allow-missing-env")
    assert code == 0, out
    assert (
        f'warning: {path}: [routes[2].filter."header:x-a"] events relay reconciles carry no '
        "provider headers: this route never takes them\n"
    ) in out


# --- the dry run -------------------------------------------------------------------------------


def test_dry_run_names_the_routes_matched_and_the_field_that_failed(tmp_path: Path) -> None:
    body = '{"type": "course.completed", "course": {"id": 9}}'
    code, out = dry(tmp_path, body, "--header", "X-Tenant: acme")
    assert code == 0
    assert out.endswith(
        "event 1: course.completed\n"
        "  targets  crm\n"
        '  routes[0]  not matched  -> lms: body:course.id is "9", not one of "42", "7*"\n'
        "  routes[1]  matched      -> crm\n"
    )


def test_dry_run_says_missing_for_a_field_the_event_lacks(tmp_path: Path) -> None:
    code, out = dry(tmp_path, '{"type": "course.completed", "course": {"id": 71}}')
    assert code == 0
    assert '-> lms: header:x-tenant is missing, not one of "acme"\n' in out
    code, out = dry(tmp_path, '{"type": "x"}')
    assert "  routes[0]  not matched  -> lms: the event type is none of course.*\n" in out


def test_dry_run_of_a_matching_event(tmp_path: Path) -> None:
    body = '{"type": "course.completed", "course": {"id": "71"}}'
    code, out = dry(tmp_path, body, "--header", "x-tenant:acme")
    assert code == 0
    assert "  targets  lms, crm\n  routes[0]  matched      -> lms\n" in out


def test_dry_run_json_has_each_verdict(tmp_path: Path) -> None:
    code, out = dry(tmp_path, '{"type": "course.completed", "course": {"id": null}}', "--json")
    assert code == 0
    [event] = json.loads(out)["events"]
    assert event["targets"] == ["crm"]
    assert event["routes"] == [
        {
            "route": 0,
            "targets": ["lms"],
            "matched": False,
            "event_matched": True,
            "failed": {
                "field": "body:course.id",
                "value": None,
                "absent": "null",
                "patterns": ["42", "7*"],
            },
        },
        {"route": 1, "targets": ["crm"], "matched": True, "event_matched": True, "failed": None},
    ]


def test_dry_run_form_fields_by_name(tmp_path: Path) -> None:
    code, out = dry(tmp_path, "event=COURSEMEMBER_CREATED&courseId=7", source="fellow")
    assert code == 0
    assert "  targets  lms\n  routes[2]  matched      -> lms\n" in out
    _, out = dry(tmp_path, "event=COURSEMEMBER_CREATED&courseId=70", source="fellow")
    assert '  routes[2]  not matched  -> lms: body:courseId is "70", not one of "7"\n' in out


def test_reconciled_events_are_filtered_on_their_form_fields() -> None:
    table = parse_routes(ROUTES, "routes.toml", {})
    source = table.sources["fellow"]
    for course, expected in (("7", ("lms",)), ("8", ())):
        change = Change(Membership(Kind.COURSE, course, "m1"), "CREATED")
        assert synthesize(table, source, change, 0.0).targets == expected


# --- properties: a filter made of an event's own values; one value changed ----------------------

KEYS = st.text(alphabet="abcxyz", min_size=1, max_size=3)
#: Any text but control characters (TOML strings take them only escaped) and surrogates.
TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=6)
SCALARS = st.one_of(
    TEXT,
    st.integers(-(10**6), 10**6),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)
DOCUMENTS = st.dictionaries(
    KEYS,
    st.recursive(
        SCALARS, lambda inner: st.dictionaries(KEYS, inner, min_size=1, max_size=3), max_leaves=6
    ),
    min_size=1,
    max_size=3,
)
HEADERS = st.dictionaries(
    st.sampled_from(("x-tenant", "x-kind", "x-region")),
    st.text(alphabet="abcABC-_. *?[", min_size=1, max_size=6).map(str.strip).filter(bool),
    max_size=3,
)


def leaves(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every scalar's dotted path and value."""
    found: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            found.update(leaves(value, f"{prefix}{key}."))
        else:
            found[f"{prefix}{key}"] = value
    return found


def table_with(filter_spec: dict[str, list[str]]) -> RouteTable:
    """The shop source with one route filtered on `filter_spec` (written as TOML) and one not."""
    rows = ", ".join(
        f"{json.dumps(k)} = {json.dumps(v, ensure_ascii=False)}" for k, v in filter_spec.items()
    )
    text = (
        '[sources.shop]\nkind = "json"\nevent = "__type"\n'
        '[targets.filtered]\nurl = "https://f.example/"\n'
        '[targets.always]\nurl = "https://a.example/"\n'
        '[[routes]]\nsource = "shop"\ntargets = ["filtered"]\n'
        f"filter = {{ {rows} }}\n"
        '[[routes]]\nsource = "shop"\ntargets = ["always"]\n'
    )
    return parse_routes(text, "routes.toml", {})


def own_patterns(value: str, draw: st.DrawFn) -> list[str]:
    """Patterns that match `value`: itself escaped, and maybe a wildcard one, among others."""
    exact = glob.escape(value)
    extra = draw(st.sampled_from(["*", exact[:1] + "*", "[!]]*", "nope-*"]))
    listed = [exact] + ([extra] if extra != exact else [])
    return draw(st.permutations(listed))


@st.composite
def events_with_filters(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, str], dict[str, list]]:
    document = draw(DOCUMENTS)
    headers = draw(HEADERS)
    fields = {f"body:{p}": scalar_text(v) for p, v in leaves(document).items()}
    fields.update({f"header:{n}": v for n, v in headers.items()})
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=4, unique=True))
    spec = {name: own_patterns(fields[name], draw) for name in chosen}
    return document, headers, spec


def run(table: RouteTable, document: dict[str, Any], headers: dict[str, str]) -> DryEvent:
    body = json.dumps({**document, "__type": "thing.done"}).encode()
    outcome = dry_run(table, "shop", body, headers)
    assert outcome.status == 202, outcome.message
    [event] = outcome.events
    matched = [v.route.targets for v in event.routes if v.matched]
    # What check says of each route adds up to the targets the receiver stores.
    assert event.targets == tuple(dict.fromkeys(t for ts in matched for t in ts))
    return event


@given(case=events_with_filters())
@settings(max_examples=200, deadline=None)
def test_a_filter_made_of_the_events_own_values_always_matches(
    case: tuple[dict[str, Any], dict[str, str], dict[str, list[str]]],
) -> None:
    document, headers, spec = case
    event = run(table_with(spec), document, headers)
    assert event.targets == ("filtered", "always")
    assert event.routes[0].matched


@given(case=events_with_filters(), data=st.data())
@settings(max_examples=200, deadline=None)
def test_changing_one_filtered_field_outside_every_pattern_unmatches_and_is_named(
    case: tuple[dict[str, Any], dict[str, str], dict[str, list[str]]], data: st.DataObject
) -> None:
    document, headers, spec = case
    field = data.draw(st.sampled_from(sorted(spec)))
    outside = data.draw(TEXT)
    # Only the patterns the new value misses are kept: the event's own (escaped) value is one of
    # them unless the value did not change, which is no change.
    kept = [p for p in spec[field] if not fnmatch.fnmatchcase(outside, p)]
    assume(kept)
    spec = {**spec, field: kept}
    scope, _, name = field.partition(":")
    changed_headers = dict(headers)
    changed_document = json.loads(json.dumps(document))
    if scope == "header":
        changed_headers[name] = outside
    else:
        *path, last = name.split(".")
        node = changed_document
        for part in path:
            node = node[part]
        node[last] = outside
    event = run(table_with(spec), changed_document, changed_headers)
    assert event.targets == ("always",)
    unmatched = event.routes[0].unmatched
    assert unmatched is not None
    assert (unmatched.field, unmatched.value) == (field, outside)
    # The same event with that field removed: "missing", even for "*".
    if scope == "header":
        del changed_headers[name]
        event = run(table_with({field: ["*"]}), changed_document, changed_headers)
        assert event.routes[0].unmatched is not None
        assert event.routes[0].unmatched.value is Absent.MISSING


def test_form_bodies_take_filters_by_field_name(tmp_path: Path) -> None:
    table = parse_routes(ROUTES, "routes.toml", {})
    body = urlencode({"event": "COURSEMEMBER_CREATED", "courseId": "7"}).encode()
    [event] = dry_run(table, "fellow", body, {}).events
    assert event.targets == ("lms",)
