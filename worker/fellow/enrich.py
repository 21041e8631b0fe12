"""Enrichment: a Fellow completion delivered with the record Fellow's API holds for it.

A target with `enrich = "fellow"` receives every COURSEMEMBER_COMPLETED (PROGRAMMEMBER_COMPLETED)
as one JSON object: the form's fields plus `coursemember` (`programmember`), the object that
`GET /api/v1/courses/{courseId}/members/{memberId}/coursemember` answers. Other events, and
targets without `enrich`, are delivered as before (worker.outbound).

The record is fetched once per event, not once per target or per attempt:

- in one process, the attempts that need the same record at once share one fetch;
- across processes, the one holding relay:lock:enr:{id} fetches while the others wait for the
  record it keeps (relay.store.enrichment; the first record kept wins);
- across retries, replays and targets, the kept record is read back from Redis.

The API's address, key, timeout and concurrency are the source's `[sources.NAME.reconcile]`
settings (`relay check` refuses an enriching target fed completions by a source without them).
A fetch that fails (a network error, a 4xx or 5xx, a 429, an answer that is not a JSON object)
makes the attempt a failed one, with the reason as its error: it is retried on the target's
schedule (a 429's Retry-After honoured) and dead-lettered when its attempts are used up, like
any failed attempt. A completion is never delivered without its record.

The fetch runs on the worker's background loop (worker.runtime); its Redis calls run in threads,
so the loop never waits on Redis.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiohttp
import redis
import structlog

from relay.config.model import ENRICHED_EVENTS, Reconcile, RouteTable, Target
from relay.store.enrichment import (
    claim_fetch,
    encode_record,
    fetch_under_way,
    keep_record,
    load_record,
    release_fetch,
)
from relay.store.reconcile import Kind
from relay.store.records import Event
from worker.context import WorkerContext
from worker.fellow.api import FellowApi, FellowError, RateLimited, ShapeError, member_path
from worker.outbound import Enrichment, OutboundRequest, build_request, form_fields
from worker.outcome import AttemptResult

__all__ = ["EnrichError", "Enricher", "Wanted", "lease_allowance", "wanted_kind"]

log = structlog.get_logger("relay.worker")

#: The fetch lock outlives the API's per-request timeout by this much (a dead holder frees it).
LOCK_MARGIN = 5.0
#: How often an attempt waiting for another process's fetch looks for the record.
POLL = 0.05

Post = Callable[[OutboundRequest, float], Awaitable[AttemptResult]]


class EnrichError(Exception):
    """The record could not be had: the attempt fails with this as its error."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds the API asked to wait (a 429), if it did


class _MustWait(Exception):
    """A 429: the delivery's own retry waits, not the attempt (FellowApi's `sleep` raises it)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


async def _no_wait(seconds: float) -> None:
    raise _MustWait(seconds)


@dataclass(frozen=True)
class Wanted:
    """The record an enriched delivery needs: whose, and where it goes in the body."""

    kind: Kind
    container: str  # courseId or programId
    member: str  # memberId

    @property
    def field(self) -> str:
        """The body's field for the record, and the endpoint's last segment."""
        return f"{self.kind}member"

    @property
    def path(self) -> str:
        """The API path of the record, each id quoted as one path segment."""
        return member_path(self.kind, self.container, self.member)


def wanted_kind(event: Event, target: Target) -> Kind | None:
    """The kind of record `event` is delivered to `target` with; None: delivered as it is."""
    if target.enrich != "fellow" or event.type is None:
        return None
    kind = ENRICHED_EVENTS.get(event.type)
    return Kind(kind) if kind is not None else None


def wanted(event: Event, kind: Kind) -> Wanted:
    """Which record a completion needs, from its form's ids (EnrichError when they are not
    there: such an event cannot be enriched)."""
    fields = form_fields(event.body)
    if fields is None:
        raise EnrichError("cannot enrich: the event body is not a form")
    ids = []
    for name in (kind.id_field, "memberId"):
        value = fields.get(name, "").strip()
        if value in ("", ".", ".."):
            raise EnrichError(f"cannot enrich: the form has no usable {name} field")
        ids.append(value)
    return Wanted(kind, ids[0], ids[1])


def api_settings(routes: RouteTable, source: str) -> Reconcile:
    """The Fellow API settings of a source (EnrichError when it has none)."""
    found = routes.sources.get(source)
    if found is None or found.reconcile is None:
        raise EnrichError(
            f"cannot enrich: source '{source}' has no [sources.{source}.reconcile] table "
            "with the Fellow API's settings"
        )
    return found.reconcile


def lease_allowance(routes: RouteTable, target: Target) -> float:
    """Extra lease a delivery to `target` needs for a fetch (0 when it enriches nothing)."""
    if target.enrich is None:
        return 0.0
    timeouts = [s.reconcile.timeout for s in routes.sources.values() if s.reconcile is not None]
    return max(timeouts, default=0.0) + LOCK_MARGIN


class Enricher:
    """The process's fetches of enrichment records: one HTTP session, one client per source
    (its `concurrency` bounds this process's requests), one fetch per event at a time."""

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[bytes]] = {}
        self._apis: dict[str, FellowApi] = {}
        self._session: aiohttp.ClientSession | None = None

    async def attempt(
        self, ctx: WorkerContext, event: Event, target: Target, attempt: int, post: Post
    ) -> AttemptResult:
        """One attempt of an enriched delivery: the record (fetched, or kept), then the POST;
        a failed attempt, never a POST, when the record cannot be had."""
        kind = wanted_kind(event, target)
        assert kind is not None, "only enriched deliveries come here"
        started, clock = time.time(), time.monotonic()
        try:
            want = wanted(event, kind)
            config = api_settings(ctx.routes, event.source)
            record = await self.record(ctx.connection, event, want, config, ctx.settings.retention)
        except EnrichError as exc:
            wait = exc.retry_after
            return AttemptResult(
                started_at=started,
                duration=time.monotonic() - clock,
                error=str(exc),
                retry_after=None if wait is None else str(math.ceil(wait)),
            )
        enrichment = Enrichment(want.field, record)
        request = build_request(event, target, attempt, int(time.time()), enrichment)
        return await post(request, target.timeout)

    async def record(
        self, conn: redis.Redis, event: Event, want: Wanted, config: Reconcile, retention: float
    ) -> bytes:
        """The event's record: kept already, fetched by another process, or fetched here."""
        flight = self._flights.get(event.id)
        if flight is None:
            flight = asyncio.ensure_future(self._obtain(conn, event, want, config, retention))
            self._flights[event.id] = flight
            flight.add_done_callback(partial(self._landed, event.id))
        # Shielded: an attempt cut short does not cancel the fetch others are waiting for.
        return await asyncio.shield(flight)

    def _landed(self, event_id: str, flight: asyncio.Future[bytes]) -> None:
        if self._flights.get(event_id) is flight:
            del self._flights[event_id]

    async def _obtain(
        self, conn: redis.Redis, event: Event, want: Wanted, config: Reconcile, retention: float
    ) -> bytes:
        try:
            return await self._obtain_locked(conn, event, want, config, retention)
        except redis.RedisError as exc:
            raise EnrichError(f"cannot enrich: Redis: {type(exc).__name__}: {exc}") from exc

    async def _obtain_locked(
        self, conn: redis.Redis, event: Event, want: Wanted, config: Reconcile, retention: float
    ) -> bytes:
        kept = await asyncio.to_thread(load_record, conn, event.id, retention)
        if kept is not None:
            return kept
        token = secrets.token_hex(8)
        ttl = config.timeout + LOCK_MARGIN
        if await asyncio.to_thread(claim_fetch, conn, event.id, token, ttl):
            try:
                record = await self._fetch(event, want, config)
                return await asyncio.to_thread(keep_record, conn, event.id, record, retention)
            finally:
                await asyncio.to_thread(release_fetch, conn, event.id, token)
        # Another process is fetching it: wait for the record it keeps. If its lock goes with no
        # record kept, its fetch failed (or it died): this attempt fails too, rather than ask the
        # API again at once; the retry fetches afresh.
        deadline = time.monotonic() + ttl
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL)
            kept = await asyncio.to_thread(load_record, conn, event.id, retention)
            if kept is not None:
                return kept
            if not await asyncio.to_thread(fetch_under_way, conn, event.id):
                # Kept between the two reads, or not at all.
                kept = await asyncio.to_thread(load_record, conn, event.id, retention)
                if kept is not None:
                    return kept
                raise EnrichError(
                    f"cannot fetch the {want.field} record: another worker's fetch of it "
                    "failed just now (its log says why)"
                )
        raise EnrichError(
            f"cannot fetch the {want.field} record: another worker has been fetching it "
            f"for over {ttl:g}s"
        )

    async def _fetch(self, event: Event, want: Wanted, config: Reconcile) -> bytes:
        """GET the record from the API, checked to be a non-empty JSON object."""
        clock = time.monotonic()
        fields: dict[str, Any] = {"event_id": event.id, "source": event.source, "path": want.path}
        try:
            answer = await self._api(event.source, config).get(want.path)
            if not isinstance(answer, dict) or not answer:
                shown = "{}" if answer == {} else type(answer).__name__
                raise ShapeError(want.path, f"expected a JSON object with fields, got {shown}")
            record = encode_record(answer)
        except _MustWait as wait:
            message = f"{want.path}: answered 429, asked to wait {wait.seconds:g}s"
            failure = EnrichError(f"cannot fetch the {want.field} record: {message}", wait.seconds)
        except RateLimited as exc:  # a Retry-After too long to wait out even in a pass
            failure = EnrichError(f"cannot fetch the {want.field} record: {exc}", exc.retry_after)
        except FellowError as exc:
            failure = EnrichError(f"cannot fetch the {want.field} record: {exc}")
        except ValueError as exc:  # too large to keep
            failure = EnrichError(f"cannot keep the {want.field} record: {exc}")
        else:
            ms = round((time.monotonic() - clock) * 1000, 1)
            log.info("enrichment: record fetched", **fields, bytes=len(record), duration_ms=ms)
            return record
        log.warning("enrichment: fetch failed", **fields, error=str(failure))
        raise failure

    def _api(self, source: str, config: Reconcile) -> FellowApi:
        """The source's client (a new one when its settings changed with a route reload)."""
        api = self._apis.get(source)
        if api is None or api.config != config:
            if self._session is None or self._session.closed:
                self._session = aiohttp.ClientSession()
            # A 429 is not waited out inside the attempt: it fails, and the retry waits.
            api = FellowApi(config, self._session, sleep=_no_wait, source=source)
            self._apis[source] = api
        return api

    async def close(self) -> None:
        """Close the HTTP session (the runtime's shutdown, on its loop)."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._apis.clear()
