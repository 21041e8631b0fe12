"""The retry schedule: caps non-decreasing and bounded, jitter in bounds, Retry-After parsing."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.config.model import RetryPolicy
from relay.core import constants
from worker.backoff import (
    FACTOR,
    backoff_cap,
    backoff_delay,
    format_seconds,
    now_http_date,
    parse_retry_after,
    schedule_table,
)

policies = st.builds(
    RetryPolicy,
    attempts=st.integers(min_value=1, max_value=100),
    first=st.floats(min_value=0.001, max_value=3600, allow_nan=False),
    max=st.floats(min_value=3600, max_value=7 * 86400, allow_nan=False),
)


@given(policies, st.integers(min_value=1, max_value=200))
def test_caps_never_decrease_and_never_exceed_max(policy: RetryPolicy, retry: int) -> None:
    assert backoff_cap(policy, retry) <= backoff_cap(policy, retry + 1)
    assert backoff_cap(policy, retry) <= policy.max


@given(policies, st.integers(min_value=1, max_value=200), st.integers(min_value=0))
def test_jittered_delay_stays_within_zero_and_cap(
    policy: RetryPolicy, retry: int, seed: int
) -> None:
    rng = random.Random(seed)
    delay = backoff_delay(policy, retry, rng.uniform)
    assert 0.0 <= delay <= backoff_cap(policy, retry)


@given(policies, st.integers(min_value=1, max_value=200))
def test_jitter_extremes_are_the_bounds(policy: RetryPolicy, retry: int) -> None:
    cap = backoff_cap(policy, retry)
    assert backoff_delay(policy, retry, lambda lo, hi: lo) == 0.0
    assert backoff_delay(policy, retry, lambda lo, hi: hi) == cap


def test_cap_formula_is_first_times_factor_power() -> None:
    policy = RetryPolicy(attempts=10, first=5.0, max=36000.0)
    assert [backoff_cap(policy, k) for k in range(1, 10)] == [
        5.0,
        20.0,
        80.0,
        320.0,
        1280.0,
        5120.0,
        20480.0,
        36000.0,
        36000.0,
    ]
    assert FACTOR == 4.0


def test_jitter_is_spread_over_the_whole_range() -> None:
    policy = RetryPolicy(attempts=10, first=10.0, max=100.0)
    rng = random.Random(7)
    delays = [backoff_delay(policy, 1, rng.uniform) for _ in range(2000)]
    assert min(delays) < 1.0
    assert max(delays) > 9.0


def test_default_schedule_spans_about_a_day() -> None:
    rows = schedule_table(RetryPolicy())
    assert len(rows) == constants.DEFAULT_ATTEMPTS - 1
    latest = rows[-1][2]
    assert 20 * 3600 < latest < 32 * 3600


def test_retry_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        backoff_cap(RetryPolicy(), 0)


def test_huge_retry_numbers_do_not_overflow() -> None:
    assert backoff_cap(RetryPolicy(), 10_000) == RetryPolicy().max


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        ("  7 ", 7.0),
        ("0", 0.0),
        ("99999999", constants.MAX_RETRY_AFTER),
        ("", None),
        (None, None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
    ],
)
def test_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=1_000_000.0) == expected


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(now_http_date(now + 90), now) == pytest.approx(90.0)
    assert parse_retry_after(now_http_date(now - 90), now) == 0.0
    assert parse_retry_after(now_http_date(now + 30 * 86400), now) == constants.MAX_RETRY_AFTER


@given(st.text(max_size=40))
def test_retry_after_never_raises_and_stays_bounded(header: str) -> None:
    value = parse_retry_after(header, now=1_700_000_000.0)
    assert value is None or 0.0 <= value <= constants.MAX_RETRY_AFTER


def test_format_seconds() -> None:
    assert [format_seconds(s) for s in (5, 80, 3600, 5 * 3600 + 20 * 60)] == [
        "5s",
        "1m20s",
        "1h",
        "5h20m",
    ]
