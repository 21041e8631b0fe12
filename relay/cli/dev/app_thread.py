"""An aiohttp application served from its own event loop in a daemon thread.

`relay dev` runs its echo targets this way, and in embedded mode its receiver too (the worker
then has the main thread, which RQ needs for its signal handlers).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger("relay.dev")

#: Bounds start-up and shutdown of an in-process server; both take milliseconds normally.
THREAD_TIMEOUT = 10.0


class AppThread:
    """An aiohttp application served from its own event loop in a daemon thread."""

    def __init__(
        self,
        name: str,
        make_app: Callable[[], web.Application],
        host: str,
        port: int,
        server_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self._server_options = dict(server_options or {})
        self.host = host
        self.port = port
        self._make_app = make_app
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._requested = False
        #: Set when the server stopped without being asked to.
        self.failed = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        #: Called when the server stops without being asked (the embedded worker then stops too).
        self.on_unexpected_exit: Callable[[], None] | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Start serving; raise what start-up raised (e.g. the port is taken)."""
        self._thread.start()
        if not self._ready.wait(THREAD_TIMEOUT):
            raise RuntimeError(f"the {self.name} did not start within {THREAD_TIMEOUT:g} s")
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Stop serving and wait (bounded) for the app's cleanup to finish."""
        self._requested = True
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            # The loop may close between the check and the call.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(THREAD_TIMEOUT)

    @property
    def alive(self) -> bool:
        """Whether the server thread is still running."""
        return self._thread.is_alive()

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start() or logged; the thread must not die mute
            if not self._ready.is_set():
                self._error = exc
            else:
                log.error("dev_server_failed", server=self.name, error=repr(exc))
        finally:
            self.failed = not self._requested and self._error is None  # start() reports errors
            self._ready.set()
            if self.failed and self.on_unexpected_exit is not None:
                self.on_unexpected_exit()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        runner = web.AppRunner(
            self._make_app(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=2.0,
            **self._server_options,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
            self._ready.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()
