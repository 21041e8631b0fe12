"""Route filters: `filter = { "body:course.id" = ["42", "7*"], "header:x-tenant" = "acme" }`.

A route with a filter applies to an event only when every field it lists has a value that matches
one of that field's glob patterns. The fields are named as in `dedupe` (`body:<path>`,
`header:<name>`) and read by the same path walk (behind `lookup_path` and `field_lookup`, which
dedupe uses), so the two never disagree on what a field is. Globs mean exactly
`fnmatch.fnmatchcase`: case-sensitive, `*` `?` `[seq]` `[!seq]`, no escape character (`[*]` is a
literal star). A missing field, a JSON null, an object or an array matches no pattern, not even
`"*"`.

Pure values and functions, no I/O. Filters are compiled once, when routes.toml is loaded (and so
on every reload); the receiver's routing (`RouteTable.match`) and `relay check`'s dry run
(`RouteTable.explain`) both run `Filter.failing`, so they cannot disagree.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

from relay.config.fields import HEADER_NAME

__all__ = [
    "NO_FIELDS",
    "Absent",
    "EventFields",
    "FieldFilter",
    "FieldRef",
    "Filter",
    "Scope",
    "Unmatched",
    "compile_filter",
    "field_lookup",
    "lookup_path",
    "parse_field",
    "quoted",
    "scalar_text",
]

#: Characters that make a pattern a glob; a pattern without any is compared as a plain string.
_GLOB_CHARS = frozenset("*?[")


class Scope(StrEnum):
    """Which part of a request a field is read from (the word before the colon)."""

    BODY = "body"
    HEADER = "header"


class Absent(Enum):
    """Why a field has no text to match: shown by `relay check` in place of the value."""

    MISSING = "missing"
    NULL = "null"
    NOT_SCALAR = "an object or array"


#: A field's value as the patterns see it: its text, or why there is none.
Value = str | Absent


class EventFields(NamedTuple):
    """What a filter can read of one event: its parsed body and the request's headers."""

    document: Any  # the parsed JSON document, the form's fields (a dict), or None: no body fields
    form: bool  # whether `document` is a form: its fields are named literally, not as paths
    headers: Mapping[str, str]  # case-insensitive (aiohttp's CIMultiDict) or lower-cased names


#: An event with nothing to read (no body document, no headers): every field is missing.
NO_FIELDS = EventFields(None, False, MappingProxyType({}))


#: What `_walk` answers for a path that leads nowhere (None is JSON's null).
_NOTHING: Any = object()


def _walk(document: Any, parts: Sequence[str], absent: Any) -> Any:
    node = document
    for part in parts:
        # dict first: parsed JSON is made of dicts, and an isinstance check against the Mapping
        # ABC costs several times as much (this runs per filtered field and dedupe key).
        if isinstance(node, dict) or (not isinstance(node, list) and isinstance(node, Mapping)):
            if part not in node:
                return absent
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return absent
    return node


def lookup_path(document: Any, path: str) -> Any:
    """The value at a dotted path (`course.id`, `items.0.type`), or None when absent."""
    return _walk(document, path.split("."), None)


def field_lookup(document: Any, path: str, form: bool) -> Any:
    """A field of a form (its literal name) or of a JSON document (a dotted path), or None."""
    if form or (type(document) is dict and "." not in path):
        # A form's field, or a JSON object's top-level one (a source's `event` field, mostly):
        # what `_walk` finds in one step, without splitting the path.
        return document.get(path) if isinstance(document, dict) else None
    return lookup_path(document, path)


def scalar_text(value: Any) -> Value:
    """The text a pattern is matched against: strings as they are, JSON's true and false,
    integers in decimal, other numbers as Python's str() writes them (`1.5`, `1000.0`)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # before int: a bool is an int in Python
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return Absent.NULL
    return Absent.NOT_SCALAR


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A field named as in routes.toml: `body:course.id` or `header:x-tenant`."""

    text: str  # as written in the file, for messages
    scope: Scope
    name: str  # the body path or form field name; the lower-cased header name
    # Read per event: the path split once, and the scope as a bool (no Enum lookup).
    _parts: tuple[str, ...] = field(init=False, compare=False, repr=False)
    _header: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_parts", tuple(self.name.split(".")))
        object.__setattr__(self, "_header", self.scope is Scope.HEADER)

    def read(self, fields: EventFields) -> Value:
        """This field's value in one event."""
        if self._header:
            header = fields.headers.get(self.name)
            return Absent.MISSING if header is None else header
        document = fields.document
        if document is None:
            return Absent.MISSING
        if fields.form:
            found = document.get(self.name, _NOTHING) if isinstance(document, dict) else _NOTHING
        else:
            # Walked with a sentinel: a JSON null is not a missing key, and check shows which.
            found = _walk(document, self._parts, _NOTHING)
        if type(found) is str:  # the usual case first
            return found
        return Absent.MISSING if found is _NOTHING else scalar_text(found)


def parse_field(text: str) -> FieldRef:
    """A FieldRef from `body:<path>` or `header:<name>`; ValueError saying what is wrong."""
    scope, colon, name = text.partition(":")
    if not colon or scope not in (Scope.BODY, Scope.HEADER):
        raise ValueError("write 'body:<field path>' or 'header:<name>', e.g. \"body:course.id\"")
    if scope == Scope.HEADER:
        if not HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a header name")
        return FieldRef(text, Scope.HEADER, name.lower())
    if not name:
        raise ValueError("the field path is empty")
    if "|" in name:
        raise ValueError("'a|b' (the first field present) is for dedupe keys only")
    if any(not part for part in name.split(".")):
        raise ValueError(f"{name!r} has an empty part: write 'a.b', or 'items.0.id' for arrays")
    return FieldRef(text, Scope.BODY, name)


def _compile(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    globs = [p for p in patterns if _GLOB_CHARS.intersection(p)]
    if not globs:
        return None
    # translate() ends each pattern with \Z, so `match` of the alternation is fnmatchcase.
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in globs))


@dataclass(frozen=True)
class FieldFilter:
    """One field of a filter and the glob patterns its value must match one of."""

    ref: FieldRef
    patterns: tuple[str, ...]
    # Plain patterns are a set lookup; the globs one compiled regex (or None without any).
    _plain: frozenset[str] = field(init=False, compare=False, repr=False)
    _globs: re.Pattern[str] | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        plain = frozenset(p for p in self.patterns if not _GLOB_CHARS.intersection(p))
        object.__setattr__(self, "_plain", plain)
        object.__setattr__(self, "_globs", _compile(self.patterns))

    def accepts(self, value: Value) -> bool:
        """Whether a value matches one of the patterns (an absent value never does)."""
        if not isinstance(value, str):  # Absent: missing, null, an object or array
            return False
        if value in self._plain:
            return True
        return self._globs is not None and self._globs.match(value) is not None


@dataclass(frozen=True)
class Unmatched:
    """The first field of a filter an event failed: what `relay check` shows."""

    field: str  # as written in routes.toml
    value: Value
    patterns: tuple[str, ...]

    def describe(self) -> str:
        """`body:course.id is "9", not one of "42", "7*"` (or `is missing`)."""
        seen = self.value.value if isinstance(self.value, Absent) else quoted(self.value)
        listed = ", ".join(quoted(p) for p in self.patterns)
        return f"{self.field} is {seen}, not one of {listed}"


def quoted(text: str) -> str:
    """A value or pattern in double quotes, as routes.toml writes strings."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Filter:
    """Every field must match: the fields in the order written, the first failure reported."""

    fields: tuple[FieldFilter, ...]

    def failing(self, fields: EventFields) -> tuple[FieldFilter, Value] | None:
        """The first field whose value matches none of its patterns, and that value; or None.

        The one matcher: the receiver's routing asks it directly, `relay check` through
        `first_failure`.
        """
        for one in self.fields:
            value = one.ref.read(fields)
            if not one.accepts(value):
                return one, value
        return None

    def matches(self, fields: EventFields) -> bool:
        """Whether the route applies to an event with these fields."""
        return self.failing(fields) is None

    def first_failure(self, fields: EventFields) -> Unmatched | None:
        """What `relay check` shows of the first field that failed, or None: the route applies."""
        found = self.failing(fields)
        if found is None:
            return None
        one, value = found
        return Unmatched(one.ref.text, value, one.patterns)

    def to_dict(self) -> dict[str, list[str]]:
        """As written in routes.toml: field -> patterns (for `relay check --json`)."""
        return {one.ref.text: list(one.patterns) for one in self.fields}


def compile_filter(spec: Mapping[str, tuple[str, ...]]) -> Filter:
    """A Filter from field -> patterns (validated by relay.config.loading); ValueError on a
    bad field name."""
    return Filter(tuple(FieldFilter(parse_field(name), tuple(p)) for name, p in spec.items()))
