"""The operator console: server-rendered pages at `/` of the admin listener.

Pages read with relay.ops, the same functions as the CLI and the API, and write through the
same ones too. Modules:

- `session` (pure): the signed session cookie and its CSRF token; `guard`: who a request acts
  as, cookies, the CSRF and scope checks, the security headers; `signin`: /sign-in, /sign-out.
- `html` and `layout` (pure): escaping, tables, forms, the frame of every page; `pages`: the
  glue (`page` for GET, `action` for POST); `body` (pure): how an event's body is shown.
- One module per page: `overview`, `events`, `event`, `dead_letters`, `targets`, `sources`.
- `static/`: one stylesheet and one small script (live lists, select-all, replay progress);
  every page reads without it.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from relay.admin.auth import set_session_resolver
from relay.admin.console import bulk, dead_letters, event, events, overview, sources, targets
from relay.admin.console.guard import TRUST_PROXY, resolve_session
from relay.admin.console.pages import READER, Handler
from relay.admin.console.signin import add_sign_in_routes
from relay.admin.state import SETTINGS

__all__ = ["add_console_routes"]

#: The static files and their media types (a fixed list: nothing else is served from there).
STATIC = {
    "console.css": "text/css",
    "console.js": "text/javascript",
}
#: Static files change only with a release: an hour in the browser's cache is plenty.
STATIC_CACHE = "public, max-age=3600"


def _static_handler(name: str, media_type: str) -> Handler:
    body = resources.files("relay.admin.console").joinpath("static").joinpath(name).read_bytes()

    async def serve(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=body,
            content_type=media_type,
            charset="utf-8",
            headers={"Cache-Control": STATIC_CACHE, "X-Content-Type-Options": "nosniff"},
        )

    return serve


def add_console_routes(app: web.Application) -> None:
    """Add the console's pages, actions and static files to the admin app, and install its
    session as relay.admin.auth's session hook (the API then takes the console's cookie)."""
    settings = app.get(SETTINGS)
    app[TRUST_PROXY] = bool(settings and settings.admin_trust_proxy)
    app[READER] = overview.make_reader(app)
    set_session_resolver(app, resolve_session)
    add_sign_in_routes(app)
    router = app.router
    router.add_get("/", overview.overview, allow_head=False)
    router.add_get("/events", events.events_page, allow_head=False)
    router.add_get("/events/{event_id}", event.event_page, allow_head=False)
    router.add_post("/events/{event_id}/replay", event.replay)
    router.add_get("/dead-letters", dead_letters.dead_letters_page, allow_head=False)
    router.add_post("/dead-letters/replay", bulk.replay)
    router.add_get("/dead-letters/jobs/{job_id}", bulk.job_page, allow_head=False)
    router.add_get("/targets", targets.targets_page, allow_head=False)
    router.add_post("/targets/{name}/pause", targets.pause)
    router.add_post("/targets/{name}/resume", targets.resume)
    router.add_get("/sources", sources.sources_page, allow_head=False)
    for name, media_type in STATIC.items():
        router.add_get(f"/static/{name}", _static_handler(name, media_type), allow_head=False)
