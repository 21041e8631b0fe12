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
    known = _JSON_TYPES.get(content_type)
    if known is not None:
        return known
    mt = media_type(content_type)
    answer = mt in ("application/json", "text/json") or mt.endswith("+json")
    if len(_JSON_TYPES) < _MEMO_MAX:  # Content-Type values come from outside: bounded
        _JSON_TYPES[content_type] = answer
    return answer


#: `is_json` of the Content-Type values seen (a provider sends one or two): the receiver asks
#: for every request, and parsing the media type cost it a few thousand instructions.
_JSON_TYPES: dict[str, bool] = {}
#: The most header values or names a memo of this module keeps.
_MEMO_MAX = 256


def is_form(content_type: str) -> bool:
    """Whether a media type is an URL-encoded form."""
    return media_type(content_type) == "application/x-www-form-urlencoded"


def kept_headers(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Provider headers worth keeping, lower-cased, bounded in number and size."""
    kept: list[tuple[str, str]] = []
    names = _KEPT_NAMES
    for name, value in headers.items():
        lname = names.get(name)
        if lname is None:
            lname = _kept_name(name)
        if not lname:
            continue
        kept.append((lname, value if len(value) <= MAX_HEADER_VALUE else value[:MAX_HEADER_VALUE]))
        if len(kept) >= MAX_KEPT_HEADERS:
            break
    return tuple(kept)


def _kept_name(name: str) -> str:
    """A header name as kept (lower-cased), or "" for one never kept; remembered."""
    lname = name.lower()
    if lname in DROPPED_HEADERS or lname.startswith("x-relay-"):
        lname = ""
    if len(_KEPT_NAMES) < _MEMO_MAX:  # header names come from outside: bounded
        _KEPT_NAMES[name] = lname
    return lname


#: `_kept_name` of the header names seen as sent (a provider sends the same few every time):
#: lower-casing and checking each cost the receiver about a thousand instructions a header.
_KEPT_NAMES: dict[str, str] = {}


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
