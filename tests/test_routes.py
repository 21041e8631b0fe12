"""routes.toml validation: every kind of mistake gives a precise, located, sorted problem."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from relay.config.fields import sort_problems
from relay.config.loading import load_routes, parse_routes
from relay.config.model import Dedupe, Route, RouteTable
from relay.config.targets import url_problem
from relay.core import constants
from relay.core.errors import ConfigError, Problem

TOKEN = "tok-0123456789abcdefXYZ"
LEARN_SECRET = "123456789012345678901234567890123456789012345678"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ENV = {"TOKEN": TOKEN, "LEARN_SECRET": LEARN_SECRET, "WHSEC": WHSEC}

BASE = """
[sources.fellow]
kind = "form"
token_env = "TOKEN"

[targets.crm]
url = "https://crm.example.com/hooks"
"""


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    """Every problem parse_routes reports for `text`, as printed lines."""
    with pytest.raises(ConfigError) as info:
        parse_routes(text, "routes.toml", ENV if env is None else env)
    return [str(p) for p in info.value.problems]


def one_problem(text: str, env: dict[str, str] | None = None) -> str:
    found = problems_of(text, env)
    assert len(found) == 1, found
    return found[0]


def ok(text: str, env: dict[str, str] | None = None) -> RouteTable:
    return parse_routes(text, "routes.toml", ENV if env is None else env)


# --- a valid file -------------------------------------------------------------------------------


def test_valid_file_loads_into_frozen_values() -> None:
    table = ok(
        BASE
        + """
[sources.learn365]
kind = "aspnet"
secret_env = "LEARN_SECRET"

[sources.strigo]
kind = "resthooks"
event = "X-Event-Type"
token = "${TOKEN}"

[targets.crm2]
url = "http://127.0.0.1:9/x?a=1"
timeout = "2500ms"
signing_secret = "${WHSEC}"
retry = { attempts = 3, first = "1s", max = "1m" }
headers = { "X-Api-Key" = "${TOKEN}", "x-tenant" = "acme" }
body = "json"
pause_on_gone = true

[[routes]]
source = "fellow"
events = ["COURSEMEMBER_*"]
targets = ["crm", "crm2"]

[[routes]]
source = "strigo"
targets = ["crm2"]
"""
    )
    fellow = table.sources["fellow"]
    assert fellow.kind == "form"
    assert fellow.event == "event"
    assert fellow.token is not None
    assert fellow.token.matches(TOKEN)
    assert fellow.token.name == "TOKEN"
    assert fellow.dedupe is None
    learn = table.sources["learn365"]
    assert learn.secret is not None
    assert learn.secret.reveal() == LEARN_SECRET
    assert learn.dedupe == Dedupe(key=("body:Id",), window=24 * 3600.0)
    assert table.sources["strigo"].event == "x-event-type"  # header names are stored lower-case
    crm2 = table.targets["crm2"]
    assert crm2.timeout == 2.5
    assert crm2.retry.attempts == 3
    assert (crm2.retry.first, crm2.retry.max) == (1.0, 60.0)
    assert [name for name, _ in crm2.headers] == ["x-api-key", "x-tenant"]
    assert crm2.headers[0][1].reveal() == TOKEN
    assert crm2.signing_secrets[0].key_bytes() == base64.b64decode(WHSEC[6:])
    assert crm2.body == "json"
    assert crm2.pause_on_gone is True
    crm = table.targets["crm"]
    assert crm.timeout == constants.DEFAULT_TIMEOUT
    assert crm.signing_secrets == ()
    assert table.routes[1].events == ("*",)  # events defaults to every event
    assert table.match("fellow", "COURSEMEMBER_CREATED") == ("crm", "crm2")
    assert table.match("strigo", "anything") == ("crm2",)
    assert table.missing_env == ()


def test_tables_cannot_be_mutated() -> None:
    table = ok(BASE)
    with pytest.raises(TypeError):
        table.sources["x"] = table.sources["fellow"]  # type: ignore[index]


def test_matches_are_remembered_for_a_bounded_number_of_event_types(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("relay.config.model.MATCH_MEMO", 3)
    table = RouteTable(
        path="routes.toml",
        sources={},
        targets={},
        routes=(
            Route(source="s", events=("a.*",), targets=("t1",)),
            Route(source="s", events=("*",), targets=("t2", "t1")),
        ),
    )
    # Hostile senders may send any number of distinct types: answers stay right past the bound.
    for n in range(10):
        assert table.match("s", f"a.{n}") == ("t1", "t2")
        assert table.match("s", f"b.{n}") == ("t2", "t1")
        assert table.match("other", f"a.{n}") == ()
    assert table.match("s", "a.0") == ("t1", "t2")  # remembered
    assert len(table._memo) == 3


def test_route_built_directly_still_matches() -> None:
    route = Route(source="s", events=("a.*",), targets=("t",))
    assert route.matches("a.b")
    assert not route.matches("b.a")


# --- unknown keys and did-you-mean ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            BASE.replace('kind = "form"', 'kind = "form"\ntoken_evn = "TOKEN"'),
            "routes.toml: [sources.fellow.token_evn] unknown key 'token_evn'; "
            "did you mean 'token_env'?",
        ),
        (
            BASE + 'timout = "5s"\n',
            "routes.toml: [targets.crm.timout] unknown key 'timout'; did you mean 'timeout'?",
        ),
        (
            BASE + '[[routes]]\nsource = "fellow"\ntargets = ["crm"]\nevent = ["x"]\n',
            "routes.toml: [routes[0].event] unknown key 'event'; did you mean 'events'?",
        ),
        (
            BASE + "retry = { attempts = 3, frist = '1s' }\n",
            "routes.toml: [targets.crm.retry.frist] unknown key 'frist'; did you mean 'first'?",
        ),
        (
            BASE + '[source.x]\nkind = "json"\n',
            "routes.toml: [source] unknown key 'source'; did you mean 'sources'?",
        ),
        (
            BASE + "zzz = 1\n",
            "routes.toml: [targets.crm.zzz] unknown key 'zzz'",
        ),
    ],
)
def test_unknown_keys_are_named_with_a_suggestion(text: str, expected: str) -> None:
    assert one_problem(text) == expected


def test_unknown_kind_suggests_the_closest() -> None:
    text = BASE.replace('kind = "form"', 'kind = "fomr"')
    assert one_problem(text).startswith(
        "routes.toml: [sources.fellow.kind] unknown kind 'fomr' (one of: json, form,"
    )
    assert one_problem(text).endswith("did you mean 'form'?")


def test_kind_that_is_not_a_string_is_a_problem_not_a_crash() -> None:
    text = BASE.replace('kind = "form"', 'kind = ["form"]')
    assert "[sources.fellow.kind] unknown kind ['form']" in one_problem(text)


def test_missing_kind() -> None:
    text = BASE.replace('kind = "form"\n', "")
    assert one_problem(text).startswith("routes.toml: [sources.fellow.kind] missing; one of: json")


# --- routes naming missing sources and targets --------------------------------------------------


def test_route_naming_a_missing_target_suggests_one() -> None:
    text = BASE + '[[routes]]\nsource = "fellow"\ntargets = ["crn"]\n'
    assert one_problem(text) == (
        "routes.toml: [routes[0].targets] no target named 'crn' in [targets]; did you mean 'crm'?"
    )


def test_route_naming_a_missing_source_suggests_one() -> None:
    text = BASE + '[[routes]]\nsource = "felow"\ntargets = ["crm"]\n'
    assert one_problem(text) == (
        "routes.toml: [routes[0].source] no source named 'felow' in [sources]; "
        "did you mean 'fellow'?"
    )


def test_route_without_source_or_targets() -> None:
    text = BASE + "[[routes]]\nevents = ['*']\n"
    assert problems_of(text) == [
        "routes.toml: [routes[0].source] missing; the source this route takes events from",
        "routes.toml: [routes[0].targets] missing; the targets these events go to",
    ]


def test_route_source_of_the_wrong_type() -> None:
    text = BASE + "[[routes]]\nsource = 3\ntargets = ['crm']\n"
    assert one_problem(text) == (
        "routes.toml: [routes[0].source] must be the name of a source, as a string"
    )


def test_duplicate_route_targets_and_events() -> None:
    text = BASE + "[[routes]]\nsource = 'fellow'\nevents = ['a', 'a']\ntargets = ['crm', 'crm']\n"
    assert problems_of(text) == [
        "routes.toml: [routes[0].events] 'a' is listed more than once",
        "routes.toml: [routes[0].targets] 'crm' is listed more than once",
    ]


def test_empty_events_and_targets_lists() -> None:
    text = BASE + "[[routes]]\nsource = 'fellow'\nevents = []\ntargets = []\n"
    assert problems_of(text) == [
        "routes.toml: [routes[0].events] is empty; list at least one",
        "routes.toml: [routes[0].targets] is empty; list at least one",
    ]


def test_blank_and_padded_event_patterns() -> None:
    text = BASE + "[[routes]]\nsource = 'fellow'\nevents = ['', ' x']\ntargets = ['crm']\n"
    assert problems_of(text) == [
        "routes.toml: [routes[0].events] ' x': event types never start or end with spaces",
        'routes.toml: [routes[0].events] an empty pattern matches nothing; "*" matches every event',
    ]


def test_routes_written_as_a_single_table() -> None:
    text = BASE + "[routes]\nsource = 'fellow'\n"
    assert one_problem(text) == "routes.toml: [routes] must be an array of tables: write [[routes]]"


def test_a_route_pattern_an_aspnet_source_never_sends_is_fine() -> None:
    table = ok(
        BASE
        + "[sources.l]\nkind = 'aspnet'\nsecret_env = 'LEARN_SECRET'\n"
        + "[[routes]]\nsource = 'l'\nevents = ['no.such.action']\ntargets = ['crm']\n"
    )
    assert table.match("l", "CourseCompleted") == ()


# --- URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://x.example/a", "must start with http:// or https://"),
        ("https:///nohost", "has no host"),
        ("https://user:pw@x.example/", "carries credentials"),
        ("https://x.example:99999/", "is not a valid URL"),
        ("https://x.example/a#part", "has a '#fragment'"),
        ("https://x.example/a#", "has a '#fragment'"),
        ("https://x.exa mple/", "holds spaces or control characters"),
        (" https://x.example/", "holds spaces or control characters"),
        ("crm.example.com/hooks", "must start with http:// or https://"),
    ],
)
def test_bad_urls(url: str, fragment: str) -> None:
    problem = url_problem(url)
    assert problem is not None
    assert fragment in problem
    text = BASE.replace("https://crm.example.com/hooks", url)
    assert one_problem(text).startswith("routes.toml: [targets.crm.url] ")


def test_good_urls() -> None:
    for url in ("https://x.example/a?b=c", "http://127.0.0.1:9001/crm", "http://[::1]:80/"):
        assert url_problem(url) is None


def test_missing_url_and_wrong_type() -> None:
    assert one_problem(BASE.replace('url = "https://crm.example.com/hooks"', "")) == (
        "routes.toml: [targets.crm.url] missing; the address events are delivered to"
    )
    assert "must be a string" in one_problem(BASE.replace('"https://crm.example.com/hooks"', "1"))


# --- environment variables -----------------------------------------------------------------------


def test_missing_environment_variable_names_the_key_and_variable() -> None:
    assert one_problem(BASE, env={}) == (
        "routes.toml: [sources.fellow.token_env] environment variable TOKEN is not set "
        "(needed for the path token)"
    )


def test_missing_variable_in_dollar_form_names_that_key() -> None:
    text = BASE.replace('token_env = "TOKEN"', 'token = "${TOKEN}"')
    assert one_problem(text, env={}).startswith("routes.toml: [sources.fellow.token] environment")


def test_empty_environment_variable() -> None:
    assert "environment variable TOKEN is empty" in one_problem(BASE, env={"TOKEN": "  "})


def test_literal_secret_in_the_file_is_refused() -> None:
    text = BASE.replace('token_env = "TOKEN"', 'token = "literal-secret-value-123"')
    problem = one_problem(text)
    assert problem.startswith("routes.toml: [sources.fellow.token] the path token must name")
    assert "literal-secret-value-123" not in problem


def test_env_key_written_with_dollar_braces() -> None:
    text = BASE.replace('token_env = "TOKEN"', 'token_env = "${TOKEN}"')
    assert one_problem(text) == (
        'routes.toml: [sources.fellow.token_env] write the bare variable name: token_env = "TOKEN"'
    )


def test_env_key_that_is_not_a_variable_name() -> None:
    text = BASE.replace('token_env = "TOKEN"', 'token_env = "MY-TOKEN"')
    assert "'MY-TOKEN' is not a valid environment variable name" in one_problem(text)


def test_both_forms_at_once() -> None:
    text = BASE.replace('token_env = "TOKEN"', 'token_env = "TOKEN"\ntoken = "${TOKEN}"')
    assert one_problem(text) == (
        "routes.toml: [sources.fellow.token] give either 'token' or 'token_env', not both"
    )


def test_short_token_is_a_problem_without_showing_it() -> None:
    problem = one_problem(BASE, env={"TOKEN": "short-tok"})
    assert problem.startswith(
        "routes.toml: [sources.fellow.token_env] the value of TOKEN is 9 characters: too short"
    )
    assert "short-tok" not in problem


def test_token_must_be_one_path_segment() -> None:
    problem = one_problem(BASE, env={"TOKEN": "abc/def0123456789xyz"})
    assert "must be one URL path segment" in problem
    assert "abc/def" not in problem


def test_token_with_several_words() -> None:
    problem = one_problem(BASE, env={"TOKEN": f"{TOKEN} {TOKEN}x"})
    assert "holds several words; a source takes one" in problem


def test_aspnet_source_needs_a_secret_and_no_event_key() -> None:
    text = BASE + "[sources.l]\nkind = 'aspnet'\nevent = 'Action'\n"
    assert problems_of(text) == [
        "routes.toml: [sources.l.event] aspnet sources always take the type from "
        "Notifications[].Action",
        "routes.toml: [sources.l.secret_env] aspnet sources need the signing secret (ms-signature)",
    ]


def test_secret_on_a_kind_that_never_verifies_it() -> None:
    text = BASE.replace('token_env = "TOKEN"', 'token_env = "TOKEN"\nsecret_env = "LEARN_SECRET"')
    assert one_problem(text) == (
        "routes.toml: [sources.fellow.secret_env] only aspnet sources verify a signature; "
        "use token_env for form"
    )


def test_short_aspnet_secret() -> None:
    text = BASE + "[sources.l]\nkind = 'aspnet'\nsecret_env = 'LEARN_SECRET'\n"
    problem = one_problem(text, env={"TOKEN": TOKEN, "LEARN_SECRET": "abc"})
    assert "[sources.l.secret_env] the value of LEARN_SECRET is 3 characters" in problem


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("not-a-whsec-secret-at-all", "must be a Standard Webhooks secret ('whsec_<base64>')"),
        ("whsec_!!!notbase64", "is not valid base64 after 'whsec_'"),
        ("whsec_" + base64.b64encode(b"short").decode(), "is 5 bytes: too short"),
    ],
)
def test_bad_signing_secrets(value: str, fragment: str) -> None:
    text = BASE + 'signing_secret_env = "WHSEC"\n'
    problem = one_problem(text, env={**ENV, "WHSEC": value})
    assert problem.startswith("routes.toml: [targets.crm.signing_secret_env] ")
    assert fragment in problem
    assert value not in problem


def test_signing_secrets_rotate_with_spaces() -> None:
    other = "whsec_" + base64.b64encode(b"k" * 32).decode()
    table = ok(BASE + 'signing_secret_env = "WHSEC"\n', env={**ENV, "WHSEC": f"{WHSEC} {other}"})
    assert len(table.targets["crm"].signing_secrets) == 2


def test_header_problems() -> None:
    text = BASE + (
        'headers = { "bad header" = "x", "webhook-id" = "x", "x-relay-source" = "y", '
        '"x-n" = 3, "x-e" = "${UNSET_VAR}" }\n'
    )
    assert problems_of(text) == [
        "routes.toml: [targets.crm.headers.bad header] is not a valid header name",
        "routes.toml: [targets.crm.headers.webhook-id] is set by relay itself on every delivery",
        "routes.toml: [targets.crm.headers.x-e] environment variable UNSET_VAR is not set "
        "(needed for header x-e)",
        "routes.toml: [targets.crm.headers.x-n] must be a string",
        "routes.toml: [targets.crm.headers.x-relay-source] is set by relay itself on every "
        "delivery",
    ]


def test_header_value_with_a_line_break_from_the_environment() -> None:
    text = BASE + 'headers = { "x-key" = "${KEY}" }\n'
    problem = one_problem(text, env={**ENV, "KEY": "abc\r\nInjected: 1"})
    assert problem == "routes.toml: [targets.crm.headers.x-key] the value of KEY holds a line break"


def test_lenient_mode_lists_missing_variables_instead() -> None:
    text = BASE + 'signing_secret_env = "WHSEC"\n'
    table = parse_routes(text, "routes.toml", {}, require_env=False)
    assert table.missing_env == ("TOKEN", "WHSEC")
    assert table.sources["fellow"].token is None
    assert table.targets["crm"].signing_secrets == ()
    # Lenient is only about absent variables: a bad value is still a problem.
    with pytest.raises(ConfigError):
        parse_routes(text, "routes.toml", {"TOKEN": "short"}, require_env=False)


# --- values and units ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('timeout = "soon"', "[targets.crm.timeout] expected a duration like '5s'"),
        ("timeout = 0", "[targets.crm.timeout] the timeout must be more than 0 seconds"),
        ("timeout = inf", "[targets.crm.timeout] a duration must be a finite number"),
        ("retry = 5", "[targets.crm.retry] must be a table"),
        ("retry = { attempts = 0 }", "[targets.crm.retry.attempts] must be a whole number"),
        ("retry = { attempts = true }", "[targets.crm.retry.attempts] must be a whole number"),
        ('retry = { first = "1h", max = "1m" }', "[targets.crm.retry.first] the first delay"),
        ('retry = { first = "0s" }', "[targets.crm.retry.first] the first delay must be more"),
        ('body = "xml"', "[targets.crm.body] must be one of: original, json"),
        ('pause_on_gone = "yes"', "[targets.crm.pause_on_gone] must be true or false"),
    ],
)
def test_bad_target_values(line: str, expected: str) -> None:
    assert expected in one_problem(BASE + line + "\n")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('max_body = "huge"', "[sources.fellow.max_body] expected a size"),
        ("max_body = 0", "[sources.fellow.max_body] a size must be positive"),
        (
            'methods = ["GET"]',
            "[sources.fellow.methods] only POST and PUT can be accepted, not GET",
        ),
        ("methods = []", "[sources.fellow.methods] is empty"),
        ("spool = 1", "[sources.fellow.spool] must be true or false"),
        ('event = ""', "[sources.fellow.event] must be a non-empty string"),
        ("dedupe = true", "[sources.fellow.dedupe] must be a table like"),
        ("dedupe = { window = '1h' }", "[sources.fellow.dedupe.key] missing"),
        ("dedupe = { key = ['id'] }", "[sources.fellow.dedupe.key] 'id': write 'body:<field"),
        ("dedupe = { key = ['body:id'], window = 0 }", "[sources.fellow.dedupe.window] the window"),
        ("dedupe = { key = ['body:id'], size = 1 }", "[sources.fellow.dedupe.size] unknown key"),
    ],
)
def test_bad_source_values(line: str, expected: str) -> None:
    text = BASE.replace('kind = "form"', 'kind = "form"\n' + line)
    assert expected in one_problem(text)


def test_header_kind_needs_a_valid_header_name() -> None:
    text = BASE + "[sources.s]\nkind = 'header'\nevent = 'x event'\n"
    assert (
        one_problem(text) == "routes.toml: [sources.s.event] 'x event' is not a valid header name"
    )


def test_source_and_target_names() -> None:
    text = BASE + "[sources.'a:b']\nkind = 'json'\n[targets.'-x']\nurl = 'https://x.example/'\n"
    assert problems_of(text) == [
        "routes.toml: [sources.a:b] source names may hold letters, digits, '_', '-' and '.'",
        "routes.toml: [targets.-x] target names may hold letters, digits, '_', '-' and '.'",
    ]


def test_methods_are_upper_cased_and_deduplicated() -> None:
    table = ok(BASE.replace('kind = "form"', 'kind = "form"\nmethods = ["put", "PUT"]'))
    assert table.sources["fellow"].methods == ("PUT",)


def test_dedupe_header_names_are_lower_cased() -> None:
    line = "dedupe = { key = ['header:X-Request-Id', 'body:a.b'], window = '1h' }"
    table = ok(BASE.replace('kind = "form"', 'kind = "form"\n' + line))
    assert table.sources["fellow"].dedupe == Dedupe(("header:x-request-id", "body:a.b"), 3600.0)


def test_dedupe_false_turns_off_the_aspnet_default() -> None:
    table = ok("[sources.l]\nkind='aspnet'\nsecret_env='LEARN_SECRET'\ndedupe=false\n")
    assert table.sources["l"].dedupe is None


# --- many problems at once, sorted --------------------------------------------------


def test_every_problem_is_reported_sorted() -> None:
    text = """
[[routes]]
source = "nope"
targets = ["crm"]
[[routes]]
source = "fellow"
targets = ["x"]
[[routes]]
source = "fellow"
targets = ["crm"]
[[routes]]
[[routes]]
[[routes]]
[[routes]]
[[routes]]
[[routes]]
[[routes]]
[[routes]]
source = "fellow"
targets = ["zz"]

[targets.crm]
url = "ftp://x"

[sources.fellow]
kind = "form"
token_env = "UNSET"
"""
    with pytest.raises(ConfigError) as info:
        parse_routes(text, "routes.toml", ENV)
    found = info.value.problems
    assert str(found[0]).startswith("routes.toml: [routes[0].source] no source named 'nope'")
    # routes[0..10] in numeric order (10 after 9, not after 1), then sources, then targets.
    numbers = [int(p.table[7:-1]) for p in found if p.table.startswith("routes[")]
    assert numbers == sorted(numbers)
    assert numbers[-1] == 10
    assert [(p.table, p.key) for p in found[-2:]] == [
        ("sources.fellow", "token_env"),
        ("targets.crm", "url"),
    ]
    assert len(found) == 1 + 1 + 7 * 2 + 1 + 1 + 1  # routes[3..9] lack both keys
    assert str(info.value) == "\n".join(str(p) for p in found)


def test_sort_problems_is_natural_and_stable() -> None:
    ps = [
        Problem("f", "routes[10]", "a", "m"),
        Problem("f", "routes[2]", "b", "m"),
        Problem("f", "", "sources", "m"),
        Problem("f", "routes[2]", "a", "z"),
        Problem("f", "routes[2]", "a", "a"),
    ]
    assert [(p.table, p.key, p.message) for p in sort_problems(ps)] == [
        ("", "sources", "m"),
        ("routes[2]", "a", "a"),
        ("routes[2]", "a", "z"),
        ("routes[2]", "b", "m"),
        ("routes[10]", "a", "m"),
    ]


def test_not_toml() -> None:
    problem = one_problem("[sources.x\n")
    assert problem.startswith("routes.toml: not valid TOML: ")


def test_table_that_should_be_a_table() -> None:
    assert problems_of("sources = 1\n[targets]\ncrm = 'x'\n") == [
        "routes.toml: [sources] must be a table",
        "routes.toml: [targets.crm] must be a table",
    ]


def test_load_routes_reports_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_routes(path, {})
    assert [str(p) for p in info.value.problems] == [f"{path}: file not found"]


def test_load_routes_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(BASE, encoding="utf-8")
    assert load_routes(path, ENV).path == str(path)


def test_empty_file_is_valid_and_empty() -> None:
    table = ok("")
    assert (dict(table.sources), dict(table.targets), table.routes) == ({}, {}, ())


def test_problem_messages_never_contain_secret_values() -> None:
    secrets = {"TOKEN": "ab/" + "c" * 20, "LEARN_SECRET": "s" * 8, "WHSEC": "whsec_AAAA"}
    text = (
        BASE
        + "signing_secret_env = 'WHSEC'\nheaders = { 'x-k' = '${WHSEC}' }\n"
        + "[sources.l]\nkind = 'aspnet'\nsecret_env = 'LEARN_SECRET'\n"
    )
    found = problems_of(text, env=secrets)
    assert len(found) >= 3
    for line in found:
        for value in secrets.values():
            assert value not in line


@pytest.mark.parametrize(
    ("keys", "spool"),
    [
        ("", False),
        ("call_once = true", True),
        ("call_once = true\nspool = false", False),
        ("spool = true", True),
    ],
)
def test_call_once_sources_spool_by_default(keys: str, spool: bool) -> None:
    table = ok(f'[sources.s]\nkind = "form"\n{keys}\n')
    assert table.sources["s"].spool is spool
    assert table.sources["s"].call_once is ("call_once = true" in keys)


def test_call_once_must_be_a_boolean() -> None:
    assert "[sources.s.call_once] must be true or false" in one_problem(
        '[sources.s]\nkind = "form"\ncall_once = "yes"\n'
    )
