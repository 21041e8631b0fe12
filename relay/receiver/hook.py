"""The aiohttp adapter of `/hooks/{source}[/{token}]`: I/O around relay.receiver.accept.

The route table is read once per request; the decisions are `accept_head` (before any body is
read) and `accept_body`; what stays here is reading and decoding the body, the commit through the
intake (or the spool), and writing the answer. Statuses are DESIGN.md's: 202 only after the
commit, 400/401/404/405/408/413/415 for input problems, 503 when Redis cannot take the event,
never 410.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson
from aiohttp import web
from aiohttp.streams import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy

from relay.config.settings import Settings
from relay.core.errors import HTTPError, PayloadTooLarge, RequestTimeout, Unavailable
from relay.core.ids import new_event_id
from relay.core.logs import ContextBinding
from relay.receiver.accept import (
    Accepted,
    Handshake,
    ReadBody,
    Refused,
    Request,
    Step,
    accept_body,
    accept_head,
)
from relay.receiver.batch import Committed
from relay.receiver.decoding import BodyDecoder
from relay.receiver.intake import IntakeWriter
from relay.receiver.middleware import error_response
from relay.receiver.state import (
    FACTS,
    METRICS,
    ROUTES,
    SETTINGS,
    SPOOL,
    WRITER,
    RoutesHolder,
)

_NO_QUERY: Mapping[str, str] = MappingProxyType({})
#: The binding's bound method: a call of it is one Python call, a call of the instance is not.
_bind_event_id = ContextBinding("event_id").__call__
#: The 202's one header of its own: copied by aiohttp from a multidict in C, cheaper per reply
#: than `content_type=` (whose checks run each time) or a plain mapping.
_JSON = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"}))


def utf8_headers(headers: CIMultiDictProxy[str]) -> CIMultiDictProxy[str]:
    """The headers with bytes that are not UTF-8 replaced by U+FFFD.

    aiohttp decodes header bytes with surrogateescape. A lone surrogate can be neither stored
    (orjson, redis-py) nor answered, and it failed the whole group commit: every request
    batched with it got a 503.
    """
    if all(map(str.isascii, headers.values())):
        return headers
    cleaned = CIMultiDict(
        (name, value.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        for name, value in headers.items()
    )
    return CIMultiDictProxy(cleaned)


async def hook(request: web.Request) -> web.StreamResponse:
    """The router's handler of /hooks/{source}[/{token}]: the requests relay.receiver.dispatch
    leaves to the app (an `Expect` header, an escaped path); the same as `handle_hook`."""
    match_info = request.match_info
    return await handle_hook(
        request.app, request, match_info["source"], match_info.get("token"), request[FACTS]
    )


async def handle_hook(
    app: web.Application,
    request: web.BaseRequest,
    source_name: str,
    token: str | None,
    facts: dict[str, Any],
) -> web.StreamResponse:
    """Every method on /hooks/{source}[/{token}]: decide, read, decide, commit, answer; what the
    canonical log line says goes in `facts`."""
    method = request.method
    # The app's state dict itself: `app[KEY]` is a Python call (Application.__getitem__) per key.
    state = app._state
    routes: RoutesHolder = state[ROUTES]  # type: ignore[assignment]
    # Only a GET (the ASP.NET handshake) reads the query: parsing it would cost every POST.
    query = request.query if method == "GET" else _NO_QUERY
    head = accept_head(
        routes.table,  # the one snapshot this request is decided with
        # tuple.__new__: a NamedTuple made without its generated __new__ (accept's docstring).
        tuple.__new__(Request, (method, source_name, token, utf8_headers(request.headers), query)),
    )
    if not isinstance(head, ReadBody):
        return _answer(head, facts)
    source = head.source
    facts["source"] = source.name
    length = request.content_length
    if head.coding is None and length is not None and request.content.is_eof():
        # The whole body has arrived, its length said (the usual case): no read can wait, so
        # no timer is needed, nor a read's coroutines.
        sent = body = read_arrived(request, length, source.max_body)
    else:
        sent, body = await _read_slowly(request, head, app[SETTINGS].read_timeout, facts)
    facts["bytes"] = len(body)
    now = time.time()
    decided = accept_body(head, sent, body, event_id=new_event_id(now), received_at=now)
    if isinstance(decided, Refused):
        return _refusal(decided, facts)
    # The commit, here rather than in a coroutine of its own (one less per request to make and
    # to resume twice): make the events durable (Redis, or the spool while Redis is down),
    # then answer 202.
    events = decided.events
    source = decided.source
    facts["event_id"] = decided.id
    facts["type"] = events[0].type if len(events) == 1 else [e.type for e in events]
    # Every later line of this request carries its event id (the spool's, a crash's): aiohttp
    # runs each request in a task of its own, so the binding ends with the request.
    _bind_event_id(decided.id)
    window = source.dedupe.window if source.dedupe else 0.0
    spooled = False
    try:
        writer: IntakeWriter = state[WRITER]  # type: ignore[assignment]
        settings: Settings = state[SETTINGS]  # type: ignore[assignment]
        committed = await writer.submit(
            events, dedupe_window=window, max_wait=settings.intake_timeout
        )
    except Unavailable:
        if not source.spool:
            raise
        committed, spooled = await _spool(app, facts, decided, window), True
    if committed.duplicate:
        facts["duplicate"] = True
    return web.Response(status=202, body=reply_body(decided, committed, spooled), headers=_JSON)


def _answer(head: Refused | Handshake, facts: dict[str, Any]) -> web.Response:
    """The answer of a request decided from its head alone."""
    if isinstance(head, Handshake):
        facts["source"] = head.source
        facts["handshake"] = head.kind.value
        return web.Response(
            status=head.status, text=head.text, content_type=head.content_type, headers=head.headers
        )
    if head.step is Step.ENCODING:
        facts["refused_body"] = "encoding"
    return _refusal(head, facts)


def _refusal(refused: Refused, facts: dict[str, Any]) -> web.Response:
    """The JSON error of a refused request; its reason goes on the canonical log line."""
    if refused.source is not None:
        facts["source"] = refused.source
    facts.setdefault("reason", refused.message)
    return error_response(refused.status, refused.message, dict(refused.headers) or None)


def read_arrived(request: web.BaseRequest, length: int, limit: int) -> bytes:
    """`read_body` of a body of `length` bytes (its Content-Length) that has all arrived
    (`request.content.is_eof()`): taken from the buffer at once."""
    _refuse_declared(length, limit)
    content = request.content
    if type(content) is StreamReader and not content._buffer_offset and content._exception is None:
        # What read_nowait(-1) returns, without its call of the protocol's resume_reading: that
        # one runs the HTTP parser on b"" (and asks the transport to read on) for every request.
        # Neither has anything to do once the body has all arrived: feed_eof already resumed
        # reading, and a body under the stream's low-water mark never paused it; pipelined
        # requests held back by a full queue are parsed again when aiohttp takes the next one
        # (RequestHandler.start), as after a request whose body is never read. The buffer is
        # emptied, so the stream is at its end (`at_eof`), as read_nowait leaves it.
        buffer = content._buffer
        if length < content._low_water:
            body = buffer[0] if len(buffer) == 1 else b"".join(buffer)
            buffer.clear()
            content._size = 0
            content._cursor += len(body)
            return body
    return content.read_nowait(-1)


def _refuse_declared(length: int, limit: int) -> None:
    """413 for a body whose Content-Length is over the source's `limit`, before reading it."""
    if length > limit:
        raise PayloadTooLarge(f"the body is {length} bytes; this source takes at most {limit}")


async def read_body(request: web.BaseRequest, limit: int) -> bytes:
    """The raw body, refusing (413) anything over `limit` before or while reading it."""
    length = request.content_length
    if length is not None:
        _refuse_declared(length, limit)
        body = await request.content.read(limit + 1) if length else b""
        if len(body) == length:
            return body
        chunks, size = [body], len(body)
    else:
        chunks, size = [], 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over {limit} bytes, the most this source takes")
        chunks.append(chunk)


async def _read_slowly(
    request: web.BaseRequest, head: ReadBody, read_timeout: float, facts: dict[str, Any]
) -> tuple[bytes, bytes]:
    """(The body as sent, decoded) of a body still arriving or sent with a coding, within
    `read_timeout`: a client trickling its body must not hold this handler (and its memory)."""
    if head.coding is not None:
        return await _read_decoded(request, head, read_timeout, facts)
    try:
        async with asyncio.timeout(read_timeout):
            body = await read_body(request, head.source.max_body)
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {read_timeout:g} s") from None
    return body, body


async def _read_decoded(
    request: web.BaseRequest, head: ReadBody, read_timeout: float, facts: dict[str, Any]
) -> tuple[bytes, bytes]:
    """(The body as sent, decoded), refused as soon as either passes the source's max_body.

    Fed to the decoder chunk by chunk as the socket gives them; the bytes as sent are kept only
    where a signature needs them (ms-signature).
    """
    assert head.coding is not None
    limit = head.source.max_body
    decoder = BodyDecoder(head.coding, limit)
    kept: list[bytes] | None = [] if head.keeps_sent else None
    try:
        length = request.content_length
        if length is not None and length > decoder.encoded_limit:
            raise PayloadTooLarge(f"the compressed body is {length} bytes; the most is {limit}")
        async with asyncio.timeout(read_timeout):
            while chunk := await request.content.readany():
                if kept is not None:
                    kept.append(chunk)
                decoder.feed(chunk)
        body = decoder.finish()
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {read_timeout:g} s") from None
    except HTTPError as exc:
        reason = "too_large" if isinstance(exc, PayloadTooLarge) else "corrupt"
        facts["refused_body"] = reason
        raise
    facts["encoded_bytes"] = decoder.encoded_size
    return (b"".join(kept) if kept is not None else b""), body


async def _spool(
    app: web.Application, facts: dict[str, Any], accepted: Accepted, window: float
) -> Committed:
    """Redis cannot take the events and this provider will not retry: keep them on local disk
    (fsynced before the 202); the drainer moves them into Redis once Redis is back. SpoolFull
    is itself an Unavailable: a clear 503."""
    events = accepted.events
    await asyncio.to_thread(app[SPOOL].append_many, events, window)
    facts["spooled"] = True
    app[METRICS].spooled.labels(accepted.source.name).inc()
    return Committed((None,) * len(events))


def reply_body(accepted: Accepted, committed: Committed, spooled: bool) -> bytes:
    """The 202's body: `_reply` as JSON."""
    events = accepted.events
    if len(events) == 1 and not spooled and committed.duplicate_of[0] is None:
        # The usual request (one new event, in Redis): the same bytes without `_reply`'s
        # general walk over the events and their duplicates.
        event = events[0]
        dumps = orjson.dumps
        request_id = dumps(accepted.id)
        targets = _TARGETS_JSON.get(event.targets)
        if targets is None:
            targets = dumps(event.targets)
            if len(_TARGETS_JSON) < _TARGETS_MAX:  # a few per routes.toml; bounded all the same
                _TARGETS_JSON[event.targets] = targets
        return _ONE_NEW % (
            request_id,
            request_id if event.id == accepted.id else dumps(event.id),  # the same, unsplit
            dumps(event.type),
            targets,
        )
    return orjson.dumps(_reply(accepted, committed, spooled))


#: The targets of the usual 202, rendered by orjson: an event's targets are one of the few
#: tuples the route table answers, so each is rendered once.
_TARGETS_JSON: dict[tuple[str, ...], bytes] = {}
_TARGETS_MAX = 1024


#: orjson's rendering of `_reply` for one new event, its values (each rendered by orjson)
#: left out: filled in with one %, without building the dicts and the list to render.
_ONE_NEW = b'{"id":%b,"events":[{"id":%b,"type":%b,"targets":%b}],"duplicate":false}'


def _reply(accepted: Accepted, committed: Committed, spooled: bool) -> dict[str, Any]:
    """The 202's JSON: the request's id, each event with its targets, duplicates marked."""
    reply: dict[str, Any] = {
        "id": accepted.id,
        "events": [
            {"id": e.id, "type": e.type, "targets": e.targets}
            | ({"duplicate_of": dup} if dup else {})
            for e, dup in zip(accepted.events, committed.duplicate_of, strict=True)
        ],
        "duplicate": committed.duplicate,
    }
    if spooled:
        reply["spooled"] = True
    return reply
