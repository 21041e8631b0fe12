"""The receiver's request dispatch: `/hooks/...` straight to the hook handler, the rest through
the app's router.

aiohttp answers every request of an `Application` with `Application._handle`: resolve the path
with the router (a match-info object per request), look up the middleware chain built around
the handler, then run it, here relay's canonical middleware and aiohttp's own that sets
`request.app`, two coroutines around the handler. For the one request a provider sends (POST
/hooks/{source}[/{token}]) that machinery was about a tenth of the receiver's work per request.
`install` puts `dispatch` in its place: a /hooks path is matched by one regular expression and
answered by `Canonical.answer` around `handle_hook`, the same calls the middleware makes; every
other request is handed to `Application._handle` as before.

The fast path takes only what the router would route to the hook unchanged: a path of plain
characters (no `%`, so nothing to unescape; no segment starting with a dot) and no `Expect`
header (which the app answers with `100 Continue` first). Anything else goes the router's way,
to the same handler. A request on it has no match info: `request.app` and `request.match_info`
are not to be read in the hook's code (it is given the app, the source and the token), and
aiohttp's `on_response_prepare` signals, which relay does not use, are not sent for it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from relay.receiver.hook import handle_hook
from relay.receiver.middleware import Canonical, new_facts

__all__ = ["HOOK_PATH", "install"]

#: /hooks/{source}[/{token}] (and any query), each part of characters the router would route
#: as they are: a source name's (relay.config.fields.NAME), a token's of the URL-safe ones.
HOOK_PATH = re.compile(
    r"/hooks/([A-Za-z0-9][A-Za-z0-9_.-]*)"  # the source
    r"(?:/([A-Za-z0-9_~-][A-Za-z0-9_.~-]*))?"  # the token
    r"(?:\?.*)?"  # the query, which routing ignores
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def install(app: web.Application, canonical: Canonical) -> None:
    """Answer `app`'s /hooks requests past its router (see the module's docstring).

    Every server of the app (web.run_app's, the tests') builds its request handler from
    `Application._handle` when it starts; relay's dispatch takes that place on this instance.
    """
    routed: Handler = app._handle
    match = HOOK_PATH.fullmatch

    def dispatch(request: web.Request) -> Awaitable[web.StreamResponse]:
        # A plain function returning the coroutine aiohttp awaits: no coroutine of its own.
        found = match(request.raw_path)
        if found is None or request.headers.get(hdrs.EXPECT):
            return routed(request)
        facts = new_facts(request.method)
        handling = handle_hook(app, request, found[1], found[2], facts)
        return canonical.answer(request, handling, facts, True)

    # The instance attribute wins over the class's method when aiohttp builds its Server.
    object.__setattr__(app, "_handle", dispatch)
