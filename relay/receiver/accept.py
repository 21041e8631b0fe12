"""What the receiver answers to one request, decided by pure functions (sans-I/O).

In the style of gidgethub's `sansio`: no aiohttp, no Redis, no clock, no randomness (the event id
and the time come in as arguments). The aiohttp adapter (relay.receiver.hook) and
`relay check --body` (relay.cli.check_dry_run) both run these functions, so they cannot disagree.

A request is decided in two phases, so that every refusal known from the head costs no body read
(a gzip bomb posted with a wrong token is refused before one byte of it is read):

    accept_head(table, request) -> Refused | Handshake | ReadBody
        source (404), path token (401; 404 for a token the source takes none of), the ASP.NET
        ?echo= handshake (400), method (405), the REST Hooks X-Hook-Secret handshake (400),
        ms-signature present (400), Content-Encoding taken (415)
    accept_body(read, sent, body, event_id=, received_at=) -> Refused | Accepted
        size (413), ms-signature (400/401), content type and parsing (415/400,
        relay.receiver.extract), dedupe keys, routes

`ReadBody` carries the route table the head phase looked the source up in, and the body phase
routes with that same table: a reload while the body arrives never pairs an old source with new
routes. `accept()` runs both phases on a body already in hand (the dry run, the tests).
The values every request makes (`Request`, `ReadBody`, `Accepted`) are immutable NamedTuples:
a frozen dataclass's __init__ (object.__setattr__ per field) costs several times as much. On
the receiver's path they are made with `tuple.__new__(cls, (every field, in order))` (marked
`_made`): the same tuple, without the Python call of the NamedTuple's generated __new__ (about
1,200 of its 3,200 instructions); every field is given, defaults included.
Specs: relay.receiver.handshakes (the handshakes), relay.core.signatures (ms-signature).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple, TypeVar

from relay.config.control import order_keys
from relay.config.model import RouteTable, Source, SourceKind
from relay.core.errors import (
    BadRequest,
    HTTPError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from relay.core.headers import Coding, kept_headers
from relay.core.ids import derived_event_id
from relay.core.signatures import verify_ms_signature
from relay.receiver.decoding import accepted_coding, decode_body
from relay.receiver.extract import ParsedEvent, parse_request
from relay.receiver.handshakes import Handshake, aspnet_echo, resthooks_handshake
from relay.store import keys
from relay.store.records import Event

__all__ = [
    "Accepted",
    "Handshake",
    "ReadBody",
    "Refused",
    "Request",
    "Step",
    "accept",
    "accept_body",
    "accept_head",
]

_T = TypeVar("_T")
_NO_QUERY: Mapping[str, str] = MappingProxyType({})
# Compared on every request: a global name is cheaper than an Enum member lookup each time.
_ASPNET = SourceKind.ASPNET
_RESTHOOKS = SourceKind.RESTHOOKS


class Step(StrEnum):
    """The decision that refused a request, in the order they are taken."""

    SOURCE = "source"  # 404: no such source
    TOKEN = "token"  # noqa: S105 (a name, not a secret) 401; 404 where the source takes none
    HANDSHAKE = "handshake"  # 400: a malformed ?echo= or X-Hook-Secret
    METHOD = "method"  # 405
    SIGNATURE = "signature"  # 400 ms-signature missing or malformed, 401 wrong
    ENCODING = "encoding"  # 415 a Content-Encoding not taken; 400 a body that does not decode
    SIZE = "size"  # 413
    BODY = "body"  # 415 content type, 400 a body that does not parse


class Request(NamedTuple):
    """The parts of one request to /hooks/{source}[/{token}] that the decisions read.

    `headers` must be case-insensitive (aiohttp's CIMultiDict) or lower-cased; `query` is read
    only for the ASP.NET handshake.
    """

    method: str
    source: str
    token: str | None
    headers: Mapping[str, str]
    query: Mapping[str, str] = _NO_QUERY


@dataclass(frozen=True, slots=True)
class Refused:
    """An HTTP error to answer, and the step that decided it."""

    step: Step
    error: HTTPError
    source: str | None = None  # the source's name once found (before its token is checked)
    headers: tuple[tuple[str, str], ...] = ()  # e.g. Allow on a 405

    @property
    def status(self) -> int:
        """The HTTP status to answer."""
        return int(self.error.status)

    @property
    def message(self) -> str:
        """The human message of the JSON error body."""
        return self.error.message


class ReadBody(NamedTuple):
    """The head is accepted: read the body (decoded from `coding`, within the source's
    max_body), then call `accept_body` with this value."""

    table: RouteTable  # the snapshot the source came from; the routes come from it too
    source: Source
    request: Request
    coding: Coding | None  # None: the body is sent as is

    @property
    def keeps_sent(self) -> bool:
        """Whether the body as sent is needed too (besides the decoded one): it is signed."""
        return self.source.secret is not None


class Accepted(NamedTuple):
    """The events to commit (each with its targets), then answer 202."""

    id: str  # the request's event id: its one event's, or the parent of the split ones
    source: Source
    events: tuple[Event, ...]
    parsed: tuple[ParsedEvent, ...]  # what parsing found, event by event (dedupe values)


def accept_head(
    table: RouteTable, request: Request, *, signatures: bool = True
) -> Refused | Handshake | ReadBody:
    """Every decision the request's head allows, before any of its body is read
    (`signatures=False`: as if ms-signature were there, for the dry run's "were it accepted")."""
    name = request.source
    source = table.sources.get(name)
    if source is None:
        return Refused(Step.SOURCE, NotFound(f"no source named '{name}'"))
    token = request.token
    if token is not None or source.token is not None:  # no token, none taken: nothing to check
        refused = _check_token(source, token)
        if refused is not None:
            return refused
    kind = source.kind
    method = request.method
    if method == "GET" and kind is _ASPNET:
        return _handshake(aspnet_echo, name, request.query)
    if method not in source.methods:
        return _wrong_method(source, method)
    headers = request.headers
    if kind is _RESTHOOKS and "x-hook-secret" in headers:
        return _handshake(resthooks_handshake, name, headers["x-hook-secret"])
    if signatures and kind is _ASPNET and "ms-signature" not in headers:
        return Refused(Step.SIGNATURE, BadRequest("the ms-signature header is missing"), name)
    coding = None
    encoding = headers.get("content-encoding")
    if encoding is not None:
        try:
            coding = accepted_coding(encoding, source.content_encodings)
        except UnsupportedMediaType as exc:
            return Refused(Step.ENCODING, exc, name)
    return tuple.__new__(ReadBody, (table, source, request, coding))  # _made (module docstring)


def _handshake(answer: Callable[[str, _T], Handshake], name: str, arg: _T) -> Handshake | Refused:
    try:
        return answer(name, arg)
    except BadRequest as exc:
        return Refused(Step.HANDSHAKE, exc, name)


def _check_token(source: Source, token: str | None) -> Refused | None:
    """The path token's verdict (constant-time comparison), or None when it is right."""
    if source.token is None:
        if token is None:
            return None
        # The same answer as an unknown source: do not reveal that the name exists.
        return Refused(Step.TOKEN, NotFound(f"no source named '{source.name}'"), source.name)
    if token is None:
        message = "this source needs its token in the path: /hooks/<source>/<token>"
        return Refused(Step.TOKEN, Unauthorized(message), source.name)
    if not source.token.matches(token):
        return Refused(Step.TOKEN, Unauthorized("the token in the path is wrong"), source.name)
    return None


def _wrong_method(source: Source, method: str) -> Refused:
    """405 naming the methods taken (GET too for an ASP.NET source: its handshake)."""
    allowed = (*source.methods, "GET") if source.kind is _ASPNET else source.methods
    listed = ", ".join(allowed)
    error = MethodNotAllowed(f"source '{source.name}' takes {listed}, not {method}")
    return Refused(Step.METHOD, error, source.name, (("Allow", listed),))


def accept_body(
    read: ReadBody,
    sent: bytes,
    body: bytes,
    *,
    event_id: str,
    received_at: float,
    signatures: bool = True,
) -> Refused | Accepted:
    """The rest of the decisions, on the body as `sent` and decoded (the same bytes without a
    coding; `sent` may be b"" when `read.keeps_sent` is false)."""
    source = read.source
    if len(body) > source.max_body:  # the adapter refuses while reading; a body in hand, here
        limit = source.max_body
        error = PayloadTooLarge(f"the body is {len(body)} bytes; this source takes at most {limit}")
        return Refused(Step.SIZE, error, source.name)
    if signatures and source.kind is _ASPNET and source.secret is not None:
        try:
            # The provider signed the bytes it sent: the encoded ones when it sent a coding.
            header = read.request.headers.get("ms-signature")
            verify_ms_signature(source.secret.reveal(), sent, header)
        except HTTPError as exc:
            return Refused(Step.SIGNATURE, exc, source.name)
    return _events(read, body, event_id=event_id, received_at=received_at)


def _events(
    read: ReadBody, body: bytes, *, event_id: str, received_at: float
) -> Refused | Accepted:
    """The events a verified body yields, each routed by the request's table snapshot."""
    source = read.source
    request = read.request
    headers = request.headers
    content_type = headers.get("content-type", "")
    try:
        parsed = parse_request(source, content_type, headers, body)
    except HTTPError as exc:
        return Refused(Step.BODY, exc, source.name)
    stored = kept_headers(headers)
    if read.coding is not None:
        stored = _unsigned(stored)  # ms-signature is over the encoded bytes: useless downstream
    table = read.table
    name = source.name
    single = len(parsed) == 1
    events = []
    for index, part in enumerate(parsed):
        targets = table.match(name, part.type, part.fields)
        # Positional: a class called with keywords costs several thousand instructions more.
        event = Event(
            event_id if single else derived_event_id(event_id, index),  # id
            name,  # source
            part.type,  # type
            received_at,
            content_type,
            request.method,
            # headers: the provider's signature would not verify on a body relay cut out of its own
            stored if part.original_body else _unsigned(stored),
            part.body,  # body
            targets,
            # dedupe_key
            keys.dedupe_key(name, part.dedupe_value) if part.dedupe_value is not None else "",
            # order: FIFO per key, computed once, here, and kept with the event
            # (relay.config.control)
            order_keys(table.targets, targets, part.fields),
        )
        events.append(event)
    return tuple.__new__(Accepted, (event_id, source, tuple(events), tuple(parsed)))  # _made


def _unsigned(headers: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(h for h in headers if h[0] != "ms-signature")


def accept(
    table: RouteTable,
    request: Request,
    sent: bytes,
    *,
    event_id: str,
    received_at: float,
    signatures: bool = True,
) -> Refused | Handshake | Accepted:
    """Both phases on a whole body as sent (decoded here, within the source's max_body)."""
    head = accept_head(table, request, signatures=signatures)
    if not isinstance(head, ReadBody):
        return head
    body = sent
    if head.coding is not None:
        try:
            body = decode_body(head.coding, sent, head.source.max_body)
        except HTTPError as exc:
            step = Step.SIZE if isinstance(exc, PayloadTooLarge) else Step.ENCODING
            return Refused(step, exc, head.source.name)
    return accept_body(
        head, sent, body, event_id=event_id, received_at=received_at, signatures=signatures
    )
