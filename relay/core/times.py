"""Times as operators read and write them: one format for every command and the status page.

Shown times are ISO 8601 in UTC with milliseconds and a `Z` (`2026-12-02T09:25:00.351Z`): one
shape whichever command printed it, so a time copied from `relay events` can be compared with
one from `relay dead` by eye or by `sort`, and passed back to `--since` as it is.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from relay.core.units import parse_duration


def format_time(ts: float | None) -> str:
    """Unix seconds as `2026-12-02T09:25:00.351Z`; "" for None (nothing to show)."""
    if ts is None:
        return ""
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_age(seconds: float) -> str:
    """A compact age: 42s, 5m, 3h12m, 2d4h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def parse_since(value: str, now: float | None = None) -> float:
    """Unix seconds from ISO 8601 (no offset means UTC) or a duration ago ("2h", "30m", "7d")."""
    now = time.time() if now is None else now
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            "expected a time like '2h', '30m', '7d' or ISO-8601 like "
            f"'2026-11-20T14:00:00Z', got {value!r}"
        ) from None
    if moment.tzinfo is None:
        # The relay's clocks and outputs are all UTC, so a time without an offset is too.
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
