"""The `--echo-target` of `relay dev`: loopback targets that print every delivery they receive."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from aiohttp import web

from relay.cli.dev.app_thread import AppThread
from relay.cli.dev.children import pick_port, port_is_free
from relay.config.model import RouteTable

#: How much of a delivered body the echo target prints.
ECHO_BODY_CHARS = 500


def echo_app(out: Callable[[str], None] = print) -> web.Application:
    """A loopback target that prints each request it receives and answers 200."""

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {
            k.lower(): v
            for k, v in request.headers.items()
            if k.lower().startswith(("x-relay-", "webhook-id", "webhook-timestamp"))
        }
        text = body[:ECHO_BODY_CHARS].decode("utf-8", "replace")
        more = f" ... ({len(body)} bytes)" if len(body) > ECHO_BODY_CHARS else ""
        shown = " ".join(f"{k}={v}" for k, v in sorted(headers.items()))
        out(f"{request.method} {request.path_qs} {shown}\n      {text}{more}")
        return web.json_response({"echoed": len(body)})

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


class EchoTarget(AppThread):
    """The `--echo-target` of `relay dev`: prints what the relay delivers to it."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        def out(text: str) -> None:
            print(f"echo :{port} {text}", flush=True)

        super().__init__("echo target", lambda: echo_app(out), host, port)


def start_echo_targets(ports: Sequence[int]) -> list[EchoTarget]:
    """Start one echo target per port; if one cannot start, stop the others and raise."""
    started: list[EchoTarget] = []
    try:
        for port in ports:
            echo = EchoTarget(port)
            echo.start()
            started.append(echo)
    except BaseException:
        for echo in started:
            echo.stop()
        raise
    return started


def loopback_ports(routes: RouteTable) -> tuple[int, ...]:
    """Ports of the targets on this machine's loopback (127.0.0.1 or localhost), sorted."""
    ports = set()
    for target in routes.targets.values():
        parts = urlsplit(target.url)
        if parts.hostname in ("127.0.0.1", "localhost"):
            ports.add(parts.port or (443 if parts.scheme == "https" else 80))
    return tuple(sorted(ports))


def echo_ports(args: argparse.Namespace, routes: RouteTable) -> tuple[int, ...]:
    """Where `--echo-target` listens: free loopback target ports, else `--echo-port`."""
    if not args.echo_target:
        return ()
    # Echo servers speak plain HTTP and cannot take privileged ports.
    ports = tuple(p for p in loopback_ports(routes) if p >= 1024 and port_is_free(p))
    return ports or (pick_port(args.echo_port),)
