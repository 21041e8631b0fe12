"""The retry schedule: exponential backoff with full jitter, and `Retry-After` parsing.

Retry k (k = 1 after the first failed attempt) waits

    cap_k   = min(policy.max, policy.first * FACTOR ** (k - 1))
    delay_k = uniform(0, cap_k)                        ("full jitter")

The caps never decrease and never exceed `policy.max`; the jittered delay is always within
[0, cap_k]. FACTOR is 4 rather than 2 so that the defaults (10 attempts, 5 s, 10 h) span about a
day like the Standard Webhooks schedule: the caps add up to 27.6 h (the latest the last attempt
can come), the expected total is half that. With FACTOR 2 they would span only 43 minutes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from relay.config.model import RetryPolicy
from relay.core import constants

FACTOR = 4.0


def backoff_cap(policy: RetryPolicy, retry: int) -> float:
    """The largest delay before retry number `retry` (1-based), before jitter."""
    if retry < 1:
        raise ValueError("retries are numbered from 1")
    # Compare exponents before computing the power so huge retry numbers cannot overflow.
    if retry > 64:
        return policy.max
    return min(policy.max, policy.first * FACTOR ** (retry - 1))


def backoff_delay(
    policy: RetryPolicy, retry: int, uniform: Callable[[float, float], float] = random.uniform
) -> float:
    """The jittered delay before retry number `retry`: uniform in [0, backoff_cap]."""
    cap = backoff_cap(policy, retry)
    return min(cap, max(0.0, uniform(0.0, cap)))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` header (seconds or HTTP date), capped; None if absent.

    Bounded by constants.MAX_RETRY_AFTER so a target cannot park a delivery for days; a date in
    the past means "now" (0). Unparseable values are ignored (None): the backoff applies.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():  # str.isdigit alone accepts "²"
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    return min(constants.MAX_RETRY_AFTER, max(0.0, seconds))


def schedule_table(policy: RetryPolicy) -> list[tuple[int, float, float]]:
    """(attempt, cap before it, latest time since the first attempt) for every retry."""
    rows: list[tuple[int, float, float]] = []
    total = 0.0
    for retry in range(1, policy.attempts):
        cap = backoff_cap(policy, retry)
        total += cap
        rows.append((retry + 1, cap, total))
    return rows


def format_seconds(seconds: float) -> str:
    """A short human duration: 5s, 20s, 1m20s, 5h20m."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"


def now_http_date(now: float) -> str:
    """An HTTP date for `now` (used by tests and target simulators)."""
    return datetime.fromtimestamp(now, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
