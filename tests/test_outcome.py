"""Classification of attempt results into the next step (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.config.model import RetryPolicy
from relay.core import constants
from relay.core.states import DeliveryState
from relay.store.records import Outcome
from worker.backoff import backoff_cap, now_http_date
from worker.outcome import AttemptResult, next_step

POLICY = RetryPolicy(attempts=3, first=10.0, max=100.0)
NOW = 1_700_000_000.0


def result(status: int | None = None, error: str | None = None, retry_after: str | None = None):
    return AttemptResult(
        started_at=NOW, duration=0.01, status=status, error=error, retry_after=retry_after
    )


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    step = next_step(result(status), POLICY, 1, NOW)
    assert (step.state, step.outcome, step.delay) == (
        DeliveryState.DELIVERED,
        Outcome.DELIVERED,
        None,
    )


def test_2xx_on_the_last_attempt_is_still_delivered() -> None:
    assert next_step(result(200), POLICY, 3, NOW).state == DeliveryState.DELIVERED


def test_410_stops_at_once_even_with_attempts_left() -> None:
    step = next_step(result(410), POLICY, 1, NOW)
    assert (step.state, step.outcome, step.delay) == (DeliveryState.GONE, Outcome.GONE, None)
    assert "410" in step.reason


@pytest.mark.parametrize("status", [301, 302, 307, 308, 400, 401, 404, 409, 422, 500, 501, 418])
def test_other_statuses_retry_with_backoff(status: int) -> None:
    step = next_step(result(status), POLICY, 1, NOW, lambda lo, hi: hi)
    assert (step.state, step.outcome) == (DeliveryState.RETRYING, Outcome.RETRY)
    assert step.delay == backoff_cap(POLICY, 1)
    assert f"HTTP {status}" in step.reason


@pytest.mark.parametrize("error", ["timeout after 10s", "connection failed: Connection refused"])
def test_errors_retry(error: str) -> None:
    step = next_step(result(error=error), POLICY, 2, NOW, lambda lo, hi: hi)
    assert step.state == DeliveryState.RETRYING
    assert step.delay == backoff_cap(POLICY, 2)
    assert error in step.reason


def test_out_of_attempts_is_dead_with_the_last_error() -> None:
    step = next_step(result(500), POLICY, 3, NOW)
    assert (step.state, step.outcome, step.delay) == (DeliveryState.DEAD, Outcome.DEAD, None)
    assert "out of attempts (3)" in step.reason
    assert "HTTP 500" in step.reason


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_slow_down_honours_retry_after_seconds(status: int) -> None:
    step = next_step(result(status, retry_after="42"), POLICY, 1, NOW)
    assert step.state == DeliveryState.RETRYING
    assert step.delay == 42.0


def test_retry_after_as_http_date() -> None:
    step = next_step(result(429, retry_after=now_http_date(NOW + 30)), POLICY, 1, NOW)
    assert step.delay == pytest.approx(30.0)


def test_retry_after_is_capped() -> None:
    step = next_step(result(503, retry_after="999999999"), POLICY, 1, NOW)
    assert step.delay == constants.MAX_RETRY_AFTER


def test_retry_after_ignored_on_other_statuses() -> None:
    step = next_step(result(500, retry_after="42"), POLICY, 1, NOW, lambda lo, hi: hi)
    assert step.delay == backoff_cap(POLICY, 1)


def test_slow_down_without_retry_after_uses_backoff() -> None:
    step = next_step(result(429), POLICY, 1, NOW, lambda lo, hi: hi)
    assert step.delay == backoff_cap(POLICY, 1)


def test_slow_down_on_the_last_attempt_is_dead() -> None:
    assert next_step(result(429, retry_after="1"), POLICY, 3, NOW).state == DeliveryState.DEAD


@given(
    st.one_of(st.none(), st.integers(min_value=100, max_value=599)),
    st.integers(min_value=1, max_value=5),
)
def test_every_result_gets_a_consistent_step(status: int | None, attempt: int) -> None:
    err = None if status is not None else "connection failed"
    step = next_step(result(status, error=err), POLICY, attempt, NOW)
    assert (step.delay is not None) == (step.state == DeliveryState.RETRYING)
    if step.delay is not None:
        assert 0.0 <= step.delay <= constants.MAX_RETRY_AFTER
        assert attempt < POLICY.attempts
