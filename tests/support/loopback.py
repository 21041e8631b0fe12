"""An aiohttp application served on 127.0.0.1 from an event loop of its own in a daemon thread:
the base of the tests' fake servers (targets, the Fellow API). Use as a context manager."""

from __future__ import annotations

import asyncio
import threading
from typing import Self

from aiohttp import web

from tests.support.redis_server import free_port


class LoopbackServer:
    """Serves `build_app()` on a free loopback port between `__enter__` and `__exit__`."""

    #: The address served: loopback, but for the Sentinel chaos runs' private bridge.
    bind_host = "127.0.0.1"

    def __init__(self) -> None:
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def build_app(self) -> web.Application:
        """The application to serve (each fake server says what it answers)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.build_app(), access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.bind_host, self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        # Handlers still hanging (a target told to hang, an API told to time out) end here.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
