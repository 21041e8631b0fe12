"""The admin listener beside another app: started and stopped with it, on a port of its own.

`relay serve` runs the receiver with `web.run_app`; the admin app joins it as a second site on
the same event loop through the receiver's cleanup context, so one process, one loop, two
listeners, and the intake port never routes to a management handler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web

log = structlog.get_logger("relay.admin")

#: Seconds an admin request in flight gets at shutdown (reads are bounded by Redis timeouts).
SHUTDOWN_TIMEOUT = 5.0


class AdminListenError(OSError):
    """The admin listener could not bind its address (taken, or not this machine's)."""


def add_admin_listener(
    app: web.Application,
    make_admin: Callable[[], web.Application],
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
) -> None:
    """Serve `make_admin()` on host:port for as long as `app` runs."""

    async def listener(_: web.Application) -> AsyncIterator[None]:
        runner = web.AppRunner(
            make_admin(), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise AdminListenError(
                exc.errno, f"the admin listener cannot listen on {host}:{port}: {exc.strerror}"
            ) from exc
        addresses = runner.addresses  # the port chosen, when port 0 asked for any
        log.info("admin_listening", host=host, port=addresses[0][1] if addresses else port)
        try:
            yield
        finally:
            await runner.cleanup()

    app.cleanup_ctx.append(listener)
