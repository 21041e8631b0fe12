"""A [sources.NAME] table of routes.toml: a provider that posts to /hooks/NAME, validated."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from relay.config.fields import HEADER_NAME, NAME, Collector, hint, string_list
from relay.config.model import (
    DEFAULT_DEDUPE_WINDOW,
    HTTP_METHODS,
    RECONCILE_DEDUPE_KEY,
    SOURCE_KINDS,
    Dedupe,
    Reconcile,
    Source,
    SourceKind,
)
from relay.config.reconcile import load_reconcile
from relay.core import constants
from relay.core.headers import IDENTITY, SUPPORTED, Coding
from relay.core.secrets import Secret
from relay.core.units import parse_duration, parse_size

#: Shortest token or source secret accepted: anything shorter is a placeholder or guessable.
#: (ASP.NET WebHooks secrets are 32 to 64 characters; `openssl rand -hex 16` gives 32.)
MIN_SECRET_CHARS = 16
#: A path token is one URL path segment: RFC 3986 unreserved characters only.
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9._~-]+$")

SOURCE_KEYS = (
    "kind",
    "event",
    "methods",
    "token",
    "token_env",
    "secret",
    "secret_env",
    "max_body",
    "dedupe",
    "spool",
    "call_once",
    "content_encodings",
    "reconcile",
)
#: Codings a provider may send that relay does not decode: named in the problem, with why.
_UNDECODED = ("br", "zstd", "compress", "x-compress")
DEDUPE_KEYS = ("key", "window")


def _one_secret(
    c: Collector, table: str, found: tuple[tuple[Secret, ...], str] | None, token: bool
) -> Secret | None:
    """The single token or source secret of a source, checked for shape and length."""
    if found is None:
        return None
    values, key = found
    var = values[0].name
    if len(values) > 1:
        c.add(table, key, f"the value of {var} holds several words; a source takes one")
        return None
    value = values[0].reveal()
    if len(value) < MIN_SECRET_CHARS:
        c.add(
            table,
            key,
            f"the value of {var} is {len(value)} characters: too short to be a real secret "
            f"(at least {MIN_SECRET_CHARS}; try `openssl rand -hex 24`)",
        )
        return None
    if token and not _TOKEN_CHARS.match(value):
        c.add(
            table,
            key,
            f"the value of {var} must be one URL path segment: letters, digits, '-', '.', '_', '~'",
        )
        return None
    return values[0]


def load_source(c: Collector, name: str, data: Mapping[str, Any]) -> Source | None:
    """The Source of one [sources.NAME] table; None (problems in `c`) when it is not valid."""
    table = f"sources.{name}"
    ok = len(c.problems)
    if not NAME.match(name):
        c.add(table, "", "source names may hold letters, digits, '_', '-' and '.'")
    c.unknown_keys(table, data, SOURCE_KEYS)
    kind = _load_kind(c, table, data.get("kind"))
    event = _load_event(c, table, data, kind)
    methods = _load_methods(c, table, data)
    token = _one_secret(c, table, c.secret(table, data, "token", "the path token"), token=True)
    secret_found = c.secret(table, data, "secret", "the signing secret")
    secret = _one_secret(c, table, secret_found, token=False)
    if kind is SourceKind.ASPNET and "secret" not in data and "secret_env" not in data:
        c.add(table, "secret_env", "aspnet sources need the signing secret (ms-signature)")
    elif kind is not SourceKind.ASPNET and ("secret" in data or "secret_env" in data):
        key = "secret" if "secret" in data else "secret_env"
        c.add(table, key, f"only aspnet sources verify a signature; use token_env for {kind}")
    max_body = constants.DEFAULT_BODY_LIMIT
    if "max_body" in data:
        try:
            max_body = parse_size(data["max_body"])
        except ValueError as exc:
            c.add(table, "max_body", str(exc))
    dedupe = _load_dedupe(c, table, data.get("dedupe"), kind)
    reconcile, dedupe = _load_reconcile(c, name, data, kind, dedupe)
    call_once = c.flag(table, data, "call_once", False)
    # A provider that calls once loses the event on a 503, so its events are spooled to disk
    # while Redis is down unless the operator says otherwise.
    spool = c.flag(table, data, "spool", call_once)
    content_encodings = _load_encodings(c, table, data.get("content_encodings", list(SUPPORTED)))
    if len(c.problems) != ok:
        return None
    return Source(
        name=name,
        kind=kind,
        event=event,
        methods=methods,
        token=token,
        secret=secret,
        max_body=max_body,
        dedupe=dedupe,
        spool=spool,
        call_once=call_once,
        content_encodings=content_encodings,
        reconcile=reconcile,
    )


def _load_reconcile(
    c: Collector, name: str, data: Mapping[str, Any], kind: SourceKind, dedupe: Dedupe | None
) -> tuple[Reconcile | None, Dedupe | None]:
    """`reconcile`, and the source's dedupe: a reconciled source dedupes by default."""
    if "reconcile" not in data:
        return None, dedupe
    reconcile = load_reconcile(c, name, kind, data["reconcile"])
    # A synthesized event and a late real webhook must claim the same dedupe key.
    if "dedupe" not in data:
        return reconcile, Dedupe(key=RECONCILE_DEDUPE_KEY, window=DEFAULT_DEDUPE_WINDOW)
    if dedupe is None:
        c.add(
            f"sources.{name}",
            "dedupe",
            "a reconciled source needs dedupe (leave it out for the default)",
        )
    elif any(part.startswith("header:") for part in dedupe.key):
        # A synthesized event has no provider headers: its key would never meet the webhook's.
        c.add(
            f"sources.{name}",
            "dedupe",
            "a reconciled source dedupes on body fields only (leave it out for the default)",
        )
    return reconcile, dedupe


def _load_event(c: Collector, table: str, data: Mapping[str, Any], kind: SourceKind) -> str:
    """`event`: where the event type is, the kind's default when not given or not valid."""
    event = data.get("event", SOURCE_KINDS[kind])
    if kind is SourceKind.ASPNET and "event" in data:
        c.add(table, "event", "aspnet sources always take the type from Notifications[].Action")
    elif not isinstance(event, str) or not event.strip():
        c.add(table, "event", "must be a non-empty string (a field path or a header name)")
        event = SOURCE_KINDS[kind]
    elif kind.reads_header:
        if not HEADER_NAME.match(event):
            c.add(table, "event", f"{event!r} is not a valid header name")
        event = event.lower()  # header lookups are case-insensitive; store the canonical form
    return str(event)


def _load_methods(c: Collector, table: str, data: Mapping[str, Any]) -> tuple[str, ...]:
    """`methods`: the HTTP methods taken, upper-cased (POST and PUT when not given)."""
    if "methods" not in data:
        return HTTP_METHODS
    given = string_list(c, table, "methods", data["methods"])
    if given is None:
        return HTTP_METHODS
    upper = tuple(dict.fromkeys(m.upper() for m in given))
    bad = [m for m in upper if m not in HTTP_METHODS]
    if bad:
        c.add(table, "methods", f"only POST and PUT can be accepted, not {', '.join(bad)}")
    return upper


def _load_kind(c: Collector, table: str, value: Any) -> SourceKind:
    """`kind`: one of SourceKind; JSON stands in after a problem so the rest is still checked."""
    kinds = ", ".join(SOURCE_KINDS)
    if value is None:
        c.add(table, "kind", f"missing; one of: {kinds}")
        return SourceKind.JSON
    if not isinstance(value, str) or value not in SOURCE_KINDS:
        close = hint(value, SOURCE_KINDS) if isinstance(value, str) else ""
        c.add(table, "kind", f"unknown kind {value!r} (one of: {kinds}){close}")
        return SourceKind.JSON
    return SourceKind(value)


def _load_encodings(c: Collector, table: str, value: Any) -> tuple[Coding, ...]:
    """`content_encodings`: a list (empty allowed) of the codings relay decodes."""
    key = "content_encodings"
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        c.add(table, key, 'must be a list of strings, e.g. ["gzip", "deflate"] or []')
        return SUPPORTED
    known = ", ".join(SUPPORTED)
    taken: dict[Coding, None] = {}
    for given in value:
        name = given.strip().lower()
        if name == IDENTITY:  # no coding at all: always taken, listing it changes nothing
            continue
        if name in _UNDECODED:
            c.add(
                table,
                key,
                f"{given!r} is not supported: relay decodes {known} only (no dependency for "
                "br or zstd); a request sent with it gets 415",
            )
        elif name not in SUPPORTED:
            c.add(
                table, key, f"unknown encoding {given!r} (one of: {known}){hint(name, SUPPORTED)}"
            )
        else:
            taken[Coding(name)] = None
    return tuple(taken)


def _load_dedupe(c: Collector, table: str, value: Any, kind: SourceKind) -> Dedupe | None:
    if value is None:
        # ASP.NET senders reuse the body's Id on every retry: dedupe on it unless told otherwise.
        if kind is SourceKind.ASPNET:
            return Dedupe(key=("body:Id",), window=DEFAULT_DEDUPE_WINDOW)
        return None
    if value is False:
        return None
    where = f"{table}.dedupe"
    if not isinstance(value, Mapping):
        c.add(
            table, "dedupe", 'must be a table like { key = ["body:id"], window = "24h" } or false'
        )
        return None
    c.unknown_keys(where, value, DEDUPE_KEYS)
    if "key" not in value:
        c.add(where, "key", 'missing; e.g. ["body:id"] or ["header:x-request-id"]')
        keys = None
    else:
        keys = string_list(c, where, "key", value["key"])
    window = DEFAULT_DEDUPE_WINDOW
    if "window" in value:
        try:
            window = parse_duration(value["window"])
            if window <= 0:
                raise ValueError("the window must be more than 0 seconds")
        except ValueError as exc:
            c.add(where, "window", str(exc))
    if keys is None:
        return None
    parsed = []
    for k in keys:
        scope, _, name = k.partition(":")
        if not name or scope not in ("body", "header"):
            c.add(where, "key", f"{k!r}: write 'body:<field path>' or 'header:<name>'")
        else:
            parsed.append(f"{scope}:{name.lower() if scope == 'header' else name}")
    return Dedupe(key=tuple(parsed), window=window)
