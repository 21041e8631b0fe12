"""How the event page shows a body (pure): JSON pretty-printed, a form as a table, else text.

The raw bytes are always shown too (as text, invalid UTF-8 as \\xNN), so an operator can see
exactly what the provider sent. Bodies longer than SHOWN_BYTES are cut, and the page says so.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qsl

import orjson

from relay.core.headers import is_form, is_json

#: At most this much of a body is put on the page (a 10 MiB body would make it unusable).
SHOWN_BYTES = 256 * 1024
#: A form with more fields than this is shown raw only.
MAX_FORM_FIELDS = 1000


class BodyKind(StrEnum):
    """How a body is shown besides its raw text."""

    JSON = "json"
    FORM = "form"
    TEXT = "text"
    EMPTY = "empty"


@dataclass(frozen=True)
class BodyView:
    """A body ready for the page: the pretty form (per kind), the raw text, and its size."""

    kind: BodyKind
    raw: str
    size: int
    cut: bool  # only the first SHOWN_BYTES are shown
    pretty: str = ""  # JSON, indented
    fields: tuple[tuple[str, str], ...] = ()  # form fields, in order


def raw_text(body: bytes, limit: int = SHOWN_BYTES) -> str:
    """The first `limit` bytes as text: invalid UTF-8 as \\xNN, a cut character left out."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")
    return decoder.decode(body[:limit], final=len(body) <= limit)


def _pretty_json(body: bytes) -> str | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return orjson.dumps(parsed, option=orjson.OPT_INDENT_2).decode()


def _form_fields(body: bytes) -> tuple[tuple[str, str], ...] | None:
    try:
        text = body.decode("utf-8")
        fields = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return None
    if len(fields) > MAX_FORM_FIELDS:
        return None
    return tuple(fields)


def view_body(body: bytes, content_type: str) -> BodyView:
    """The body as the page shows it: by its content type, and JSON also when it parses as JSON."""
    cut = len(body) > SHOWN_BYTES
    raw = raw_text(body)
    base = BodyView(kind=BodyKind.TEXT, raw=raw, size=len(body), cut=cut)
    if not body:
        return BodyView(kind=BodyKind.EMPTY, raw="", size=0, cut=False)
    if cut:
        return base  # a part of a document is not a document: raw only
    if is_form(content_type):
        fields = _form_fields(body)
        if fields is not None:
            return BodyView(BodyKind.FORM, raw, len(body), cut, fields=fields)
    stripped = body.lstrip()
    if is_json(content_type) or stripped[:1] in (b"{", b"["):
        pretty = _pretty_json(body)
        if pretty is not None:
            return BodyView(BodyKind.JSON, raw, len(body), cut, pretty=pretty)
    return base
