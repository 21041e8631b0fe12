"""A fake Fellow Digitals API on loopback, shaped as relay assumes (worker.fellow.api).

    GET /api/v1/{courses|programs}                                   [{"id": ...}, ...] paged
    GET /api/v1/{kind}s/{id}/members                                 [{"id": ...}, ...] paged
    GET /api/v1/{kind}s/{id}/members/{member}/{kind}member           {"completed": bool, ...}

Paging by `offset` and `limit` (a short page is the last); every request must carry
`Authorization: Bearer <KEY>`. `state` maps (kind, id) to {member id: completed}, and is changed
by the test between passes. Fault switches (`fault`): "401", "429" (every answer 429 with
Retry-After `retry_after`), "timeout" (answers after `hang` seconds), "shape" (a list endpoint
answers an object), "500" (every answer 500); `answer`, when set, is what every list endpoint
answers, and `member_answer` what every coursemember/programmember endpoint answers. Every answer
waits `latency` seconds first (1 ms: concurrent requests overlap, as a real API's would).
`requests` counts what was asked, `most_in_flight` the concurrency seen.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from tests.support.loopback import LoopbackServer

KEY = "fellow-api-key-9d2c4b7a1e6f3058"


class FellowApiServer(LoopbackServer):
    """The fake API in a background thread; use as a context manager."""

    def __init__(self) -> None:
        super().__init__()
        self.state: dict[tuple[str, str], dict[str, bool]] = {}
        self.fault: str | None = None
        self.retry_after = "0"
        self.hang = 5.0
        self.latency = 0.001  # seconds each answer waits (bench/reconcile.py's --api-latency)
        self.answer: object = None  # when set, what every list endpoint answers instead
        self.member_answer: object = None  # when set, what every member endpoint answers
        self.requests = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.paths: list[str] = []

    @property
    def url(self) -> str:
        """The base URL (the API is under /api/v1)."""
        return f"http://127.0.0.1:{self.port}"

    def enrol(self, kind: str, container: str, member: str, completed: bool = False) -> None:
        """Put a member in a course or program (or change whether it completed)."""
        self.state.setdefault((kind, container), {})[member] = completed

    def remove(self, kind: str, container: str, member: str) -> None:
        """Take a member out of a course or program."""
        self.state[(kind, container)].pop(member)

    def build_app(self) -> web.Application:
        """Fellow's list and member endpoints, behind the key and fault checks."""
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/api/v1/{kind}s", self._containers)
        app.router.add_get("/api/v1/{kind}s/{cid}/members", self._members)
        app.router.add_get("/api/v1/{kind}s/{cid}/members/{mid}/{what}", self._member)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: web.Handler) -> web.StreamResponse:
        self.requests += 1
        self.paths.append(request.path_qs)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if request.headers.get("Authorization") != f"Bearer {KEY}" or self.fault == "401":
                return web.json_response({"message": "Unauthorized"}, status=401)
            if self.fault == "429":
                return web.json_response(
                    {"message": "slow down"}, status=429, headers={"Retry-After": self.retry_after}
                )
            if self.fault == "500":
                return web.json_response({"message": "Internal Server Error"}, status=500)
            if self.fault == "timeout":
                await asyncio.sleep(self.hang)
            await asyncio.sleep(self.latency)  # concurrent requests overlap, as a real API's
            return await handler(request)
        finally:
            self.in_flight -= 1

    def _page(self, request: web.Request, items: list[dict[str, object]]) -> web.Response:
        if self.answer is not None:
            return web.json_response(self.answer)
        if self.fault == "shape":
            return web.json_response({"data": items})  # an envelope relay does not assume
        offset = int(request.query.get("offset", "0"))
        limit = int(request.query.get("limit", "100"))
        return web.json_response(items[offset : offset + limit])

    async def _containers(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        ids = sorted({cid for k, cid in self.state if k == kind})
        return self._page(request, [{"id": int(c) if c.isdigit() else c, "name": c} for c in ids])

    async def _members(self, request: web.Request) -> web.Response:
        key = (request.match_info["kind"], request.match_info["cid"])
        if key not in self.state:
            return web.json_response({"message": "Not found"}, status=404)
        members = sorted(self.state[key])
        return self._page(request, [{"id": m, "email": f"{m}@example.com"} for m in members])

    async def _member(self, request: web.Request) -> web.Response:
        kind, what = request.match_info["kind"], request.match_info["what"]
        members = self.state.get((kind, request.match_info["cid"]), {})
        mid = request.match_info["mid"]
        if what != f"{kind}member" or mid not in members:
            return web.json_response({"message": "Not found"}, status=404)
        if self.member_answer is not None:
            return web.json_response(self.member_answer)
        return web.json_response({"completed": members[mid], "score": 80, "success": True})
