"""From a request's raw parts to events: content type rules, event type, dedupe values.

Pure functions, no I/O, called by relay.receiver.accept (the receiver and `relay check` alike).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import parse_qs

import orjson

# Dedupe keys and route filters read fields with the same lookup (relay.config.filters).
from relay.config.filters import NO_FIELDS, EventFields, field_lookup
from relay.config.filters import lookup_path as lookup_path  # re-exported: callers had it here
from relay.config.model import Source, SourceKind
from relay.core.constants import MAX_SPLIT_BYTES, MAX_SPLIT_EVENTS
from relay.core.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from relay.core.headers import is_form, is_json, media_type

#: Longest event type kept; anything longer is not a real event name.
MAX_EVENT_TYPE = 256

# Module names for the kinds compared on every request: `SourceKind.JSON` is a lookup through
# the enum's metaclass each time, a global name is not.
_JSON, _FORM, _JSON_OR_FORM = SourceKind.JSON, SourceKind.FORM, SourceKind.JSON_OR_FORM
_ASPNET = SourceKind.ASPNET
_HEADER_KINDS = frozenset(kind for kind in SourceKind if kind.reads_header)


class ParsedEvent(NamedTuple):
    """One event found in a request.

    A NamedTuple, as the values of relay.receiver.accept are: one is made per event, and a frozen
    dataclass's __init__ costs about three times as much.
    """

    type: str | None  # None: the request names no event type (acknowledged, unrouted)
    body: bytes  # the bytes to deliver downstream
    dedupe_value: str | None  # None: no dedupe for this event
    # Whether `body` is the provider's own bytes: provider signatures are forwarded only then.
    original_body: bool = True
    # What route filters read of this event (RouteTable.match): its parsed body and headers.
    fields: EventFields = NO_FIELDS


def event_name(value: Any) -> str | None:
    """An event type from a field value: strings and numbers; anything else is no type."""
    if not isinstance(value, str):  # a string first: the usual type, and the fewest checks
        if isinstance(value, bool) or not isinstance(value, _NUMBERS):
            return None
        value = str(value)
    text: str = value.strip()
    if text and len(text) <= MAX_EVENT_TYPE:
        return text
    return None


#: `int | float` as a tuple: a union written in a function is built again on every call.
_NUMBERS = (int, float)


#: A UTF-8 byte order mark: .NET's encoders write one when asked to; RFC 8259 lets a parser
#: ignore it. It is skipped for parsing only: the body forwarded keeps its bytes.
_BOM = b"\xef\xbb\xbf"


def parse_json(body: bytes) -> Any:
    """A JSON document, or 400 with the reason."""
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
    if not body.strip():
        raise BadRequest("the body is empty; this source takes JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc


def parse_form(body: bytes) -> dict[str, str]:
    """The fields of an URL-encoded form, or 400. A repeated field keeps its first value."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("the form body is not valid UTF-8") from exc
    try:
        fields = parse_qs(text, keep_blank_values=True, max_num_fields=1000)
    except ValueError as exc:
        raise BadRequest(f"the form body cannot be parsed: {exc}") from exc
    return {name: values[0] for name, values in fields.items()}


def _first_field(document: Any, names: str, form: bool) -> str | None:
    """`name=value` of the first field of `a|b` the document has (the name keeps a course and
    a program with the same id apart), or None."""
    if document is None:
        return None
    for name in names.split("|"):
        value = field_lookup(document, name, form)
        if value is not None and value != "" and not isinstance(value, dict | list):
            return f"{name}={value}"
    return None


def dedupe_value(
    source: Source,
    document: Any,
    headers: Mapping[str, str],
    suffix: str = "",
    form: bool = False,
) -> str | None:
    """The inbound dedupe value of a request, or None when the source has none or a part lacks."""
    if source.dedupe is None:
        return None
    parts = []
    for key in source.dedupe.key:
        scope, _, name = key.partition(":")
        value: Any
        if scope == "header":
            value = headers.get(name)
        elif "|" in name:
            # "a|b": the first of several fields present (Fellow sends courseId or programId).
            value = _first_field(document, name, form)
        else:
            value = field_lookup(document, name, form) if document is not None else None
        if value is None or isinstance(value, dict | list) or value == "":
            return None
        parts.append(str(value))
    return "\x1f".join(parts) + suffix


def parse_request(
    source: Source, content_type: str, headers: Mapping[str, str], body: bytes
) -> list[ParsedEvent]:
    """The events in one request to `source`; raise 415 or 400 for input it cannot take.

    `headers` must be case-insensitive (aiohttp's CIMultiDict) or lower-cased.
    """
    kind = source.kind
    if kind in _HEADER_KINDS:
        document: Any = None
        if is_json(content_type) and body.strip():
            try:
                document = orjson.loads(body)
            except orjson.JSONDecodeError:
                document = None  # a header source forwards any body as it is
        etype = event_name(headers.get(source.event))
        fields = EventFields(document, False, headers)
        return [ParsedEvent(etype, body, dedupe_value(source, document, headers), True, fields)]
    if kind is _ASPNET:
        return _parse_aspnet(source, content_type, headers, body)
    form = False
    either = kind is _JSON_OR_FORM
    if kind is _JSON or (either and is_json(content_type)):
        if not is_json(content_type):
            raise UnsupportedMediaType(
                f"source '{source.name}' takes application/json, not {media_type(content_type)!r}"
            )
        document = parse_json(body)
    elif kind is _FORM or (either and is_form(content_type)):
        if not is_form(content_type):
            raise UnsupportedMediaType(
                f"source '{source.name}' takes application/x-www-form-urlencoded, "
                f"not {media_type(content_type)!r}"
            )
        document = parse_form(body)
        form = True
    else:
        raise UnsupportedMediaType(
            f"source '{source.name}' takes application/json or "
            f"application/x-www-form-urlencoded, not {media_type(content_type)!r}"
        )
    event = source.event
    # field_lookup's first case (a JSON object's top-level field, a form's field) without its
    # call, and no call for a source without dedupe: the receiver asks for every request.
    if type(document) is dict and "." not in event:
        etype = event_name(document.get(event))
    else:
        etype = event_name(field_lookup(document, event, form))
    dedupe = None if source.dedupe is None else dedupe_value(source, document, headers, "", form)
    # tuple.__new__: NamedTuples made without their generated __new__ (relay.receiver.accept).
    fields = tuple.__new__(EventFields, (document, form, headers))
    return [tuple.__new__(ParsedEvent, (etype, body, dedupe, True, fields))]


_DECODER = json.JSONDecoder()
_SPACE = " \t\n\r"


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in _SPACE:
        at += 1
    return at


def split_array_text(text: str, key: str) -> tuple[str, list[str], str]:
    """Cut a JSON object's text around the array under `key`: (before, elements, after).

    `before + "[" + ", ".join(elements) + "]" + after` is the text again, each element being
    its exact original text. The text must already have parsed as a JSON object with that key
    holding an array; with duplicate keys the last one counts, as in the parser.
    """
    found: tuple[int, int] | None = None
    at = _skip(text, 0) + 1  # past "{"
    while True:
        at = _skip(text, at)
        if text[at] == "}":
            break
        name, at = _DECODER.raw_decode(text, at)
        at = _skip(text, at) + 1  # past ":"
        start = _skip(text, at)
        _, at = _DECODER.raw_decode(text, start)
        if name == key:
            found = (start, at)
        at = _skip(text, at)
        if text[at] == ",":
            at += 1
    if found is None:
        raise ValueError(f"no {key!r} array")
    start, end = found
    elements = []
    at = _skip(text, start + 1)  # past "["
    while text[at] != "]":
        _, stop = _DECODER.raw_decode(text, at)
        elements.append(text[at:stop])
        at = _skip(text, stop)
        if text[at] == ",":
            at = _skip(text, at + 1)
    return text[:start], elements, text[end:]


def _parse_aspnet(
    source: Source, content_type: str, headers: Mapping[str, str], body: bytes
) -> list[ParsedEvent]:
    """ASP.NET WebHooks: one event per entry of `Notifications`, typed by its `Action`.

    A request with one notification is forwarded byte for byte. A request with several is split:
    each event's body is the provider's own text with the `Notifications` array cut down to that
    one notification (its own text, verbatim), so each target gets only what is routed to it and
    no number, key order or line end is rewritten.
    """
    if not is_json(content_type):
        raise UnsupportedMediaType(
            f"source '{source.name}' (ASP.NET WebHooks) takes application/json, "
            f"not {media_type(content_type)!r}"
        )
    document = parse_json(body)
    if not isinstance(document, dict):
        raise BadRequest("an ASP.NET WebHooks body must be a JSON object")
    notifications = document.get("Notifications")
    if not isinstance(notifications, list) or not notifications:
        raise BadRequest("an ASP.NET WebHooks body needs a non-empty 'Notifications' array")
    if len(notifications) == 1:
        n = notifications[0]
        etype = event_name(n.get("Action")) if isinstance(n, dict) else None
        fields = EventFields(document, False, headers)
        return [ParsedEvent(etype, body, dedupe_value(source, document, headers), True, fields)]
    if len(notifications) > MAX_SPLIT_EVENTS:
        raise PayloadTooLarge(
            f"{len(notifications)} notifications in one request; relay takes at most "
            f"{MAX_SPLIT_EVENTS} (send them in several requests)"
        )
    events = []
    try:
        head, parts, tail = split_array_text(body.decode("utf-8"), "Notifications")
    except (ValueError, RecursionError) as exc:  # parsed above, so only absurd nesting gets here
        raise BadRequest("the notifications cannot be split out of this body") from exc
    size = 0
    for index, n in enumerate(notifications):
        etype = event_name(n.get("Action")) if isinstance(n, dict) else None
        part = (head + "[" + parts[index] + "]" + tail).encode("utf-8")
        size += len(part)
        if size > MAX_SPLIT_BYTES:
            raise PayloadTooLarge(
                f"split into one event per notification, this request would store over "
                f"{MAX_SPLIT_BYTES} bytes of bodies; send fewer notifications per request"
            )
        # Filters read the event as it is delivered: its body holds this notification only.
        own = EventFields({**document, "Notifications": [n]}, False, headers)
        events.append(
            ParsedEvent(
                etype,
                part,
                dedupe_value(source, document, headers, suffix=f"#{index}"),
                original_body=False,
                fields=own,
            )
        )
    return events
