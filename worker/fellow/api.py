"""A client of Fellow Digitals' REST API, for reconciliation (aiohttp, read-only).

Fellow documents the endpoints, `Authorization: Bearer <key>` and paging with `offset` and
`limit`, but not the JSON of its answers. The assumptions (a list is a JSON array of objects
with an id; a coursemember is completed when its `completed` field is truthy; field names
configurable) are checked on every answer: one that does not fit raises ShapeError naming the
endpoint, so a pass fails loudly instead of reconciling nothing.

    FellowError              the API could not be read: the pass fails and is retried
    ├── AuthError            401/403: the API key is wrong or lacks the right
    ├── RateLimited          429 still after MAX_RETRIES waits of its Retry-After
    ├── ApiTimeout           no answer within the per-request timeout
    ├── ApiStatusError       any other non-2xx answer, or a connection error
    └── ShapeError           an answer that is not what relay assumes
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp
import orjson
import structlog
from yarl import URL

from relay.config.model import Reconcile
from relay.store.reconcile import Kind, PassOutcome
from worker.fellow.limiter import Limiter

__all__ = [
    "ApiStatusError",
    "ApiTimeout",
    "AuthError",
    "FellowApi",
    "FellowError",
    "RateLimited",
    "ShapeError",
    "member_path",
    "members_path",
    "reconcile_log",
]

#: 429s answered in a row for one request before the pass gives up (it is retried later).
MAX_RETRIES = 3
#: The longest Retry-After honoured (seconds); a longer one fails the request, as a storm.
MAX_RETRY_AFTER = 60.0
#: Pages read for one list at most: a provider that ignores `limit` must not loop for ever.
MAX_PAGES = 10_000


def members_path(kind: Kind, container: str) -> str:
    """The path of a course's (program's) member list, the id quoted as one path segment."""
    return f"/api/v1/{kind}s/{_segment(container)}/members"


def member_path(kind: Kind, container: str, member: str) -> str:
    """The path of a member's coursemember (programmember), each id quoted as one segment:
    both the pass and enrichment build it here, so they read the same resource."""
    return f"{members_path(kind, container)}/{_segment(member)}/{kind}member"


def _segment(value: str) -> str:
    # Ids are Fellow's (and, for enrichment, a form's): an id with `/`, `?`, `#`, `%` or a
    # space must stay one segment, not split the path or start a query. An id of "." or ".."
    # would be read as "this" or "the parent" segment (RFC 3986 5.2.4) and ask another
    # resource with relay's API key: its dots are percent-encoded, and FellowApi sends the path
    # as encoded (yarl would otherwise remove such segments, %2E%2E included).
    quoted = quote(str(value), safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


class FellowError(Exception):
    """The API could not be read; `endpoint` is the path asked (never the key)."""

    #: The pass outcome this error is recorded and counted as.
    outcome: ClassVar[PassOutcome] = PassOutcome.API_ERROR

    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint


class AuthError(FellowError):
    """401 or 403: the API key is wrong, revoked or lacks the right."""

    outcome = PassOutcome.AUTH


class RateLimited(FellowError):
    """429 after MAX_RETRIES waits (or a Retry-After beyond MAX_RETRY_AFTER)."""

    outcome = PassOutcome.RATE_LIMITED
    #: The Retry-After (seconds) of a 429 that asked for too long a wait to be waited out.
    retry_after: float | None = None


class ApiTimeout(FellowError):
    """No complete answer within the per-request timeout."""

    outcome = PassOutcome.TIMEOUT


class ApiStatusError(FellowError):
    """Another non-2xx status, or the connection failed."""


class ShapeError(FellowError):
    """An answer that does not have the shape relay assumes."""

    outcome = PassOutcome.SHAPE


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 1.0
    except ValueError:
        return 1.0  # an HTTP date: rare from an API; wait a second and ask again


def reconcile_log() -> structlog.typing.FilteringBoundLogger:
    """The `relay.reconcile` logger of a pass and of this client.

    Looked up when used, not cached at import: `relay reconcile` configures logging after these
    modules are imported, and a logger cached on first use would keep the old setup.
    """
    return structlog.get_logger("relay.reconcile")  # type: ignore[no-any-return]


class FellowApi:
    """Reads courses, programs and their members; at most `concurrency` requests at once,
    fewer after a 429 (worker.fellow.limiter)."""

    def __init__(
        self,
        config: Reconcile,
        session: aiohttp.ClientSession,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        source: str = "",
    ) -> None:
        self.config = config
        # The base URL in its encoded form, once: each request's URL is this and a path of
        # quoted segments, sent as it is (`encoded=True`), never normalized.
        self._base = str(URL(config.api))
        self.session = session
        self.source = source  # the source's name, for the log
        self._sleep = sleep
        self.limiter = Limiter(config.concurrency)
        self.requests = 0  # made, for the pass's summary

    @property
    def limit(self) -> int:
        """Requests allowed in flight now: `concurrency`, or fewer after a 429."""
        return self.limiter.limit

    async def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        """The decoded JSON of GET {api}{path}, 429s waited out (bounded)."""
        url = URL(f"{self._base}{path}", encoded=True)
        headers = {"authorization": f"Bearer {self.config.api_key.reveal()}"}
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        for _attempt in range(MAX_RETRIES + 1):
            async with self.limiter.slot():
                self.requests += 1
                try:
                    async with self.session.get(
                        url, params=params, headers=headers, timeout=timeout
                    ) as resp:
                        status, body = resp.status, await resp.read()
                        wait = _retry_after(resp.headers.get("retry-after"))
                except TimeoutError as exc:
                    raise ApiTimeout(path, f"no answer within {self.config.timeout:g}s") from exc
                except aiohttp.ClientError as exc:
                    raise ApiStatusError(path, f"request failed: {type(exc).__name__}") from exc
            if status == 429:
                self._throttled(path, wait)
                if wait > MAX_RETRY_AFTER:
                    limited = RateLimited(path, f"429 with Retry-After {wait:g}s (too long)")
                    limited.retry_after = wait  # enrichment's retry waits it out instead
                    raise limited
                await self._sleep(wait)  # outside the slot: others may go on meanwhile
                continue
            if 200 <= status < 300:  # only an answer given is a sign Fellow keeps up
                self.limiter.succeeded()
            return _decode(path, status, body)
        raise RateLimited(path, f"429 answered {MAX_RETRIES + 1} times in a row")

    def _throttled(self, path: str, retry_after: float) -> None:
        cut = self.limiter.throttled(retry_after)
        if cut is not None:
            reconcile_log().warning(
                "fellow api: 429, fewer requests in flight",
                source=self.source,
                endpoint=path,
                limit_before=cut.before,
                limit_after=cut.after,
                retry_after=retry_after,
            )

    async def list_all(self, path: str) -> list[dict[str, Any]]:
        """Every object of a paged list endpoint (a page shorter than `limit` is the last)."""
        limit = self.config.page_size
        found: list[dict[str, Any]] = []
        for page in range(MAX_PAGES):
            params = {"offset": str(page * limit), "limit": str(limit)}
            items = _objects(path, await self.get(path, params))
            found.extend(items)
            if len(items) < limit:
                return found
        raise ShapeError(path, f"more than {MAX_PAGES} pages: is `limit` ignored?")

    async def ids(self, path: str) -> list[str]:
        """The ids of every object of a list endpoint."""
        return [self.id_of(path, item) for item in await self.list_all(path)]

    def id_of(self, path: str, item: dict[str, Any]) -> str:
        """An object's id (`id_field`), as text."""
        value = item.get(self.config.id_field)
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise ShapeError(path, f"an object without a usable {self.config.id_field!r} field")
        return str(value)

    async def containers(self, kind: Kind) -> list[str]:
        """The ids of every course (or program)."""
        return await self.ids(f"/api/v1/{kind}s")

    async def members(self, kind: Kind, container: str) -> list[str]:
        """The member ids of one course (or program)."""
        return await self.ids(members_path(kind, container))

    async def member_record(self, kind: Kind, container: str, member: str) -> dict[str, Any]:
        """A member's coursemember (programmember): a JSON object with a `completed` field."""
        path = member_path(kind, container, member)
        answer = await self.get(path)
        if not isinstance(answer, dict):
            raise ShapeError(path, f"expected a JSON object, got {type(answer).__name__}")
        field = self.config.completed_field
        if field not in answer:
            raise ShapeError(path, f"no {field!r} field in the object")
        return answer

    def is_completed(self, record: dict[str, Any]) -> bool:
        """Whether a coursemember (programmember) says completed: its `completed` field."""
        return bool(record[self.config.completed_field])

    async def completed(self, kind: Kind, container: str, member: str) -> bool:
        """Whether a member completed a course (or program): its coursemember's `completed`."""
        return self.is_completed(await self.member_record(kind, container, member))


def _decode(path: str, status: int, body: bytes) -> Any:
    if status in (401, 403):
        raise AuthError(path, f"{status}: the API key is refused (Setup → API)")
    if not 200 <= status < 300:
        raise ApiStatusError(path, f"answered {status}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ShapeError(path, "the answer is not JSON") from exc


def _objects(path: str, answer: Any) -> Sequence[dict[str, Any]]:
    if not isinstance(answer, list):
        raise ShapeError(path, f"expected a JSON array, got {type(answer).__name__}")
    if not all(isinstance(item, dict) for item in answer):
        raise ShapeError(path, "expected an array of objects")
    return answer
