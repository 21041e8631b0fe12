"""Route filters (relay.config.filters): field syntax, values, glob semantics, routing with them.

The matcher is the one `RouteTable.match` (the receiver) and `RouteTable.explain` (`relay check`)
both run; tests/test_check_filters.py drives it through `relay check`, and
tests/test_filters_e2e.py through a real `relay serve`.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from relay.config.filters import (
    NO_FIELDS,
    Absent,
    EventFields,
    FieldFilter,
    Filter,
    Scope,
    Unmatched,
    compile_filter,
    parse_field,
    scalar_text,
)
from relay.config.loading import parse_routes
from relay.config.model import Route, RouteTable
from relay.core.errors import ConfigError
from relay.receiver.extract import dedupe_value, lookup_path, parse_request

#: Glob characters, a few ordinary ones, and the case pair that tells case-sensitivity apart.
GLOB_CHARS = "aAb.-*?[]!"
patterns = st.text(alphabet=GLOB_CHARS, max_size=6)
values = st.text(alphabet="aAb.-*?[]!", max_size=8)


def json_fields(document: Any, **headers: str) -> EventFields:
    return EventFields(document, False, CIMultiDict(headers))


def one(field: str, *patterns: str) -> FieldFilter:
    return FieldFilter(parse_field(field), patterns)


# --- field syntax ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "scope", "name"),
    [
        ("body:course.id", Scope.BODY, "course.id"),
        ("body:items.0.type", Scope.BODY, "items.0.type"),
        ("body:event", Scope.BODY, "event"),
        ("header:X-Tenant", Scope.HEADER, "x-tenant"),
    ],
)
def test_parse_field(text: str, scope: Scope, name: str) -> None:
    ref = parse_field(text)
    assert (ref.text, ref.scope, ref.name) == (text, scope, name)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("course.id", "write 'body:<field path>' or 'header:<name>'"),
        ("query:x", "write 'body:<field path>' or 'header:<name>'"),
        ("Body:x", "write 'body:<field path>' or 'header:<name>'"),
        ("body:", "the field path is empty"),
        ("body:a..b", "'a..b' has an empty part"),
        ("body:.a", "'.a' has an empty part"),
        ("body:courseId|programId", "for dedupe keys only"),
        ("header:", "'' is not a header name"),
        ("header:x tenant", "'x tenant' is not a header name"),
    ],
)
def test_parse_field_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("|", r"\|").replace(".", r"\.")):
        parse_field(text)


# --- values --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("42", "42"),
        ("", ""),
        (42, "42"),
        (-7, "-7"),
        (1.5, "1.5"),
        (1000.0, "1000.0"),
        (True, "true"),
        (False, "false"),
        (None, Absent.NULL),
        ({"a": 1}, Absent.NOT_SCALAR),
        ([1], Absent.NOT_SCALAR),
    ],
)
def test_scalar_text(value: Any, text: str | Absent) -> None:
    assert scalar_text(value) == text


DOC = {"course": {"id": 42, "name": "Intro", "tags": ["a", "b"], "none": None}, "ok": True}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("body:course.id", "42"),
        ("body:course.name", "Intro"),
        ("body:course.tags.1", "b"),
        ("body:course.tags.2", Absent.MISSING),
        ("body:course.tags", Absent.NOT_SCALAR),
        ("body:course", Absent.NOT_SCALAR),
        ("body:course.none", Absent.NULL),
        ("body:course.nope", Absent.MISSING),
        ("body:course.id.deeper", Absent.MISSING),
        ("body:ok", "true"),
        ("header:x-tenant", "acme"),
        ("header:X-TENANT", "acme"),  # header names are case-insensitive
        ("header:x-other", Absent.MISSING),
    ],
)
def test_read_json_and_headers(field: str, value: str | Absent) -> None:
    assert parse_field(field).read(json_fields(DOC, **{"X-Tenant": "acme"})) == value


def test_read_form_fields_by_literal_name() -> None:
    form = EventFields({"course.id": "7", "courseId": ""}, True, {})
    assert parse_field("body:course.id").read(form) == "7"  # a form field's name, dots and all
    assert parse_field("body:courseId").read(form) == ""  # present, empty
    assert parse_field("body:course").read(form) == Absent.MISSING


def test_read_without_a_body_document_is_missing() -> None:
    assert parse_field("body:a").read(NO_FIELDS) == Absent.MISSING
    assert parse_field("header:a").read(NO_FIELDS) == Absent.MISSING


def test_body_paths_are_the_dedupe_paths() -> None:
    """The dedupe key and the filter read the same field by the same name."""
    table = parse_routes(
        '[sources.s]\nkind = "json"\ndedupe = { key = ["body:course.tags.0"] }\n',
        "routes.toml",
        {},
    )
    body = json.dumps({"event": "e", **DOC}).encode()
    [parsed] = parse_request(table.sources["s"], "application/json", {}, body)
    assert parsed.dedupe_value == "a"
    assert parse_field("body:course.tags.0").read(parsed.fields) == "a"
    assert lookup_path(DOC, "course.tags.0") == "a"
    assert dedupe_value(table.sources["s"], DOC, {}) == "a"


# --- globs -------------------------------------------------------------------------------------


@given(pattern=patterns, value=values)
@settings(max_examples=500)
def test_one_pattern_means_fnmatchcase(pattern: str, value: str) -> None:
    assert one("body:x", pattern).accepts(value) == fnmatch.fnmatchcase(value, pattern)


@given(listed=st.lists(patterns, min_size=1, max_size=4, unique=True), value=values)
@settings(max_examples=300)
def test_a_list_matches_when_any_pattern_does(listed: list[str], value: str) -> None:
    expected = any(fnmatch.fnmatchcase(value, p) for p in listed)
    assert one("body:x", *listed).accepts(value) == expected


@given(listed=st.lists(patterns, min_size=1, max_size=4), absent=st.sampled_from(list(Absent)))
def test_an_absent_value_matches_no_pattern(listed: list[str], absent: Absent) -> None:
    assert not one("body:x", *listed, "*").accepts(absent)


def test_globs_are_case_sensitive_and_star_needs_a_value() -> None:
    tenant = one("header:x-tenant", "acme", "ac*")
    assert tenant.accepts("acme")
    assert tenant.accepts("acorn")
    assert not tenant.accepts("ACME")
    star = one("body:x", "*")
    assert star.accepts("")
    assert not star.accepts(Absent.MISSING)
    assert one("body:x", "[*]").accepts("*")  # a glob character in brackets is literal
    assert not one("body:x", "[*]").accepts("a")


# --- filters -----------------------------------------------------------------------------------


def test_every_field_must_match_and_the_first_failure_is_named() -> None:
    spec = {"body:course.id": ("42", "7*"), "header:x-tenant": ("acme",)}
    route_filter = compile_filter(spec)
    assert route_filter.matches(json_fields(DOC, **{"x-tenant": "acme"}))
    assert route_filter.first_failure(json_fields(DOC, **{"x-tenant": "acme"})) is None
    assert route_filter.first_failure(json_fields(DOC)) == Unmatched(
        "header:x-tenant", Absent.MISSING, ("acme",)
    )
    other = {"course": {"id": 9}}
    assert route_filter.first_failure(json_fields(other)) == Unmatched(
        "body:course.id", "9", ("42", "7*")
    )
    assert route_filter.to_dict() == {"body:course.id": ["42", "7*"], "header:x-tenant": ["acme"]}


@pytest.mark.parametrize(
    ("failure", "text"),
    [
        (Unmatched("body:a", "9", ("42", "7*")), 'body:a is "9", not one of "42", "7*"'),
        (Unmatched("body:a", Absent.MISSING, ("x",)), 'body:a is missing, not one of "x"'),
        (Unmatched("body:a", Absent.NULL, ("x",)), 'body:a is null, not one of "x"'),
        (Unmatched("body:a", 'say "hi"', ("*",)), 'body:a is "say \\"hi\\"", not one of "*"'),
    ],
)
def test_unmatched_describe(failure: Unmatched, text: str) -> None:
    assert failure.describe() == text


# --- routes.toml ---------------------------------------------------------------------------------

HEAD = """
[sources.shop]
kind = "json"

[targets.a]
url = "https://a.example/hook"

[targets.b]
url = "https://b.example/hook"
"""


def table_of(routes: str) -> RouteTable:
    return parse_routes(HEAD + routes, "routes.toml", {})


def problems_of(routes: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        table_of(routes)
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize(
    "written",
    [
        'filter = { "body:course.id" = ["42", "7*"], "header:x-tenant" = "acme" }',
        '[routes.filter]\n"body:course.id" = ["42", "7*"]\n"header:x-tenant" = "acme"',
        'filter."body:course.id" = ["42", "7*"]\nfilter."header:x-tenant" = ["acme"]',
    ],
)
def test_filter_loads_in_every_toml_spelling(written: str) -> None:
    table = table_of(f'[[routes]]\nsource = "shop"\ntargets = ["a"]\n{written}\n')
    [route] = table.routes
    assert route.filter is not None
    assert route.filter.to_dict() == {"body:course.id": ["42", "7*"], "header:x-tenant": ["acme"]}


def test_a_route_without_filter_has_none() -> None:
    [route] = table_of('[[routes]]\nsource = "shop"\ntargets = ["a"]\n').routes
    assert route.filter is None


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("filter = {}", "[routes[0].filter] is empty: name at least one field"),
        ('filter = "body:x"', "[routes[0].filter] must be a table of field = glob patterns"),
        (
            'filter = { "course.id" = "42" }',
            "[routes[0].filter.\"course.id\"] write 'body:<field path>' or 'header:<name>'",
        ),
        ('filter = { "body:a..b" = "1" }', "[routes[0].filter.\"body:a..b\"] 'a..b' has an empty"),
        ('filter = { "header:a b" = "1" }', "[routes[0].filter.\"header:a b\"] 'a b' is not a"),
        ('filter = { "body:x" = 42 }', '[routes[0].filter."body:x"] must be a glob pattern or'),
        ('filter = { "body:x" = [42] }', '[routes[0].filter."body:x"] patterns are strings: write'),
        ('filter = { "body:x" = [true] }', 'patterns are strings: write true as "true"'),
        ('filter = { "body:x" = [["a"]] }', "patterns are strings, not tables or lists"),
        ('filter = { "body:x" = [] }', '[routes[0].filter."body:x"] is an empty list'),
        ('filter = { "body:x" = ["a", "a"] }', "[routes[0].filter.\"body:x\"] 'a' is listed more"),
        ('filter = { "body:x" = { a = "1" } }', "must be a glob pattern or a list of them"),
    ],
)
def test_bad_filters_are_problems_naming_file_table_and_key(written: str, problem: str) -> None:
    found = problems_of(f'[[routes]]\nsource = "shop"\ntargets = ["a"]\n{written}\n')
    assert any(p.startswith("routes.toml: ") and problem in p for p in found), found


def test_every_bad_field_is_reported_at_once() -> None:
    found = problems_of(
        '[[routes]]\nsource = "shop"\ntargets = ["a"]\n'
        'filter = { "nope" = "1", "body:x" = [1], "body:y" = "ok" }\n'
    )
    assert len(found) == 2, found


def test_an_unknown_route_key_still_names_filter() -> None:
    found = problems_of('[[routes]]\nsource = "shop"\ntargets = ["a"]\nfiltre = {}\n')
    assert found == ["routes.toml: [routes[0].filtre] unknown key 'filtre'; did you mean 'filter'?"]


# --- routing with filters ---------------------------------------------------------------------

ROUTES = """
[[routes]]
source = "shop"
events = ["order.*"]
targets = ["a"]
filter = { "body:course.id" = ["42", "7*"], "header:x-tenant" = "acme" }

[[routes]]
source = "shop"
events = ["order.*"]
targets = ["b"]
"""


def test_match_applies_filters_per_event_and_the_memo_keeps_no_event() -> None:
    table = table_of(ROUTES)
    taken = json_fields({"course": {"id": 71}}, **{"x-tenant": "acme"})
    refused = json_fields({"course": {"id": 71}}, **{"x-tenant": "other"})
    for _ in range(2):  # the second round answers from the memo
        assert table.match("shop", "order.paid", taken) == ("a", "b")
        assert table.match("shop", "order.paid", refused) == ("b",)
        assert table.match("shop", "order.paid") == ("b",)  # no fields: every one missing
    assert table.match("shop", "user.created", taken) == ()


def test_a_table_without_filters_memoizes_the_plain_answer() -> None:
    table = table_of('[[routes]]\nsource = "shop"\nevents = ["order.*"]\ntargets = ["a", "b"]\n')
    assert table.match("shop", "order.paid", json_fields({})) == ("a", "b")
    assert table._memo[("shop", "order.paid")] == ("a", "b")  # a tuple: no filter runs


def test_explain_agrees_with_match() -> None:
    table = table_of(ROUTES)
    refused = json_fields({"course": {"id": "9"}}, **{"x-tenant": "acme"})
    verdicts = table.explain("shop", "order.paid", refused)
    assert [(v.index, v.matched) for v in verdicts] == [(0, False), (1, True)]
    assert verdicts[0].unmatched == Unmatched("body:course.id", "9", ("42", "7*"))
    assert table.explain("shop", "user.created", refused)[0].event_matched is False
    assert table.explain("shop", None, refused)[1].matched is False


# --- the matcher against a reference, with any routes and events (Hypothesis) -------------------

FIELD_NAMES = ("a", "b", "c")
field_values = st.one_of(
    st.text(alphabet="xyXY*?[]", max_size=3),
    st.integers(-3, 80),
    st.booleans(),
    st.none(),
)
documents = st.dictionaries(st.sampled_from(FIELD_NAMES), field_values, max_size=3)
header_values = st.dictionaries(
    st.sampled_from(("x-tenant", "x-kind")), st.text(alphabet="xyXY", max_size=3), max_size=2
)
filter_specs = st.dictionaries(
    st.sampled_from([f"body:{n}" for n in FIELD_NAMES] + ["header:x-tenant", "header:X-Kind"]),
    st.lists(st.text(alphabet="xyXY*?[]0123456789", max_size=3), min_size=1, max_size=3),
    max_size=3,
)
route_lists = st.lists(
    st.tuples(
        st.sampled_from(("order.*", "*", "user.*")),
        st.lists(st.sampled_from(("t1", "t2", "t3")), min_size=1, max_size=3, unique=True),
        filter_specs,
    ),
    max_size=5,
)


def reference(
    routes: list[tuple[str, list[str], dict[str, list[str]]]],
    event_type: str,
    document: dict[str, Any],
    headers: dict[str, str],
) -> tuple[str, ...]:
    """What a filtered route means, written the obvious way with fnmatchcase."""

    def value(field: str) -> str | None:
        scope, _, name = field.partition(":")
        if scope == "header":
            return headers.get(name.lower())
        found = document.get(name)
        if found is None or isinstance(found, list | dict):
            return None
        return json.dumps(found) if isinstance(found, bool) else str(found)

    found: list[str] = []
    for events, targets, spec in routes:
        if not fnmatch.fnmatchcase(event_type, events):
            continue
        ok = True
        for field, listed in spec.items():
            seen = value(field)
            if seen is None or not any(fnmatch.fnmatchcase(seen, p) for p in set(listed)):
                ok = False
        if ok:
            found += [t for t in targets if t not in found]
    return tuple(found)


@given(
    routes=route_lists,
    events=st.lists(st.tuples(documents, header_values), min_size=1, max_size=4),
    event_type=st.sampled_from(("order.paid", "user.created")),
)
@settings(max_examples=300)
def test_match_is_the_reference_event_after_event(
    routes: list[tuple[str, list[str], dict[str, list[str]]]],
    events: list[tuple[dict[str, Any], dict[str, str]]],
    event_type: str,
) -> None:
    table = RouteTable(
        "routes.toml",
        {},
        {},
        tuple(
            Route("s", (ev,), tuple(t), compile_filter({k: tuple(set(v)) for k, v in spec.items()}))
            if spec
            else Route("s", (ev,), tuple(t))
            for ev, t, spec in routes
        ),
    )
    # Several events of the same type through one table: the memo must not carry one event's
    # answer over to the next.
    for document, headers in events:
        fields = json_fields(document, **headers)
        expected = reference(routes, event_type, document, headers)
        assert table.match("s", event_type, fields) == expected
        matched = [v.route.targets for v in table.explain("s", event_type, fields) if v.matched]
        assert tuple(dict.fromkeys(t for ts in matched for t in ts)) == expected


def test_filter_is_not_built_without_fields() -> None:
    with pytest.raises(ValueError, match="write 'body"):
        compile_filter({"nope": ("x",)})
    assert Filter(()).matches(NO_FIELDS)  # vacuous: loading refuses an empty filter


def test_split_aspnet_events_are_filtered_on_their_own_notification() -> None:
    """Each event of a multi-notification request is filtered on the body it is delivered with."""
    table = parse_routes(
        '[sources.l]\nkind = "aspnet"\nsecret_env = "L_SECRET"\n'
        '[targets.a]\nurl = "https://a.example/"\n'
        '[[routes]]\nsource = "l"\ntargets = ["a"]\n'
        'filter = { "body:Notifications.0.CourseId" = "7*", "body:Id" = "abc" }\n',
        "routes.toml",
        {"L_SECRET": "0123456789abcdef0123456789abcdef"},
    )
    body = json.dumps(
        {
            "Id": "abc",
            "Notifications": [
                {"Action": "CourseCompleted", "CourseId": 71},
                {"Action": "CourseCompleted", "CourseId": 9},
            ],
        }
    ).encode()
    parts = parse_request(table.sources["l"], "application/json", {}, body)
    assert [table.match("l", p.type, p.fields) for p in parts] == [("a",), ()]
    # The whole request's other fields are there for every event.
    assert [parse_field("body:Id").read(p.fields) for p in parts] == ["abc", "abc"]
