"""The header policy, in one place: what relay keeps of a provider's headers, what it forwards,
and which headers of a delivery belong to relay's contract (a target's `headers` cannot set them).

Also the media types relay recognises, shared by the receiver (parsing) and the worker (the
`body = "json"` conversion of forms).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

#: Request headers never stored nor forwarded: hop-by-hop, transport, and credentials.
DROPPED_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-hook-secret",
        "host",
        "content-length",
        "content-type",  # stored separately
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "accept-encoding",
        # relay decodes request bodies: the stored body is the decoded one, so this would lie.
        "content-encoding",
        "proxy-connection",
    }
)
MAX_KEPT_HEADERS = 64
MAX_HEADER_VALUE = 2048

#: Provider headers forwarded although they are not x-*: what a target needs to verify them.
FORWARDED_PROVIDER_HEADERS = frozenset({"ms-signature"})
#: x-* headers that describe the hop to the relay, not the event: never forwarded.
NOT_FORWARDED_PREFIXES = ("x-forwarded-", "x-relay-")
NOT_FORWARDED = frozenset({"x-real-ip", "x-hook-secret"})

#: Stored (value "1") on an event a reconciliation pass synthesized, and sent to its targets.
#: Intake drops every x-relay-* header a request carries, so no provider can set it.
RECONCILED_HEADER = "x-relay-reconciled"

#: Headers relay sets on every delivery, or that the HTTP client owns: they carry the contract.
RESERVED_HEADERS = frozenset(
    {"host", "content-type", "content-length", "transfer-encoding", "connection"}
)
#: Whole families relay owns: Standard Webhooks' `webhook-*` and relay's own `x-relay-*`.
RESERVED_PREFIXES = ("webhook-", "x-relay-")


def media_type(content_type: str) -> str:
    """`application/json` from `application/json; charset=utf-8`, lower-cased."""
    return content_type.split(";", 1)[0].strip().lower()


def is_json(content_type: str) -> bool:
    """Whether a media type is JSON (`application/json`, `text/json` or `*/*+json`)."""
    mt = media_type(content_type)
    return mt in ("application/json", "text/json") or mt.endswith("+json")


def is_form(content_type: str) -> bool:
    """Whether a media type is an URL-encoded form."""
    return media_type(content_type) == "application/x-www-form-urlencoded"


def kept_headers(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Provider headers worth keeping, lower-cased, bounded in number and size."""
    kept: list[tuple[str, str]] = []
    for name, value in headers.items():
        lname = name.lower()
        if lname in DROPPED_HEADERS or lname.startswith("x-relay-"):
            continue
        kept.append((lname, value[:MAX_HEADER_VALUE]))
        if len(kept) >= MAX_KEPT_HEADERS:
            break
    return tuple(kept)


def is_forwarded(name: str) -> bool:
    """Whether a provider header kept at intake is forwarded to targets."""
    lname = name.lower()
    if lname in FORWARDED_PROVIDER_HEADERS:
        return True
    if not lname.startswith("x-") or lname in NOT_FORWARDED:
        return False
    return not lname.startswith(NOT_FORWARDED_PREFIXES)


def is_reserved(name: str) -> bool:
    """Whether a header belongs to relay's delivery contract (refused in a target's `headers`)."""
    lname = name.lower()
    return lname in RESERVED_HEADERS or lname.startswith(RESERVED_PREFIXES)


class Coding(StrEnum):
    """A content coding relay can decode."""

    GZIP = "gzip"
    DEFLATE = "deflate"


#: What routes.toml's `content_encodings` may list, and its default (every supported coding).
SUPPORTED: tuple[Coding, ...] = tuple(Coding)
IDENTITY = "identity"
