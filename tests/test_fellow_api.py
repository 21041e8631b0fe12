"""The Fellow API client (worker.fellow.api) against the fake API on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from structlog.testing import capture_logs

from relay.config.model import Reconcile
from relay.core.secrets import Secret
from relay.store.reconcile import Kind
from tests.support.fellow_api import KEY, FellowApiServer
from worker.fellow.api import (
    MAX_RETRIES,
    ApiStatusError,
    ApiTimeout,
    AuthError,
    FellowApi,
    RateLimited,
    ShapeError,
)
from worker.fellow.limiter import Limiter


@pytest.fixture
def server() -> Iterator[FellowApiServer]:
    with FellowApiServer() as api:
        yield api


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def client(
    server: FellowApiServer, session: aiohttp.ClientSession, key: str = KEY, **kw: object
) -> FellowApi:
    options: dict[str, object] = {"page_size": 3, "concurrency": 2, "timeout": 1.0, **kw}
    return FellowApi(Reconcile(api=server.url, api_key=Secret(key), **options), session)  # type: ignore[arg-type]


async def test_lists_every_page_with_bearer_key(
    server: FellowApiServer, session: aiohttp.ClientSession
) -> None:
    for n in range(7):
        server.enrol("course", "c1", f"m{n}")
    api = client(server, session)
    assert await api.members(Kind.COURSE, "c1") == [f"m{n}" for n in range(7)]
    assert server.paths == [
        "/api/v1/courses/c1/members?offset=0&limit=3",
        "/api/v1/courses/c1/members?offset=3&limit=3",
        "/api/v1/courses/c1/members?offset=6&limit=3",
    ]
    assert await api.containers(Kind.COURSE) == ["c1"]


async def test_a_full_last_page_costs_one_empty_page(
    server: FellowApiServer, session: aiohttp.ClientSession
) -> None:
    for n in range(3):
        server.enrol("program", "p", f"m{n}")
    assert len(await client(server, session).members(Kind.PROGRAM, "p")) == 3
    assert len(server.paths) == 2


async def test_completed_reads_the_configured_field(
    server: FellowApiServer, session: aiohttp.ClientSession
) -> None:
    server.enrol("course", "1", "done", completed=True)
    server.enrol("course", "1", "busy")
    api = client(server, session)
    assert await api.completed(Kind.COURSE, "1", "done") is True
    assert await api.completed(Kind.COURSE, "1", "busy") is False
    assert server.paths[-1] == "/api/v1/courses/1/members/busy/coursemember"
    with pytest.raises(ShapeError, match="no 'finished' field"):
        await client(server, session, completed_field="finished").completed(
            Kind.COURSE, "1", "busy"
        )


async def test_concurrency_is_bounded(
    server: FellowApiServer, session: aiohttp.ClientSession
) -> None:
    for n in range(20):
        server.enrol("course", "1", f"m{n}")
    api = client(server, session, concurrency=3)
    await asyncio.gather(*(api.completed(Kind.COURSE, "1", f"m{n}") for n in range(20)))
    assert 1 < server.most_in_flight <= 3


async def test_retry_after_is_honoured_then_a_storm_gives_up(
    server: FellowApiServer, session: aiohttp.ClientSession
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            server.fault = None  # the storm ends

    server.enrol("course", "1", "m")
    server.fault, server.retry_after = "429", "7"
    api = FellowApi(client(server, session).config, session, sleep=sleep)
    assert await api.containers(Kind.COURSE) == ["1"]
    assert waits == [7.0, 7.0]
    server.fault, waits[:] = "429", [99.0, 99.0, 99.0]  # no end this time
    with pytest.raises(RateLimited, match=f"429 answered {MAX_RETRIES + 1} times"):
        await api.containers(Kind.COURSE)
    server.retry_after = "3600"
    with pytest.raises(RateLimited, match="too long"):
        await api.containers(Kind.COURSE)


@pytest.mark.parametrize(
    ("fault", "error", "words"),
    [
        ("401", AuthError, "401: the API key is refused"),
        ("timeout", ApiTimeout, "no answer within 0.3s"),
        ("shape", ShapeError, "expected a JSON array, got dict"),
    ],
)
async def test_faults_raise_typed_errors_naming_the_endpoint(
    server: FellowApiServer,
    session: aiohttp.ClientSession,
    fault: str,
    error: type[Exception],
    words: str,
) -> None:
    server.fault, server.hang = fault, 2.0
    with pytest.raises(error, match=words) as caught:
        await client(server, session, timeout=0.3).containers(Kind.PROGRAM)
    assert str(caught.value).startswith("/api/v1/programs: ")
    assert KEY not in str(caught.value)


async def test_wrong_key_and_unknown_paths(
    server: FellowApiServer, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(AuthError):
        await client(server, session, key="not-the-key-at-all").containers(Kind.COURSE)
    with pytest.raises(ApiStatusError, match="answered 404"):
        await client(server, session).members(Kind.COURSE, "nope")


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        ([1, 2], "expected an array of objects"),
        ([{"name": "x"}], "an object without a usable 'id' field"),
        ([{"id": True}], "an object without a usable 'id' field"),
        ({"courses": []}, "expected a JSON array, got dict"),
    ],
)
async def test_shape_checks_of_list_answers(
    server: FellowApiServer, session: aiohttp.ClientSession, answer: object, words: str
) -> None:
    server.answer = answer
    with pytest.raises(ShapeError, match=words):
        await client(server, session).containers(Kind.COURSE)


async def test_a_burst_of_429s_halves_the_requests_in_flight_once(
    server: FellowApiServer, session: aiohttp.ClientSession
) -> None:
    for n in range(40):
        server.enrol("course", "1", f"m{n}")
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        server.fault = None  # the storm ends

    api = FellowApi(client(server, session, concurrency=8).config, session, sleep, source="lms")
    api.limiter = Limiter(8, clock=lambda: 0.0)  # the time stands still: the window never ends
    server.fault, server.retry_after = "429", "2"
    with capture_logs() as logs:
        await asyncio.gather(*(api.completed(Kind.COURSE, "1", f"m{n}") for n in range(8)))
    assert set(waits) == {2.0}  # at least one 429, each waited out
    assert api.limit == 4  # one cut for the whole burst, not one per 429
    cuts = [e for e in logs if e["event"] == "fellow api: 429, fewer requests in flight"]
    assert len(cuts) == 1
    assert cuts[0]["log_level"] == "warning"
    assert cuts[0]["source"] == "lms"
    assert cuts[0]["endpoint"].startswith("/api/v1/courses/1/members/m")
    assert (cuts[0]["limit_before"], cuts[0]["limit_after"], cuts[0]["retry_after"]) == (8, 4, 2)
    server.most_in_flight = 0
    await asyncio.gather(*(api.completed(Kind.COURSE, "1", f"m{n}") for n in range(40)))
    assert 1 <= server.most_in_flight <= 4
    assert api.limit == 4  # successes inside the window do not raise it


async def test_the_limit_grows_back_to_the_ceiling_after_the_window(
    server: FellowApiServer, session: aiohttp.ClientSession
) -> None:
    now = 0.0
    for n in range(30):
        server.enrol("course", "1", f"m{n}")

    async def sleep(seconds: float) -> None:
        server.fault = None

    api = FellowApi(client(server, session, concurrency=8).config, session, sleep)
    api.limiter = Limiter(8, clock=lambda: now)
    server.fault, server.retry_after = "429", "2"
    await api.completed(Kind.COURSE, "1", "m0")
    assert api.limit == 4
    now = 2.0  # the Retry-After is over
    await asyncio.gather(*(api.completed(Kind.COURSE, "1", f"m{n}") for n in range(30)))
    assert api.limit == 8  # +1 after 4, 5, 6 and 7 successes: 22, within 30; and no higher


async def test_a_storm_halves_each_window_then_gives_up_as_before(
    server: FellowApiServer, session: aiohttp.ClientSession
) -> None:
    now = 0.0

    async def sleep(seconds: float) -> None:
        nonlocal now
        now += seconds  # each Retry-After waited out: the next 429 opens a new window

    server.enrol("course", "1", "m")
    server.fault, server.retry_after = "429", "2"
    api = FellowApi(client(server, session, concurrency=8).config, session, sleep)
    api.limiter = Limiter(8, clock=lambda: now)
    with capture_logs() as logs, pytest.raises(RateLimited, match="429 answered 4 times"):
        await api.containers(Kind.COURSE)
    assert api.limit == 1
    assert [(e["limit_before"], e["limit_after"]) for e in logs if "limit_before" in e] == [
        (8, 4),
        (4, 2),
        (2, 1),
    ]
    assert server.requests == MAX_RETRIES + 1
