"""The API's filters and fields: each declared once, with its limits, its parser and its schema.

A `Param` parses one raw string (a query parameter, or a string field of a JSON body) into a
value, or raises a 400 naming it; the same declaration gives the parameter's OpenAPI schema, so
the document and the checks cannot drift apart. Times are read as the operator commands read
`--since`: ISO 8601 (UTC when no offset is given) or a duration ago (`2h`, `30m`, `7d`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from multidict import MultiMapping

from relay.admin.errors import ApiError, bad_field
from relay.core.times import parse_since
from relay.ops.events import STATES
from relay.ops.events.walk import EventPosition, event_cursor
from relay.ops.pages import MAX_CURSOR, Position
from relay.store.records import DeliveryState

#: Longest source, target or type filter accepted (routes.toml names are far shorter).
MAX_FILTER = 200
#: Longest id prefix: a whole event id is 30 characters, plus a split suffix.
MAX_ID_PREFIX = 40
#: Longest pause reason kept.
MAX_REASON = 500
#: Seconds a listing page reads the index at most: past it the page is answered as far as it
#: got (`partial`, with a cursor to go on), so a filter that matches little never holds a
#: request long, whatever the machine's load.
SCAN_BUDGET = 0.05
#: Page size: default and most.
DEFAULT_LIMIT = 50
MAX_LIMIT = 200

_ID_PREFIX = re.compile(r"[A-Za-z0-9_-]+")
_NAME = re.compile(r"[^\x00-\x1f\x7f]+")  # any printable text: names come from routes.toml


def _text(name: str, raw: str, most: int) -> str:
    if not raw:
        raise bad_field(name, "must not be empty")
    if len(raw) > most:
        raise bad_field(name, f"at most {most} characters")
    if not _NAME.fullmatch(raw):
        raise bad_field(name, "must not hold control characters")
    return raw


def _time(name: str, raw: str) -> float:
    if len(raw) > 64:
        raise bad_field(name, "at most 64 characters")
    try:
        value = parse_since(raw)
    except (ValueError, OverflowError) as exc:
        raise bad_field(name, str(exc)) from None
    if not math.isfinite(value):
        raise bad_field(name, "must be a finite time")
    return value


def _limit(name: str, raw: str) -> int:
    if not raw.isdigit() or len(raw) > 4:
        raise bad_field(name, f"must be a whole number from 1 to {MAX_LIMIT}")
    value = int(raw)
    if not 1 <= value <= MAX_LIMIT:
        raise bad_field(name, f"must be a whole number from 1 to {MAX_LIMIT}")
    return value


def _cursor(name: str, raw: str) -> Position:
    try:
        return Position.from_cursor(raw)
    except ValueError:
        raise bad_field(name, "not a cursor this API gave (use next_cursor as it is)") from None


def _event_cursor(name: str, raw: str) -> EventPosition:
    try:
        return event_cursor(raw)
    except ValueError:
        raise bad_field(name, "not a cursor this API gave (use next_cursor as it is)") from None


def _id_prefix(name: str, raw: str) -> str:
    if len(raw) > MAX_ID_PREFIX or not _ID_PREFIX.fullmatch(raw):
        raise bad_field(name, f"letters, digits, '_' and '-' only, at most {MAX_ID_PREFIX}")
    return raw


@dataclass(frozen=True)
class Param:
    """One query parameter or string field: its name, what it means, its parser and schema."""

    name: str
    description: str
    parse: Callable[[str, str], Any]
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})

    def read(self, raw: str) -> Any:
        """The parsed value of `raw`; ApiError (400 naming this field) when it is wrong."""
        return self.parse(self.name, raw)


def text_param(name: str, description: str, most: int = MAX_FILTER) -> Param:
    """A plain text filter (a source or target name, a glob)."""
    return Param(
        name,
        description,
        lambda n, raw: _text(n, raw, most),
        {"type": "string", "minLength": 1, "maxLength": most, "pattern": "^[^\\x00-\\x1f\\x7f]+$"},
    )


def choice_param(name: str, description: str, choices: Sequence[str]) -> Param:
    """One of a few words."""

    def parse(n: str, raw: str) -> str:
        if raw not in choices:
            raise bad_field(n, f"must be one of: {', '.join(choices)}")
        return raw

    return Param(name, description, parse, {"type": "string", "enum": list(choices)})


def time_param(name: str, description: str) -> Param:
    """A time: ISO 8601 or a duration ago."""
    return Param(
        name,
        description + " ISO 8601 (UTC unless an offset is given) or a duration ago: 2h, 30m, 7d.",
        _time,
        {"type": "string", "minLength": 1, "maxLength": 64},
    )


LIMIT = Param(
    "limit",
    f"Page size, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).",
    _limit,
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
)
CURSOR = Param(
    "cursor",
    "Where the page starts: the `next_cursor` of the previous page.",
    _cursor,
    {"type": "string", "minLength": 1, "maxLength": MAX_CURSOR},
)
#: The events listing's cursor: a minute list's position, or the older sorted set's.
EVENT_CURSOR = Param(
    "cursor",
    "Where the page starts: the `next_cursor` of the previous page.",
    _event_cursor,
    {"type": "string", "minLength": 1, "maxLength": MAX_CURSOR},
)
SOURCE = text_param("source", "Only events of this source.")
TYPE = text_param("type", "Only event types matching this glob, as in routes.toml (`COURSE_*`).")
TARGET = text_param("target", "Only events routed to this target.")
ID_PREFIX = Param(
    "id_prefix",
    "Only event ids starting with this (`evt_01M8`).",
    _id_prefix,
    {"type": "string", "minLength": 1, "maxLength": MAX_ID_PREFIX, "pattern": "^[A-Za-z0-9_-]+$"},
)
RECEIVED_FROM = time_param("received_from", "Only events received at or after this time.")
RECEIVED_TO = time_param("received_to", "Only events received at or before this time.")

EVENT_STATE = choice_param(
    "state",
    "Only events with a delivery in this state (on `target` when given), or `unrouted`.",
    [str(s) for s in STATES],
)
DEAD_STATE = choice_param(
    "state",
    "`dead` (ran out of attempts) or `gone` (the target answered 410).",
    [str(DeliveryState.DEAD), str(DeliveryState.GONE)],
)
DEAD_FROM = time_param("dead_from", "Only deliveries that went dead at or after this time.")
DEAD_TO = time_param("dead_to", "Only deliveries that went dead at or before this time.")

#: The filters of GET /api/v1/events.
EVENT_FILTERS = (SOURCE, TYPE, TARGET, EVENT_STATE, RECEIVED_FROM, RECEIVED_TO, ID_PREFIX)
#: The filters of GET /api/v1/dead-letters and of a bulk replay's `filter`.
DEAD_FILTERS = (
    SOURCE,
    TYPE,
    text_param("target", "Only deliveries to this target."),
    DEAD_STATE,
    RECEIVED_FROM,
    RECEIVED_TO,
    DEAD_FROM,
    DEAD_TO,
    ID_PREFIX,
)


def read_query(query: MultiMapping[str], params: Sequence[Param]) -> dict[str, Any]:
    """The parsed query parameters; 400 for an unknown or repeated one, naming it."""
    known = {p.name: p for p in params}
    values: dict[str, Any] = {}
    for name in query:
        if name not in known:
            raise bad_field(name, "unknown parameter")
        given = query.getall(name)
        if len(given) > 1:
            raise bad_field(name, "given more than once")
        values[name] = known[name].read(given[0])
    return values


def read_fields(
    body: Mapping[str, Any], params: Sequence[Param], where: str = ""
) -> dict[str, Any]:
    """The parsed string fields of a JSON object; 400 for an unknown or non-string one."""
    known = {p.name: p for p in params}
    values: dict[str, Any] = {}
    for name, raw in body.items():
        path = f"{where}{name}"
        if name not in known:
            raise bad_field(path, "unknown field")
        if not isinstance(raw, str):
            raise bad_field(path, "must be a string")
        try:
            values[name] = known[name].read(raw)
        except ApiError as exc:
            raise bad_field(path, exc.message.partition(": ")[2] or exc.message) from None
    return values
