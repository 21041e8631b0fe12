"""The status page: `GET /status` (HTML for people) and `GET /status.json` (the same figures).

`model` holds the values and the pure summary (health, failures), `reads` the bounded Redis
reads, `view` the HTML (templates `page.html` and `status.html`), `auth` who may see it, and
`handlers` the thin aiohttp part that `relay serve` adds to the receiver.
"""

from relay.ops.status_page.auth import check_token, given_token, is_direct_local
from relay.ops.status_page.handlers import add_status_routes, status_handlers
from relay.ops.status_page.model import (
    BREAKER_OPEN,
    DEGRADED,
    FAILING,
    FAILURES_SHOWN,
    HEALTH_SAMPLE,
    HEALTH_WINDOW,
    IDLE,
    OK,
    PAUSED,
    REFRESH_SECONDS,
    TEXT_MAX,
    Failure,
    RecentAttempt,
    StatusPage,
    TargetRow,
    health_of,
    summarize,
)
from relay.ops.status_page.reads import collect_page, read_recent_attempts
from relay.ops.status_page.view import render_html

__all__ = [
    "BREAKER_OPEN",
    "DEGRADED",
    "FAILING",
    "FAILURES_SHOWN",
    "HEALTH_SAMPLE",
    "HEALTH_WINDOW",
    "IDLE",
    "OK",
    "PAUSED",
    "REFRESH_SECONDS",
    "TEXT_MAX",
    "Failure",
    "RecentAttempt",
    "StatusPage",
    "TargetRow",
    "add_status_routes",
    "check_token",
    "collect_page",
    "given_token",
    "health_of",
    "is_direct_local",
    "read_recent_attempts",
    "render_html",
    "status_handlers",
    "summarize",
]
