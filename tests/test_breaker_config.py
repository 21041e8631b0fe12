"""`breaker = { failures = N, probe = "30s" }` in routes.toml: parsed, defaulted, and every
mistake reported by `relay check` with file, table and key."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from relay.cli import check
from relay.config.breaker import DEFAULT_FAILURES, DEFAULT_PROBE, Breaker
from relay.config.loading import parse_routes
from relay.core.errors import ConfigError

ROUTES = """
[sources.shop]
kind = "json"

[targets.crm]
url = "https://crm.example.com/hooks"
{breaker}

[[routes]]
source = "shop"
targets = ["crm"]
"""


def breaker_of(line: str) -> Breaker | None:
    table = parse_routes(ROUTES.format(breaker=line), "routes.toml", {})
    return table.targets["crm"].breaker


def problems_of(line: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_routes(ROUTES.format(breaker=line), "routes.toml", {})
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('breaker = { failures = 5, probe = "10s" }', Breaker(5, 10.0)),
        ('breaker = { failures = 1, probe = "1s" }', Breaker(1, 1.0)),
        ('breaker = { probe = "2m" }', Breaker(DEFAULT_FAILURES, 120.0)),
        ("breaker = { failures = 50 }", Breaker(50, DEFAULT_PROBE)),
        ("breaker = { probe = 45 }", Breaker(DEFAULT_FAILURES, 45.0)),
        ("breaker = {}", Breaker()),
        ("breaker = true", Breaker()),
        ("breaker = false", None),
        ("", None),
    ],
)
def test_breaker_tables_parse(line: str, expected: Breaker | None) -> None:
    assert breaker_of(line) == expected


def test_the_defaults_are_the_issues_example() -> None:
    assert Breaker() == Breaker(failures=20, probe=30.0)
    assert Breaker().describe() == "opens after 20 failed attempts in a row; probes every 30s"


def test_a_probe_shorter_than_the_timeout_waits_for_the_timeout() -> None:
    # A probe still waiting for its answer is never joined by a second one.
    assert Breaker(probe=5.0).probe_interval(timeout=10.0) == 10.0
    assert Breaker(probe=30.0).probe_interval(timeout=10.0) == 30.0


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            "breaker = 20",
            "[targets.crm.breaker] must be a table like "
            'breaker = { failures = 20, probe = "30s" } (or true for those defaults)',
        ),
        (
            'breaker = "on"',
            "[targets.crm.breaker] must be a table like",
        ),
        (
            "breaker = { failures = 0 }",
            "[targets.crm.breaker.failures] must be from 1 to 10000; got 0",
        ),
        (
            "breaker = { failures = 20000 }",
            "[targets.crm.breaker.failures] must be from 1 to 10000; got 20000",
        ),
        (
            'breaker = { failures = "20" }',
            "[targets.crm.breaker.failures] must be a whole number of failed attempts in a row",
        ),
        (
            "breaker = { failures = true }",
            "[targets.crm.breaker.failures] must be a whole number",
        ),
        (
            "breaker = { failures = 2.5 }",
            "[targets.crm.breaker.failures] must be a whole number",
        ),
        (
            'breaker = { probe = "soon" }',
            "[targets.crm.breaker.probe] expected a duration like '5s', '10m' or '10h', got 'soon'",
        ),
        (
            'breaker = { probe = "500ms" }',
            "[targets.crm.breaker.probe] must be from 1s to 24h; got 500ms",
        ),
        (
            'breaker = { probe = "2d" }',
            "[targets.crm.breaker.probe] must be from 1s to 24h; got 2d",
        ),
        (
            "breaker = { failure = 20 }",
            "[targets.crm.breaker.failure] unknown key 'failure'; did you mean 'failures'?",
        ),
    ],
)
def test_mistakes_name_file_table_and_key(line: str, problem: str) -> None:
    found = problems_of(line)
    assert any(p.startswith(f"routes.toml: {problem}") for p in found), found


def test_every_mistake_of_a_breaker_is_reported_together() -> None:
    found = problems_of('breaker = { failures = -1, probe = "0s", extra = 1 }')
    assert len(found) == 3, found
    assert {p.split("]")[0] for p in found} == {
        "routes.toml: [targets.crm.breaker.failures",
        "routes.toml: [targets.crm.breaker.probe",
        "routes.toml: [targets.crm.breaker.extra",
    }


def test_relay_check_fails_on_a_bad_breaker_and_passes_a_good_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def relay_check(line: str) -> tuple[int, str]:
        path = tmp_path / "routes.toml"
        path.write_text(ROUTES.format(breaker=line))
        parser = argparse.ArgumentParser(prog="relay check")
        check.add_arguments(parser)
        code = check.run(parser.parse_args([str(path)]))
        out = capsys.readouterr()
        return code, out.out + out.err

    code, out = relay_check('breaker = { failures = 0, probe = "30s" }')
    assert code == 1
    assert f"{tmp_path / 'routes.toml'}: [targets.crm.breaker.failures] must be from 1" in out
    assert "relay would not start" in out
    code, out = relay_check('breaker = { failures = 20, probe = "30s" }')
    assert code == 0, out
