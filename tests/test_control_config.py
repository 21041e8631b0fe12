"""`rate`, `concurrency` and `order` of a target: parsed into values, mistakes located."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.config.control import (
    MAX_CONCURRENCY,
    TOLERANCE_MAX,
    TOLERANCE_MIN,
    Order,
    Rate,
    parse_order,
    parse_rate,
)
from relay.config.filters import EventFields
from relay.config.loading import parse_routes
from relay.config.model import RouteTable
from relay.core.errors import ConfigError
from tests.support.check_cli import run_check

BASE = """
[targets.crm]
url = "https://crm.example.com/hooks"
"""


def table_with(lines: str) -> RouteTable:
    return parse_routes(BASE + lines, "routes.toml", {})


def problems_of(lines: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        table_with(lines)
    return [str(p) for p in info.value.problems]


# --- parsed values ------------------------------------------------------------------------------


def test_targets_without_control_have_none() -> None:
    crm = table_with("").targets["crm"]
    assert (crm.rate, crm.concurrency, crm.order) == (None, None, None)


def test_all_three_settings_load() -> None:
    crm = table_with('rate = "10/s"\nconcurrency = 4\norder = "body:memberId"\n').targets["crm"]
    assert crm.rate == Rate(count=10, period=1.0, text="10/s")
    assert crm.concurrency == 4
    assert crm.order is not None
    assert crm.order.text == "body:memberId"


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [("10/s", 10, 1.0), ("600/m", 600, 60.0), ("1000/h", 1000, 3600.0), (" 5 / s ", 5, 1.0)],
)
def test_rates_per_second_minute_and_hour(text: str, count: int, period: float) -> None:
    rate = parse_rate(text)
    assert (rate.count, rate.period) == (count, period)
    assert rate.interval == period / count


def test_a_rate_spreads_its_starts_evenly() -> None:
    assert parse_rate("50/s").interval == pytest.approx(0.02)
    assert parse_rate("10/m").interval == pytest.approx(6.0)
    assert parse_rate("50/s").per_second == 50.0


@given(st.integers(1, 100_000), st.sampled_from(["s", "m", "h"]))
def test_tolerance_stays_within_its_bounds(count: int, unit: str) -> None:
    rate = parse_rate(f"{count}/{unit}")
    assert TOLERANCE_MIN <= rate.tolerance <= TOLERANCE_MAX
    # A slow rate never gets more than one start early: the tolerance is at most one interval
    # unless the interval is shorter than the smallest tolerance.
    assert rate.tolerance <= max(rate.interval, TOLERANCE_MIN)


def test_order_on_a_body_field_a_header_or_the_whole_target() -> None:
    assert parse_order("body:member.id").field is not None
    header = parse_order("header:X-Member")
    assert header.field is not None
    assert header.field.name == "x-member"
    assert parse_order("target") == Order(text="target", field=None)


# --- keys ---------------------------------------------------------------------------------------


def fields(document: object, headers: dict[str, str] | None = None) -> EventFields:
    return EventFields(document, False, MappingProxyType(headers or {}))


def test_the_key_is_a_short_digest_of_the_field_value() -> None:
    order = parse_order("body:memberId")
    key = order.key(fields({"memberId": 42}))
    assert key is not None
    assert len(key) == 16
    assert key == order.key(fields({"memberId": "42", "other": 1}))  # numbers read as text
    assert key != order.key(fields({"memberId": 43}))


def test_events_without_the_key_field_are_unordered() -> None:
    order = parse_order("body:memberId")
    for document in ({}, {"memberId": None}, {"memberId": ""}, {"memberId": {"a": 1}}, None):
        assert order.key(fields(document)) is None


def test_header_and_form_keys_read_like_dedupe() -> None:
    header = parse_order("header:x-member")
    assert header.key(fields(None, {"x-member": "7"})) == parse_order("body:m").key(
        fields({"m": "7"})
    )
    form = parse_order("body:memberId")
    form_fields = EventFields({"memberId": "7"}, True, MappingProxyType({}))
    assert form.key(form_fields) == header.key(fields(None, {"x-member": "7"}))


def test_the_whole_target_is_one_key() -> None:
    assert parse_order("target").key(fields(None)) == parse_order("target").key(fields({"a": 1}))


# --- mistakes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            'rate = "10/x"',
            '[targets.crm.rate] must be a count per second, minute or hour like "10/s"',
        ),
        ('rate = "0/s"', "[targets.crm.rate] the count must be from 1"),
        ("rate = 10", "[targets.crm.rate] must be a count per second"),
        ('rate = "ten/s"', "[targets.crm.rate] must be a count per second"),
        ("concurrency = 0", "[targets.crm.concurrency] must be from 1"),
        ("concurrency = -2", "[targets.crm.concurrency] must be from 1"),
        ('concurrency = "4"', "[targets.crm.concurrency] must be a whole number"),
        ("concurrency = true", "[targets.crm.concurrency] must be a whole number"),
        (f"concurrency = {MAX_CONCURRENCY + 1}", "[targets.crm.concurrency] must be from 1"),
        ('order = "memberId"', "[targets.crm.order] 'memberId': write 'body:<field path>'"),
        ('order = "body:"', "[targets.crm.order] 'body:': the field path is empty"),
        ('order = "body:a..b"', "has an empty part"),
        ('order = "header:bad name"', "is not a header name"),
        ('order = "body:a|b"', "is for dedupe keys only"),
        ("order = 1", "[targets.crm.order] must be a string"),
    ],
)
def test_mistakes_name_file_table_and_key(line: str, expected: str) -> None:
    found = problems_of(line + "\n")
    assert len(found) == 1, found
    assert found[0].startswith("routes.toml: ")
    assert expected in found[0], found[0]


def test_every_mistake_is_reported_together() -> None:
    found = problems_of('rate = "1/d"\nconcurrency = 0\norder = "nope"\n')
    assert [p.split("]")[0] for p in found] == [
        "routes.toml: [targets.crm.concurrency",
        "routes.toml: [targets.crm.order",
        "routes.toml: [targets.crm.rate",
    ]


def test_a_misspelt_key_gets_a_hint() -> None:
    (found,) = problems_of('ratee = "10/s"\n')
    assert "did you mean 'rate'?" in found


# --- relay check --------------------------------------------------------------------------------

CHECKED = """
[sources.shop]
kind = "json"

[targets.crm]
url = "https://crm.example.com/hooks"
rate = "10/s"
concurrency = 1
order = "body:memberId"

[targets.archive]
url = "https://archive.example.com/hooks"
concurrency = 4
order = "target"

[targets.plain]
url = "https://plain.example.com/hooks"

[[routes]]
source = "shop"
events = ["*"]
targets = ["crm", "archive", "plain"]
"""


def test_relay_check_shows_each_targets_delivery_control(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(CHECKED)
    code, out = run_check(str(path))
    assert code == 0, out
    assert (
        "  control  rate 10/s (one start every 100ms); serial (concurrency 1); "
        "FIFO per body:memberId"
    ) in out
    assert "  control  concurrency 4; FIFO for the whole target" in out
    assert out.count("  control  ") == 2  # none for a target without any
    code, out = run_check("--json", str(path))
    crm = orjson.loads(out)["targets"]["crm"]
    assert (crm["rate"], crm["concurrency"], crm["order"]) == ("10/s", 1, "body:memberId")


def test_relay_check_fails_on_a_bad_setting_naming_file_table_and_key(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(CHECKED.replace('rate = "10/s"', 'rate = "10/x"'))
    code, out = run_check(str(path))
    assert code != 0
    assert f"{path}: [targets.crm.rate] must be a count per second, minute or hour" in out
