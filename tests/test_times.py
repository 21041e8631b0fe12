"""The one time format of every command and the status page, ages, and --since parsing."""

from __future__ import annotations

import pytest

from relay.core.times import format_age, format_time, parse_since

NOW = 1_790_000_000.0  # 2026-09-21T14:13:20Z


def test_format_time_is_iso_utc_with_milliseconds_and_z() -> None:
    assert format_time(NOW) == "2026-09-21T14:13:20.000Z"
    assert format_time(NOW + 0.351) == "2026-09-21T14:13:20.351Z"
    assert format_time(0.0) == "1970-01-01T00:00:00.000Z"
    assert format_time(None) == ""


def test_format_time_reads_back_through_parse_since() -> None:
    # A time copied from any command's output can be given to --since as it is.
    assert parse_since(format_time(NOW + 0.351), now=NOW + 9999) == NOW + 0.351


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-3, "0s"),
        (42, "42s"),
        (300, "5m"),
        (3600 * 3 + 720, "3h12m"),
        (86400 * 2 + 4 * 3600, "2d4h"),
    ],
)
def test_format_age(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", NOW - 7200),
        ("30m", NOW - 1800),
        ("7d", NOW - 7 * 86400),
        ("90", NOW - 90),
        ("2026-09-21T00:00:00Z", 1_789_948_800.0),
        ("2026-09-21T00:00:00", 1_789_948_800.0),  # no offset means UTC
        ("2026-09-21T02:00:00+02:00", 1_789_948_800.0),
        ("2026-09-21", 1_789_948_800.0),
        ("2026-09-21T00:00Z", 1_789_948_800.0),
    ],
)
def test_parse_since(text: str, expected: float) -> None:
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "2h ago", "", "-5m", "last tuesday"])
def test_parse_since_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected a time like '2h'.*ISO-8601"):
        parse_since(text, now=NOW)
