"""The subscription handshakes a provider may open with: answered at once, nothing recorded.

- ASP.NET WebHooks (Learn365): `GET ?echo=X` is answered with exactly X as text/plain
  (https://github.com/aspnet/WebHooks, WebHookReceiver.WriteEchoResponse).
- REST Hooks (Strigo): a POST carrying `X-Hook-Secret: S` is answered 200 with the same header
  (https://resthooks.org/docs/security/).

Pure functions: relay.receiver.accept decides when a request is a handshake.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus

from relay.core.errors import BadRequest

#: The ASP.NET handshake sends 32 hex digits; anything much longer is not a handshake.
MAX_ECHO = 256
#: REST Hooks secrets are short random strings; a huge header is not one.
MAX_HOOK_SECRET = 1024
#: The REST Hooks handshake's answer body (as aiohttp's json_response writes it).
SUBSCRIBED = '{"status": "subscribed"}'


class HandshakeKind(StrEnum):
    """Which handshake a request was."""

    ASPNET = "aspnet"
    RESTHOOKS = "resthooks"


@dataclass(frozen=True, slots=True)
class Handshake:
    """A handshake's answer: `status` with `text` as `content_type`, and `headers`."""

    kind: HandshakeKind
    source: str
    text: str
    content_type: str
    headers: tuple[tuple[str, str], ...]
    status: int = HTTPStatus.OK


def aspnet_echo(source: str, query: Mapping[str, str]) -> Handshake:
    """ASP.NET WebHooks registration: answer exactly the `echo` value; 400 without a sane one."""
    echo = query.get("echo")
    if echo is None:
        raise BadRequest("an ASP.NET WebHooks handshake needs ?echo=<value>")
    if len(echo) > MAX_ECHO:
        raise BadRequest(f"the echo value is longer than {MAX_ECHO} characters")
    nosniff = (("X-Content-Type-Options", "nosniff"),)
    return Handshake(HandshakeKind.ASPNET, source, echo, "text/plain", nosniff)


def resthooks_handshake(source: str, secret: str) -> Handshake:
    """REST Hooks subscription: 200 with `X-Hook-Secret` echoed; 400 for an empty or huge one."""
    if not secret or len(secret) > MAX_HOOK_SECRET:
        raise BadRequest("the X-Hook-Secret header is empty or too long")
    echoed = (("X-Hook-Secret", secret),)
    return Handshake(HandshakeKind.RESTHOOKS, source, SUBSCRIBED, "application/json", echoed)
