"""The receiver app on a loopback test server, built the way `relay serve` builds it."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.receiver.app import SERVER_OPTIONS


async def receiver_server(app: web.Application) -> TestServer:
    """A started TestServer for `app` with relay's SERVER_OPTIONS (aiohttp's decoding off).

    Pass it to `aiohttp_client`. Not `aiohttp_client(app, server_kwargs=...)`: TestServer's
    constructor drops its keyword arguments (aiohttp 3.14); only start_server() passes them on.
    """
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**SERVER_OPTIONS)
    return server
