"""What to do after one delivery attempt: pure classification of a response or error.

Rules (Standard Webhooks conventions, https://www.standardwebhooks.com/):
- 2xx: delivered.
- 410 Gone: stop this delivery at once (state GONE, dead-lettered, logged at error level).
- 429, 503 (and 502, 504): slow down; a `Retry-After` (seconds or HTTP date, capped) replaces
  the backoff delay for the next attempt. So does the Retry-After of an attempt that failed
  before its POST (an enrichment fetch answered 429: worker.fellow.enrich).
- 3xx (redirects are not followed), any other status, timeouts, connection errors: retry with
  backoff; when the round's attempts are used up the delivery is dead-lettered.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from relay.config.model import RetryPolicy
from relay.store.records import DeliveryState, Outcome, delivered_reason
from worker.backoff import backoff_delay, parse_retry_after

#: Statuses that ask the sender to slow down: their Retry-After is honoured.
SLOW_DOWN = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class AttemptResult:
    """What one HTTP attempt produced: a status, or an error, and how long it took."""

    started_at: float  # Unix seconds
    duration: float  # seconds
    status: int | None = None
    error: str | None = None  # e.g. "timeout after 10s", "connection refused"
    response: str = ""  # first bytes of the response body, as text
    retry_after: str | None = None  # the raw header, when the target sent one


@dataclass(frozen=True)
class Step:
    """The decision after an attempt: the new state, the outcome, and the retry delay."""

    state: DeliveryState  # DELIVERED, RETRYING, DEAD or GONE
    outcome: Outcome  # DELIVERED, RETRY, DEAD or GONE
    delay: float | None  # seconds until the next attempt, when retrying
    reason: str


def describe(result: AttemptResult) -> str:
    """A short human description of an attempt's result."""
    if result.status is not None:
        return f"HTTP {result.status}"
    return result.error or "unknown error"


def is_success(status: int | None) -> bool:
    """Whether a status means delivered (any 2xx)."""
    return status is not None and 200 <= status < 300


def next_step(
    result: AttemptResult,
    policy: RetryPolicy,
    round_attempt: int,
    now: float,
    uniform: Callable[[float, float], float] = random.uniform,
) -> Step:
    """Classify an attempt (number `round_attempt` of the current round) and decide what follows."""
    status = result.status
    if is_success(status):
        return Step(DeliveryState.DELIVERED, Outcome.DELIVERED, None, delivered_reason(status))
    if status == 410:
        return Step(
            DeliveryState.GONE, Outcome.GONE, None, "target answered 410 Gone: delivery stopped"
        )
    what = describe(result)
    if round_attempt >= policy.attempts:
        reason = f"out of attempts ({policy.attempts}); last: {what}"
        return Step(DeliveryState.DEAD, Outcome.DEAD, None, reason)
    delay: float | None = None
    if status in SLOW_DOWN or status is None:
        delay = parse_retry_after(result.retry_after, now)
    if delay is None:
        delay = backoff_delay(policy, round_attempt, uniform)
    return Step(
        DeliveryState.RETRYING, Outcome.RETRY, delay, f"{what}; retry {round_attempt + 1} scheduled"
    )
