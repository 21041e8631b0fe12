"""Signing and verification, as pure functions with constant-time comparisons.

- Standard Webhooks v1, for what relay sends downstream: https://www.standardwebhooks.com/
  (spec: https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md)
- ASP.NET WebHooks `ms-signature`, for what Learn365 sends us:
  https://github.com/aspnet/WebHooks (WebHookVerifySignatureFilter / CustomWebHookReceiver)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence

from relay.core.errors import BadRequest, Unauthorized

_MS_SIGNATURE = re.compile(r"^\s*sha256\s*=\s*([0-9A-Fa-f]{64})\s*$", re.IGNORECASE)


def standard_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature: HMAC-SHA256 over `id.timestamp.body`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign_standard(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: one signature per key, space separated (rotation)."""
    return " ".join(standard_signature(key, msg_id, timestamp, body) for key in keys)


def verify_standard(key: bytes, msg_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """Whether any `v1,` signature in a `webhook-signature` header matches (constant time)."""
    expected = standard_signature(key, msg_id, timestamp, body).encode()
    found = False
    for candidate in header.split():
        # Compare every candidate so the time taken does not tell which one matched.
        found |= hmac.compare_digest(expected, candidate.encode())
    return found


def ms_signature(secret: str, body: bytes) -> str:
    """The `ms-signature` header an ASP.NET WebHooks sender computes (upper-case hex)."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest().upper()
    return f"sha256={digest}"


def verify_ms_signature(secret: str, body: bytes, header: str | None) -> None:
    """Check an `ms-signature` header: 400 when missing or malformed, 401 when wrong.

    Either hex case and a case-insensitive `sha256` prefix are accepted, as the reference
    receiver does; the comparison is constant time.
    """
    if header is None:
        raise BadRequest("the ms-signature header is missing")
    match = _MS_SIGNATURE.match(header)
    if not match:
        raise BadRequest("the ms-signature header must be 'sha256=<64 hex digits>'")
    presented = bytes.fromhex(match.group(1))
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, presented):
        raise Unauthorized("the ms-signature does not match the body")
