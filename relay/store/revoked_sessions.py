"""Console sessions ended before their time: revoke one at sign-out, and ask whether one is.

A console session is a signed cookie that no store holds (relay.admin.console.session), so
removing the cookie from one browser cannot by itself end a copy of it elsewhere (stolen, or
saved by another tab). Sign-out therefore writes `relay:admin:revoked:{nonce}`
(relay.store.keys) with the name of the session's token, never its value; the key expires when
the session would have ended anyway, so the revoked set cleans itself. The console asks with
one EXISTS per request that carries a validly signed session.
"""

from __future__ import annotations

from redis import Redis

from relay.store import keys

__all__ = ["is_revoked", "revoke_session"]


def revoke_session(conn: Redis, nonce: str, name: str, seconds: int) -> bool:
    """Revoke the session with `nonce` (of token `name`) for `seconds`; False when it already was.

    NX keeps the first revocation's expiry: a second sign-out of the same session (a copy of
    its cookie) changes nothing.
    """
    return bool(conn.set(keys.revoked_session_key(nonce), name, nx=True, ex=max(1, seconds)))


def is_revoked(conn: Redis, nonce: str) -> bool:
    """Whether the session with `nonce` was signed out (one EXISTS)."""
    return bool(conn.exists(keys.revoked_session_key(nonce)))
