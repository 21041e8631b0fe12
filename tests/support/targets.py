"""Loopback HTTP targets for delivery tests, recording every request they get.

One aiohttp server in a background thread serves every behaviour by path:

    /ok/{name}                      200
    /fail/{name}/{n}                500 for the first n requests of each webhook-id, then 200
    /hang/{name}                    never answers (until the server stops)
    /gone/{name}                    410
    /slow/{name}/{n}/{seconds}      429 + Retry-After: seconds, n times per webhook-id, then 200
    /redirect/{name}                302 to /ok/{name} (must not be followed)
    /delay/{name}/{seconds}         200 after a pause (a delivery "in hand"); `max_open[name]` is
                                    the most such requests open at once

`refused_url()` is an address where nothing listens (connection refused).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from tests.support.loopback import LoopbackServer
from tests.support.redis_server import free_port


@dataclass(frozen=True)
class Received:
    """One request a target got, and what it answered."""

    name: str
    path: str
    headers: CIMultiDict[str]
    body: bytes
    at: float  # time.time() on arrival
    status: int  # what the target answered (0: never answered)


class TargetServer(LoopbackServer):
    """The loopback target server; use as a context manager."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = defaultdict(int)
        self._open: dict[str, int] = defaultdict(int)
        self.max_open: dict[str, int] = defaultdict(int)

    def url(self, path: str) -> str:
        """Full URL of a path on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def build_app(self) -> web.Application:
        """The targets' routes: each path says how to answer."""
        app = web.Application()
        app.router.add_post("/ok/{name}", self._ok)
        app.router.add_post("/fail/{name}/{n}", self._fail)
        app.router.add_post("/hang/{name}", self._hang)
        app.router.add_post("/gone/{name}", self._gone)
        app.router.add_post("/slow/{name}/{n}/{seconds}", self._slow)
        app.router.add_post("/redirect/{name}", self._redirect)
        app.router.add_post("/delay/{name}/{seconds}", self._delay)
        return app

    async def _record(self, request: web.Request, status: int) -> bytes:
        body = await request.read()
        with self._lock:
            self.received.append(
                Received(
                    name=request.match_info["name"],
                    path=request.path,
                    headers=CIMultiDict(request.headers),
                    body=body,
                    at=time.time(),
                    status=status,
                )
            )
        return body

    def _count(self, request: web.Request) -> int:
        key = (request.path, request.headers.get("webhook-id", ""))
        with self._lock:
            self._counts[key] += 1
            return self._counts[key]

    async def _ok(self, request: web.Request) -> web.Response:
        await self._record(request, 200)
        return web.Response(text="ok")

    async def _fail(self, request: web.Request) -> web.Response:
        failing = self._count(request) <= int(request.match_info["n"])
        status = 500 if failing else 200
        await self._record(request, status)
        return web.Response(status=status, text="x" * 5000 if failing else "ok")

    async def _hang(self, request: web.Request) -> web.Response:
        await self._record(request, 0)
        await asyncio.sleep(3600)
        return web.Response(text="too late")

    async def _gone(self, request: web.Request) -> web.Response:
        await self._record(request, 410)
        return web.Response(status=410, text="subscription cancelled")

    async def _slow(self, request: web.Request) -> web.Response:
        limited = self._count(request) <= int(request.match_info["n"])
        status = 429 if limited else 200
        await self._record(request, status)
        if limited:
            headers = {"Retry-After": request.match_info["seconds"]}
            return web.Response(status=429, text="slow down", headers=headers)
        return web.Response(text="ok")

    async def _redirect(self, request: web.Request) -> web.Response:
        await self._record(request, 302)
        raise web.HTTPFound(f"/ok/{request.match_info['name']}")

    async def _delay(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        with self._lock:
            self._open[name] += 1
            self.max_open[name] = max(self.max_open[name], self._open[name])
        try:
            await self._record(request, 200)
            await asyncio.sleep(float(request.match_info["seconds"]))
        finally:
            with self._lock:
                self._open[name] -= 1
        return web.Response(text="ok, eventually")

    def by_name(self, name: str) -> list[Received]:
        """Requests received by one named target, in arrival order."""
        with self._lock:
            return [r for r in self.received if r.name == name]

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float, interval: float = 0.05
    ) -> list[Received]:
        """Wait until `predicate(received)` holds (bounded); return the requests received."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                snapshot = list(self.received)
            if predicate(snapshot) or time.monotonic() > deadline:
                return snapshot
            time.sleep(interval)


def refused_url() -> str:
    """A loopback URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}/refused"
