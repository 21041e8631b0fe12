"""The console's session and CSRF tokens (pure): signed, so no live session is stored anywhere.

A session cookie holds `name|issued|nonce|mac`: the token's name (never its value), when the
session began, a random nonce, and an HMAC-SHA256 keyed by the value of the token named, which
only the server knows (`TokenSet.sign`). So a session is checked without any store, in every
process of `relay serve`, and survives a restart; it ends after SESSION_SECONDS, or at once for
every browser when the token is rotated or removed from RELAY_ADMIN_TOKENS. Signing out ends
one session everywhere: its nonce is kept as revoked until it would have expired
(`Session.revocation_seconds`; relay.store.revoked_sessions holds the list, the guard asks it).

The CSRF token is a second HMAC of the same session under another label: one per session,
never in a cookie, so a page of another site can neither read nor guess it (the synchronizer
token pattern, stateless). https://cheatsheetseries.owasp.org/cheatsheets/Cross-Site_Request_Forgery_Prevention_Cheat_Sheet.html
"""

from __future__ import annotations

import base64
import hmac
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass

#: The cookie that carries the session.
COOKIE = "relay_console"
#: A session lasts a working day; then the operator signs in again.
SESSION_SECONDS = 12 * 3600
#: A session issued this far in the future (a clock stepped back) is still taken.
CLOCK_SKEW = 300
#: The name of the form field (and `X-CSRF-Token` header) that carries the CSRF token.
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"

_SESSION_LABEL = b"relay-console-session-v1"
_CSRF_LABEL = b"relay-console-csrf-v1"
_SEPARATOR = "|"

#: (token name, message) -> HMAC-SHA256 keyed by that token's value, or None for no such token.
Signer = Callable[[str, bytes], bytes | None]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Session:
    """A signed-in browser: which token, since when, and the nonce that makes it unique."""

    name: str
    issued: int  # Unix seconds
    nonce: str

    def _message(self, label: bytes) -> bytes:
        return b"|".join(
            (label, self.name.encode(), str(self.issued).encode(), self.nonce.encode())
        )

    def cookie_value(self, sign: Signer) -> str | None:
        """The cookie's value, signed; None when no token has this name."""
        mac = sign(self.name, self._message(_SESSION_LABEL))
        if mac is None:
            return None
        return _SEPARATOR.join((self.name, str(self.issued), self.nonce, _b64(mac)))

    def csrf_token(self, sign: Signer) -> str:
        """This session's CSRF token ("" when its token is gone: nothing will match it)."""
        mac = sign(self.name, self._message(_CSRF_LABEL))
        return "" if mac is None else _b64(mac)

    def csrf_ok(self, presented: str | None, sign: Signer) -> bool:
        """Whether `presented` is this session's CSRF token (constant time)."""
        expected = self.csrf_token(sign)
        return bool(presented and expected) and hmac.compare_digest(
            (presented or "").encode(), expected.encode()
        )

    def expires(self) -> int:
        """When the session ends (Unix seconds)."""
        return self.issued + SESSION_SECONDS

    def revocation_seconds(self, now: float) -> int:
        """How long a revocation of this session must be kept: until it would have expired, and
        CLOCK_SKEW longer for a process of `relay serve` whose clock is behind this one's."""
        return max(0, math.ceil(self.expires() - now)) + CLOCK_SKEW


def new_session(name: str, now: float) -> Session:
    """A fresh session for the token named `name`."""
    return Session(name=name, issued=int(now), nonce=secrets.token_urlsafe(16))


def read_session(value: str | None, sign: Signer, now: float) -> Session | None:
    """The session a cookie value proves, or None: malformed, forged, expired, or its token gone."""
    if not value:
        return None
    parts = value.split(_SEPARATOR)
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    name, issued, nonce, _mac = parts
    session = Session(name=name, issued=int(issued), nonce=nonce)
    if not session.issued - CLOCK_SKEW <= now < session.expires():
        return None
    expected = session.cookie_value(sign)
    if expected is None or not hmac.compare_digest(expected.encode(), value.encode()):
        return None
    return session


def new_pre_session() -> str:
    """The value of the sign-in form's own CSRF cookie (before there is a session)."""
    return secrets.token_urlsafe(24)
