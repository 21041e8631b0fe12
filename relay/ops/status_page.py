"""The status page: `GET /status` (HTML for people) and `GET /status.json` (the same figures).

The figures are `relay.ops.deliveries`' (`collect_status`, `list_dead`); only the recent failures
and the health of each target are read here, from the attempt logs (relay:att:{id}) of the newest
events and of the newest dead letters, a bounded read. `collect_page` does the Redis reads (sync,
run in a thread), `summarize` and `render_html` are pure, `status_handlers` is the thin aiohttp
part. The page is plain HTML with inline CSS, no script and no external resource, and reloads
itself.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from html import escape
from typing import Any
from urllib.parse import quote

import orjson
import redis
import structlog
from aiohttp import web

from relay.core.times import format_age, format_time
from relay.ops import deliveries as ops
from relay.store import keys
from relay.store.pauses import Pause, describe_pause

log = structlog.get_logger("relay.status")

#: The page reloads itself this often (seconds): fresh enough to watch, cheap for Redis.
REFRESH_SECONDS = 10
#: Newest events whose attempt logs are read for failures and health (one pipelined round trip).
RECENT_EVENTS = 500
#: Events of the newest dead letters read too: an old event may fail long after it arrived.
RECENT_DEAD_EVENTS = 50
#: Newest attempt records read per event (a log grows with every retry and replay).
ATTEMPTS_PER_EVENT = 10
#: Attempts older than this say nothing about a target's health now (seconds).
HEALTH_WINDOW = 3600.0
#: A target's health is decided by at most its newest this many attempts in the window.
HEALTH_SAMPLE = 10
#: Rows of the "recent failures" and "newest dead letters" tables.
FAILURES_SHOWN = 20
DEAD_LETTERS_SHOWN = 10
#: A response or error longer than this is cut on the page (and in the JSON twin).
TEXT_MAX = 120
#: Reloads within this many seconds (several tabs, several operators) share one Redis read.
CACHE_SECONDS = 2.0
#: A status read slower than this answers 503 instead of holding the request.
COLLECT_TIMEOUT = 10.0

OK, DEGRADED, FAILING, IDLE = "ok", "degraded", "failing", "idle"
#: A paused target's deliveries are held whatever its recent attempts say: that comes first.
PAUSED = "paused"

#: Column groups of the targets table: what is true now, and counters since the start.
TARGET_GROUPS = (("", 2), ("now", 3), ("since the start", 6), ("last hour", 1))
TARGET_HEADERS = (
    "Target", "Health", "Pending", "Retrying", "Dead letters", "Delivered", "Attempts",
    "Failures", "Dead", "Gone", "Replayed", "Failed / tried",
)  # fmt: skip

CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token may be in the URL
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ---------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True)
class RecentAttempt:
    """One attempt record with the event it belongs to."""

    event_id: str
    attempt: ops.Attempt

    @property
    def failed(self) -> bool:
        """Whether the attempt did not deliver (by its outcome, else by its HTTP status)."""
        if self.attempt.outcome:
            return self.attempt.outcome != keys.DELIVERED
        status = self.attempt.status
        return status is None or not 200 <= status < 300


@dataclass(frozen=True)
class TargetRow:
    """One target's figures from `relay status` plus its health from recent attempts."""

    figures: ops.TargetStatus
    health: str  # paused | ok | degraded | failing | idle
    recent_attempts: int  # attempts that decided the health
    recent_failures: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping: the ops figures and the health."""
        return self.figures.to_json() | {
            "health": self.health,
            "recent_attempts": self.recent_attempts,
            "recent_failures": self.recent_failures,
        }


@dataclass(frozen=True)
class Failure:
    """One failed attempt as the page lists it."""

    at: float | None
    event_id: str
    target: str
    attempt: int
    status: int | None
    error: str
    outcome: str
    response: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return asdict(self)


@dataclass(frozen=True)
class StatusPage:
    """Everything the status page shows (and `/status.json` returns)."""

    status: ops.Status
    targets: tuple[TargetRow, ...]
    failures: tuple[Failure, ...]
    dead_letters: tuple[ops.DeadLetter, ...]  # the newest few

    @property
    def dead_letters_total(self) -> int:
        """Deliveries in the dead-letter store now, all targets."""
        return sum(t.dead_letters for t in self.status.targets)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping of exactly the figures the HTML shows."""
        s = self.status
        return {
            "generated_at": s.at,
            "refresh_seconds": REFRESH_SECONDS,
            "queue": s.queue.to_json(),
            "workers": s.workers,
            "targets": [t.to_json() for t in self.targets],
            "sources": [src.to_json() for src in s.sources],
            "recent_failures": [f.to_json() for f in self.failures],
            "dead_letters": {
                "total": self.dead_letters_total,
                "newest": [d.to_json() for d in self.dead_letters],
            },
        }


# ---------------------------------------------------------------------------------------------
# Reading (sync: called in a thread)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def read_recent_attempts(
    conn: redis.Redis,
    events: int = RECENT_EVENTS,
    dead: int = RECENT_DEAD_EVENTS,
    per_event: int = ATTEMPTS_PER_EVENT,
) -> list[RecentAttempt]:
    """The newest attempt records of the newest events and dead letters (bounded reads)."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.zrevrange(keys.EVENTS_INDEX, 0, events - 1)
        pipe.zrevrange(keys.DEAD, 0, dead - 1)
        newest, dead_members = pipe.execute()
    ids = list(
        dict.fromkeys(
            [_text(m) for m in newest] + [keys.split_dead_member(_text(m))[0] for m in dead_members]
        )
    )
    if not ids:
        return []
    with conn.pipeline(transaction=False) as pipe:
        for event_id in ids:
            pipe.lrange(keys.attempts_key(event_id), -per_event, -1)
        logs = pipe.execute()
    return [
        RecentAttempt(event_id, ops.Attempt.from_json(raw))
        for event_id, records in zip(ids, logs, strict=True)
        for raw in records
    ]


def collect_page(conn: redis.Redis, configured_targets: Sequence[str] = ()) -> StatusPage:
    """Read everything the page shows: ops status, newest dead letters, recent attempts."""
    status = ops.collect_status(conn, configured_targets)
    dead = ops.list_dead(conn, ops.DeadFilter(limit=DEAD_LETTERS_SHOWN))
    return summarize(status, read_recent_attempts(conn), dead, now=status.at)


# ---------------------------------------------------------------------------------------------
# Pure summary


def health_of(attempts: Sequence[RecentAttempt]) -> str:
    """ok when all delivered, failing when none did, degraded in between, idle without any."""
    if not attempts:
        return IDLE
    failed = sum(a.failed for a in attempts)
    if failed == 0:
        return OK
    return FAILING if failed == len(attempts) else DEGRADED


def _newest_first(attempts: Sequence[RecentAttempt]) -> list[RecentAttempt]:
    # Records without a time sort last: they cannot be placed, and are rare (older workers).
    return sorted(attempts, key=lambda a: a.attempt.at or 0.0, reverse=True)


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TEXT_MAX else text[: TEXT_MAX - 1] + "…"


def summarize(
    status: ops.Status,
    recent: Sequence[RecentAttempt],
    dead_letters: Sequence[ops.DeadLetter],
    now: float,
) -> StatusPage:
    """The page's values: each target's health (paused, else from its newest attempts), and
    the newest failures."""
    ordered = _newest_first(recent)
    rows = []
    for figures in status.targets:
        sample = [
            a
            for a in ordered
            if a.attempt.target == figures.name
            and a.attempt.at is not None
            and now - a.attempt.at <= HEALTH_WINDOW
        ][:HEALTH_SAMPLE]
        rows.append(
            TargetRow(
                figures=figures,
                health=PAUSED if figures.paused is not None else health_of(sample),
                recent_attempts=len(sample),
                recent_failures=sum(a.failed for a in sample),
            )
        )
    failures = tuple(
        Failure(
            at=a.attempt.at,
            event_id=a.event_id,
            target=a.attempt.target,
            attempt=a.attempt.attempt,
            status=a.attempt.status,
            error=_cut(a.attempt.error),
            outcome=a.attempt.outcome,
            response=_cut(a.attempt.response),
        )
        for a in ordered
        if a.failed
    )[:FAILURES_SHOWN]
    return StatusPage(
        status=status, targets=tuple(rows), failures=failures, dead_letters=tuple(dead_letters)
    )


# ---------------------------------------------------------------------------------------------
# Pure rendering


def _e(value: object) -> str:
    """Text for HTML: escaped, quotes included (it may land in an attribute)."""
    return escape("" if value is None else str(value), quote=True)


def _cell(field: str, value: object, cls: str = "") -> str:
    text = "-" if value is None or value == "" else _e(value)
    klass = f' class="{cls}"' if cls else ""
    return f'<td data-field="{_e(field)}"{klass}>{text}</td>'


def _num(field: str, value: int, alert: bool = False, cls: str = "") -> str:
    return _cell(
        field, value, " ".join(filter(None, ("num", cls, "alert" if alert and value else "")))
    )


def _when(field: str, at: float | None, now: float) -> str:
    if at is None:
        return _cell(field, None)
    moment = _e(format_time(at))
    return (
        f'<td data-field="{_e(field)}"><time datetime="{moment}" title="{moment}">'
        f"{_e(format_age(now - at))} ago</time></td>"
    )


def _table(
    headers: Sequence[str],
    rows: Sequence[str],
    empty: str,
    attr: str = "",
    groups: Sequence[tuple[str, int]] = (),
) -> str:
    if not rows:
        return f'<p class="empty"{attr}>{_e(empty)}</p>'
    over = "".join(f'<th colspan="{span}" class="group">{_e(g)}</th>' for g, span in groups)
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    if groups:
        head = f"{over}</tr><tr>{head}"
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _paused_note(pause: Pause, now: float) -> str:
    """The pause under a paused target's name: since when (a <time>) and why."""
    since = pause.since
    when = "since an unknown time"
    if since is not None:
        moment = _e(format_time(since))
        when = (
            f'since <time datetime="{moment}" title="{moment}">{moment}</time> '
            f"({_e(format_age(now - since))} ago)"
        )
    reason = _e(pause.reason or "no reason given")
    return f'<span class="note pause">paused {when}: {reason}</span>'


def _target_rows(page: StatusPage) -> list[str]:
    rows = []
    for row in page.targets:
        t = row.figures
        name = _e(t.name) + ("" if t.configured else ' <span class="note">not in routes</span>')
        if t.paused is not None:
            name += " " + _paused_note(t.paused, page.status.at)
        rows.append(
            f'<tr data-target="{_e(t.name)}"><td data-field="name" class="name">{name}</td>'
            f'<td data-field="health"><span class="pill {row.health}">{row.health}</span></td>'
            + _num("pending", t.pending)
            + _num("scheduled", t.scheduled)
            + _num("dead_letters", t.dead_letters, alert=True)
            + _num("delivered", t.delivered, cls="start")
            + _num("attempts", t.attempts)
            + _num("failures", t.failures)
            + _num("dead", t.dead)
            + _num("gone", t.gone, alert=True)
            + _num("replayed", t.replayed)
            + _cell("recent", f"{row.recent_failures}/{row.recent_attempts}", "num start")
            + "</tr>"
        )
    return rows


def _failure_rows(page: StatusPage) -> list[str]:
    now = page.status.at
    rows = []
    for f in page.failures:
        status = f"HTTP {f.status}" if f.status is not None else ""
        rows.append(
            "<tr>"
            + _when("at", f.at, now)
            + _cell("event_id", f.event_id, "mono id")
            + _cell("target", f.target)
            + _num("attempt", f.attempt)
            + _cell("status", status)
            + _cell("error", f.error)
            + _cell("outcome", f.outcome)
            + _cell("response", f.response, "mono")
            + "</tr>"
        )
    return rows


def _dead_rows(page: StatusPage) -> list[str]:
    now = page.status.at
    return [
        "<tr>"
        + _when("dead_at", d.dead_at, now)
        + _cell("event_id", d.event_id, "mono id")
        + _cell("target", d.target)
        + _cell("source", d.source)
        + _cell("type", d.type)
        + _cell("state", "expired" if d.expired else d.state)
        + _num("attempts", d.attempts)
        + _cell("reason", _cut(d.reason))
        + "</tr>"
        for d in page.dead_letters
    ]


def _figure(field: str, label: str, value: int, alert: bool = False) -> str:
    klass = "figure alert" if alert and value else "figure"
    return (
        f'<div class="{klass}"><span class="value" data-field="{_e(field)}">{value}</span>'
        f'<span class="label">{_e(label)}</span></div>'
    )


_STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 color:#1f2328;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px}header p{margin:4px 0 0;color:#c9d1d9;font-size:13px}
header a{color:#9ecbff}main{padding:8px 24px 32px}
h2{font-size:16px;margin:24px 0 8px}
.figures{display:flex;flex-wrap:wrap;gap:10px;margin-top:16px}
.figure{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px 14px;min-width:92px}
.figure .value{display:block;font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}
.figure .label{font-size:12px;color:#57606a}
.figure.alert{border-color:#cf222e}.figure.alert .value{color:#cf222e}
table{border-collapse:collapse;background:#fff;border:1px solid #d0d7de;width:100%}
th,td{padding:5px 10px;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-size:12px;text-transform:uppercase;color:#57606a;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.alert{color:#cf222e;font-weight:600}
td.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px;word-break:break-all}
td.id,td.name,td time{white-space:nowrap;word-break:normal}
th.group{text-align:center;text-transform:none;font-weight:normal;border-left:1px solid #d0d7de}
td.start,th.group+th.group{border-left:1px solid #d0d7de}
.pill{display:inline-block;padding:1px 9px;border-radius:10px;font-size:13px;font-weight:600}
.ok{background:#dafbe1;color:#1a7f37}.degraded{background:#fff8c5;color:#9a6700}
.failing{background:#ffebe9;color:#cf222e}.idle{background:#eaeef2;color:#57606a}
.paused{background:#ddf4ff;color:#0969da}
.note.pause{display:block;white-space:normal;min-width:16em;max-width:28em}
.note{font-size:12px;color:#57606a}.empty{color:#57606a;font-style:italic}
.banner{background:#ffebe9;border:1px solid #cf222e;border-radius:6px;padding:8px 14px;
 margin-top:16px}
footer{color:#57606a;font-size:12px;padding:0 24px 24px}
"""


def _head(title: str, refresh_url: str | None) -> str:
    target = f"; url={refresh_url}" if refresh_url else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}{_e(target)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
    )


def render_html(page: StatusPage, token: str | None = None) -> str:
    """The whole page; `token` (given by query) is kept in the refresh and JSON links."""
    s, q = page.status, page.status.queue
    suffix = f"?token={quote(token, safe='')}" if token else ""
    failing = sum(r.health == FAILING for r in page.targets)
    degraded = sum(r.health == DEGRADED for r in page.targets)
    title = "relay status" + (f" · {failing} failing" if failing else "")
    banners = []
    # Deliveries wait in the targets' due sets (pending: due now; scheduled: retries, leases),
    # not in RQ's registries: kicks are the only jobs.
    waiting = any(t.pending or t.scheduled for t in s.targets)
    if s.workers == 0 and (q.queued or q.scheduled or waiting):
        banners.append("No worker is running: queued deliveries are waiting.")
    banners += [
        f"{t.name} is paused {describe_pause(t.paused, s.at)}. Its deliveries are held "
        f"until `relay resume {t.name}`."
        for t in s.targets
        if t.paused is not None
    ]
    paused_count = sum(r.health == PAUSED for r in page.targets)
    figures = "".join(
        (
            _figure("targets.paused", "targets paused", paused_count, alert=True),
            _figure("targets.failing", "targets failing", failing, alert=True),
            _figure("targets.degraded", "targets degraded", degraded, alert=True),
            _figure("dead_letters.total", "dead letters", page.dead_letters_total, alert=True),
            _figure("targets.pending", "deliveries due now", sum(t.pending for t in s.targets)),
            _figure(
                "targets.scheduled", "retrying or in flight", sum(t.scheduled for t in s.targets)
            ),
            # RQ jobs are kicks (worker.jobs.deliver_due): a few at most, whatever the load.
            _figure("queue.queued", "kicks queued", q.queued),
            _figure("queue.started", "kicks running", q.started),
            _figure("queue.failed", "failed kicks", q.failed, alert=True),
            _figure("workers", "workers", s.workers),
        )
    )
    sources = [
        f'<tr data-source="{_e(src.name)}">{_cell("name", src.name)}'
        + _num("received", src.received)
        + _num("duplicates", src.duplicates)
        + _num("unrouted", src.unrouted)
        + "</tr>"
        for src in s.sources
    ]
    parts = [
        _head(title, f"status{suffix}" if token else None),
        "<header><h1>relay status</h1><p>generated "
        f'<time id="generated" datetime="{_e(format_time(s.at))}">{_e(format_time(s.at))}</time>'
        f" · refreshes every {REFRESH_SECONDS} s · queue {_e(q.name)}"
        f' · <a href="status.json{_e(suffix)}">JSON</a></p></header><main>',
        "".join(f'<div class="banner">{_e(b)}</div>' for b in banners),
        f'<div class="figures">{figures}</div>',
        "<h2>Targets</h2>",
        _table(
            TARGET_HEADERS,
            _target_rows(page),
            "No targets yet.",
            ' id="targets"',
            TARGET_GROUPS,
        ),
        "<h2>Recent failures</h2>",
        _table(
            ("When", "Event", "Target", "Attempt", "Status", "Error", "Outcome", "Response"),
            _failure_rows(page),
            "No failed attempts among the newest events.",
            ' id="failures"',
        ),
        f"<h2>Newest dead letters ({page.dead_letters_total} in all)</h2>",
        _table(
            ("Dead since", "Event", "Target", "Source", "Type", "State", "Attempts", "Reason"),
            _dead_rows(page),
            "The dead-letter store is empty.",
            ' id="dead"',
        ),
        "<h2>Sources</h2>",
        _table(
            ("Source", "Received", "Duplicates", "Unrouted"),
            sources,
            "No events received yet.",
            ' id="sources"',
        ),
        "</main><footer>Health: paused while a target's deliveries are held (relay pause, or a "
        "410 with pause_on_gone); else the newest "
        f"{HEALTH_SAMPLE} attempts of each target in the last {int(HEALTH_WINDOW // 60)} "
        "minutes; ok when all delivered, failing when none did, degraded in between, idle "
        "without attempts. Counters are since the start; pending, retrying and dead letters "
        "are now. Replay with <code>relay dead list</code> and <code>relay replay</code>."
        "</footer></body></html>",
    ]
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# aiohttp handlers


def given_token(request: web.Request) -> tuple[str | None, bool]:
    """The token a request carries (Bearer header first, then ?token=) and whether by query."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    by_query = request.query.get("token")
    return (by_query, True) if by_query else (None, False)


def _unauthorized(message: str) -> web.Response:
    return _refused(401, message, {"WWW-Authenticate": 'Bearer realm="relay status"'})


def _refused(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"error": message, "status": status}),
        content_type="application/json",
        headers={**_SECURITY_HEADERS, **(headers or {})},
    )


class _Reader:
    """Reads the page in a thread; reloads within CACHE_SECONDS share one read."""

    def __init__(
        self,
        connection: Callable[[], redis.Redis],
        targets: Callable[[], Sequence[str]],
        cache_seconds: float,
    ) -> None:
        self._connection = connection
        self._targets = targets
        self._cache_seconds = cache_seconds
        self._lock = asyncio.Lock()
        self._last: tuple[float, StatusPage] | None = None

    async def read(self) -> StatusPage:
        async with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < self._cache_seconds:
                return self._last[1]
            page = await asyncio.wait_for(
                asyncio.to_thread(collect_page, self._connection(), tuple(self._targets())),
                COLLECT_TIMEOUT,
            )
            self._last = (now, page)
            return page


#: What a status read may raise when Redis is away or slow.
_UNAVAILABLE = (redis.RedisError, OSError, TimeoutError)


#: Headers a reverse proxy adds: a request carrying one did not come from this machine's user.
_FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP", "X-Forwarded-Host")


def is_direct_local(request: web.BaseRequest) -> bool:
    """Whether the request came straight from this machine: loopback, and through no proxy."""
    remote = request.remote or ""
    try:
        loopback = ipaddress.ip_address(remote.removeprefix("::ffff:")).is_loopback
    except ValueError:  # a Unix socket (no address) or something unparsable: not known local
        return False
    return loopback and not any(name in request.headers for name in _FORWARDING_HEADERS)


def check_token(request: web.Request, expected: str) -> tuple[web.Response | None, str | None]:
    """(a 401/403 refusal or None, the token to keep in links when it came by query).

    With no token set, the page is for this machine only: a receiver exposed on a network (or
    behind a proxy that forwards `/status`) must not show target names and their errors to
    anyone who asks.
    """
    if not expected:
        if is_direct_local(request):
            return None, None
        return _refused(
            403,
            "the status page is only served to this machine while RELAY_STATUS_TOKEN is unset; "
            "set it to see the page from elsewhere",
        ), None
    value, by_query = given_token(request)
    if value is None:
        return _unauthorized(
            "the status page needs its token: Authorization: Bearer <token> or ?token=<token>"
        ), None
    if not hmac.compare_digest(value.encode(), expected.encode()):
        return _unauthorized("the status token is wrong"), None
    return None, value if by_query else None


def _unavailable_message(exc: BaseException) -> str:
    log.warning("status_unavailable", error=type(exc).__name__)
    return f"Redis did not answer the status read: {type(exc).__name__}"


def status_handlers(
    token: str,
    connection: Callable[[], redis.Redis],
    targets: Callable[[], Sequence[str]],
    *,
    cache_seconds: float = CACHE_SECONDS,
) -> tuple[Handler, Handler]:
    """The handlers of /status and /status.json; `token` ("" for none) guards both."""
    reader = _Reader(connection, targets, cache_seconds)
    html_headers = {**_SECURITY_HEADERS, "Content-Security-Policy": CSP, "X-Frame-Options": "DENY"}

    async def page_html(request: web.Request) -> web.StreamResponse:
        refusal, kept = check_token(request, token)
        if refusal is not None:
            return refusal
        try:
            page = await reader.read()
        except _UNAVAILABLE as exc:
            # Still a page that reloads itself: it comes back on its own with Redis.
            suffix = f"?token={quote(kept, safe='')}" if kept else ""
            body = (
                _head("relay status · unavailable", f"status{suffix}" if kept else None)
                + f'<main><div class="banner">{_e(_unavailable_message(exc))}</div></main>'
                + "</body></html>"
            )
            return web.Response(
                status=503, text=body, content_type="text/html", headers=html_headers
            )
        return web.Response(
            text=render_html(page, kept), content_type="text/html", headers=html_headers
        )

    async def page_json(request: web.Request) -> web.StreamResponse:
        refusal, _ = check_token(request, token)
        if refusal is not None:
            return refusal
        try:
            page = await reader.read()
        except _UNAVAILABLE as exc:
            body: dict[str, Any] = {"error": _unavailable_message(exc), "status": 503}
            status = 503
        else:
            body, status = page.to_json(), 200
        return web.Response(
            status=status,
            body=orjson.dumps(body),
            content_type="application/json",
            headers=_SECURITY_HEADERS,
        )

    return page_html, page_json


def add_status_routes(
    app: web.Application,
    token: str,
    connection: Callable[[], redis.Redis],
    targets: Callable[[], Sequence[str]],
) -> None:
    """Add GET /status and GET /status.json to the receiver app."""
    page_html, page_json = status_handlers(token, connection, targets)
    app.router.add_get("/status", page_html, allow_head=False)
    app.router.add_get("/status.json", page_json, allow_head=False)
