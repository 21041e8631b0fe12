"""routes.toml: the operator's file, loaded into frozen values and validated.

Every mistake is collected (not just the first) as a `Problem` naming file, table and key, so
`relay check` can list them all at once, sorted. Secrets never live in the file: it names
environment variables (`secret_env = "X"` or `secret = "${X}"`) and a missing variable is an error
(`require_env=False` turns that off for dry runs and CI checks without the production secrets).
"""

from __future__ import annotations

import difflib
import fnmatch
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from relay import constants
from relay.errors import ConfigError, Problem
from relay.secrets import Secret
from relay.units import parse_duration, parse_size

#: Where each kind of source finds the event type by default, and the body it takes.
SOURCE_KINDS: Mapping[str, str] = {
    "json": "event",  # a field of a JSON body (dotted path for nested fields)
    "form": "event",  # a field of an application/x-www-form-urlencoded body
    "json_or_form": "event",  # either body (Elucidat's own sample receiver reads a form)
    "header": "x-event-type",  # a request header, any body
    "resthooks": "x-event-type",  # REST Hooks (Strigo): header, plus the X-Hook-Secret handshake
    "aspnet": "Notifications[].Action",  # ASP.NET WebHooks (Learn365): one event per notification
}

HTTP_METHODS = ("POST", "PUT")
BODY_FORMATS = ("original", "json")

#: Shortest token or source secret accepted: anything shorter is a placeholder or guessable.
#: (ASP.NET WebHooks secrets are 32 to 64 characters; `openssl rand -hex 16` gives 32.)
MIN_SECRET_CHARS = 16
#: Shortest Standard Webhooks key, in decoded bytes (the spec asks for 24 to 64).
MIN_SIGNING_KEY_BYTES = 16
#: Inbound dedupe window when a source does not say.
DEFAULT_DEDUPE_WINDOW = 24 * 3600.0

#: Headers relay sets itself on every re-delivery: a target cannot override them.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)

_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
#: A path token is one URL path segment: RFC 3986 unreserved characters only.
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9._~-]+$")


@dataclass(frozen=True)
class Dedupe:
    """Inbound deduplication: which part of a request identifies it, and for how long."""

    key: tuple[str, ...]  # JSON paths / form fields ("body:Id") or headers ("header:x-id")
    window: float  # seconds


@dataclass(frozen=True)
class Source:
    """A provider that posts to `/hooks/{name}`."""

    name: str
    kind: str
    event: str  # where the event type is: field path, or lower-cased header name, per kind
    methods: tuple[str, ...] = HTTP_METHODS
    token: Secret | None = None  # path token: /hooks/{name}/{token}
    secret: Secret | None = None  # signing secret (aspnet: ms-signature)
    max_body: int = constants.DEFAULT_BODY_LIMIT
    dedupe: Dedupe | None = None
    spool: bool = False  # keep events on local disk while Redis is down (call-once providers)
    call_once: bool = False  # the provider never retries: spool defaults to on


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a target is retried."""

    attempts: int = constants.DEFAULT_ATTEMPTS
    first: float = constants.DEFAULT_FIRST_DELAY
    max: float = constants.DEFAULT_MAX_DELAY


@dataclass(frozen=True)
class Target:
    """A downstream app that receives re-delivered events."""

    name: str
    url: str
    timeout: float = constants.DEFAULT_TIMEOUT
    signing_secrets: tuple[Secret, ...] = ()  # whsec_ secrets; several while rotating keys
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    headers: tuple[tuple[str, Secret], ...] = ()  # extra headers; values may come from the env
    body: str = "original"  # "json": form bodies delivered as a JSON object
    pause_on_gone: bool = False


@dataclass(frozen=True)
class Route:
    """Events of `source` whose type matches one of `events` go to `targets`."""

    source: str
    events: tuple[str, ...]
    targets: tuple[str, ...]
    _patterns: tuple[re.Pattern[str], ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        # A Route built directly (not by compile_route) must still match: compile here.
        if len(self._patterns) != len(self.events):
            patterns = tuple(re.compile(fnmatch.translate(e)) for e in self.events)
            object.__setattr__(self, "_patterns", patterns)

    def matches(self, event_type: str) -> bool:
        """Whether an event type matches one of this route's glob patterns (case-sensitive)."""
        # translate() anchors the pattern at both ends, so match() is fnmatchcase's fullmatch.
        return any(p.match(event_type) for p in self._patterns)


@dataclass(frozen=True)
class RouteTable:
    """Everything routes.toml says, validated."""

    path: str
    sources: Mapping[str, Source]
    targets: Mapping[str, Target]
    routes: tuple[Route, ...]
    #: Variables the file names but the environment lacks (only with require_env=False).
    missing_env: tuple[str, ...] = ()

    def match(self, source: str, event_type: str | None) -> tuple[str, ...]:
        """Target names an event reaches, in first-mention order, each once."""
        if event_type is None:
            return ()
        found: dict[str, None] = {}
        for route in self.routes:
            if route.source == source and route.matches(event_type):
                for target in route.targets:
                    found[target] = None
        return tuple(found)

    def routes_of(self, source: str) -> tuple[Route, ...]:
        """The routes that take events from one source, in file order."""
        return tuple(r for r in self.routes if r.source == source)

    def reachable(self, source: str) -> tuple[str, ...]:
        """Every target some event of `source` could reach, in first-mention order."""
        found: dict[str, None] = {}
        for route in self.routes_of(source):
            found.update(dict.fromkeys(route.targets))
        return tuple(found)


def compile_route(source: str, events: tuple[str, ...], targets: tuple[str, ...]) -> Route:
    """A Route with its glob patterns compiled once."""
    patterns = tuple(re.compile(fnmatch.translate(e)) for e in events)
    return Route(source=source, events=events, targets=targets, _patterns=patterns)


def event_location(source: Source) -> str:
    """Where a source finds the event type, in words (for `relay check`)."""
    if source.kind in ("header", "resthooks"):
        return f"header {source.event}"
    if source.kind == "aspnet":
        return "Notifications[].Action (one event per notification)"
    if source.kind == "form":
        return f"form field {source.event!r}"
    if source.kind == "json":
        return f"JSON field {source.event!r}"
    return f"JSON or form field {source.event!r}"


# ---------------------------------------------------------------------------------------------
# Loading and validation


_SOURCE_KEYS = (
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
)
_TARGET_KEYS = (
    "url",
    "timeout",
    "signing_secret",
    "signing_secret_env",
    "retry",
    "headers",
    "body",
    "pause_on_gone",
)
_RETRY_KEYS = ("attempts", "first", "max")
_DEDUPE_KEYS = ("key", "window")
_ROUTE_KEYS = ("source", "events", "targets")
_TOP_KEYS = ("sources", "targets", "routes")


def _hint(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key putting routes[2] before routes[10]."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text)
    )


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Problems in a stable order: by file, table (numbers in order), key, then message."""
    return sorted(problems, key=lambda p: (p.file, _natural(p.table), p.key, p.message))


class _Collector:
    """Accumulates problems for one file so every mistake is reported together."""

    def __init__(self, path: str, env: Mapping[str, str], require_env: bool) -> None:
        self.path = path
        self.env = env
        self.require_env = require_env
        self.problems: list[Problem] = []
        self.missing_env: dict[str, None] = {}

    def add(self, table: str, key: str, message: str) -> None:
        self.problems.append(Problem(self.path, table, key, message))

    def unknown_keys(self, table: str, data: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        for key in data:
            if key not in allowed:
                self.add(table, key, f"unknown key '{key}'{_hint(key, allowed)}")

    def env_value(self, table: str, key: str, var: str, what: str) -> str | None:
        """The value of an environment variable, or None with a problem (or a note when lax)."""
        value = self.env.get(var)
        if value is None:
            if self.require_env:
                self.add(table, key, f"environment variable {var} is not set (needed for {what})")
            else:
                self.missing_env[var] = None
            return None
        if not value.strip():
            self.add(table, key, f"environment variable {var} is empty (needed for {what})")
            return None
        return value

    def secret(
        self, table: str, data: Mapping[str, Any], key: str, what: str
    ) -> tuple[tuple[Secret, ...], str] | None:
        """Secrets from `key = "${VAR}"` or `key_env = "VAR"`, and the key the file used.

        None when neither is given or on a problem. A variable may hold several secrets
        separated by spaces (key rotation); callers that take one check the count.
        """
        direct, by_env = data.get(key), data.get(f"{key}_env")
        if direct is not None and by_env is not None:
            self.add(table, key, f"give either '{key}' or '{key}_env', not both")
            return None
        if direct is None and by_env is None:
            return None
        if direct is not None:
            shown_key = key
            ref = _ENV_REF.match(direct) if isinstance(direct, str) else None
            if not ref:
                self.add(
                    table,
                    key,
                    f'{what} must name an environment variable, like "${{VAR}}", or use '
                    f"'{key}_env': secrets never live in routes.toml",
                )
                return None
            var = ref.group(1)
        else:
            shown_key = f"{key}_env"
            if not isinstance(by_env, str) or not by_env:
                self.add(table, shown_key, "must be the name of an environment variable")
                return None
            ref = _ENV_REF.match(by_env)
            if ref:
                self.add(
                    table, shown_key, f'write the bare variable name: {shown_key} = "{ref[1]}"'
                )
                return None
            if not _ENV_NAME.match(by_env):
                self.add(table, shown_key, f"{by_env!r} is not a valid environment variable name")
                return None
            var = by_env
        value = self.env_value(table, shown_key, var, what)
        if value is None:
            return None
        return tuple(Secret(part, name=var) for part in value.split()), shown_key


def _table(c: _Collector, where: str, key: str, value: Any) -> Mapping[str, Any] | None:
    if not isinstance(value, Mapping):
        c.add(where, key, "must be a table")
        return None
    return value


def _string_list(c: _Collector, table: str, key: str, value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        c.add(table, key, "must be a list of strings")
        return None
    if not value:
        c.add(table, key, "is empty; list at least one")
        return None
    return tuple(value)


def _one_secret(
    c: _Collector, table: str, found: tuple[tuple[Secret, ...], str] | None, token: bool
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


def _load_source(c: _Collector, name: str, data: Mapping[str, Any]) -> Source | None:
    table = f"sources.{name}"
    ok = len(c.problems)
    if not _NAME.match(name):
        c.add(table, "", "source names may hold letters, digits, '_', '-' and '.'")
    c.unknown_keys(table, data, _SOURCE_KEYS)
    kinds = ", ".join(SOURCE_KINDS)
    kind = data.get("kind")
    if kind is None:
        c.add(table, "kind", f"missing; one of: {kinds}")
        kind = "json"
    elif not isinstance(kind, str) or kind not in SOURCE_KINDS:
        hint = _hint(kind, SOURCE_KINDS) if isinstance(kind, str) else ""
        c.add(table, "kind", f"unknown kind {kind!r} (one of: {kinds}){hint}")
        kind = "json"
    event = data.get("event", SOURCE_KINDS[kind])
    if kind == "aspnet" and "event" in data:
        c.add(table, "event", "aspnet sources always take the type from Notifications[].Action")
    elif not isinstance(event, str) or not event.strip():
        c.add(table, "event", "must be a non-empty string (a field path or a header name)")
        event = SOURCE_KINDS[kind]
    elif kind in ("header", "resthooks"):
        if not _HEADER_NAME.match(event):
            c.add(table, "event", f"{event!r} is not a valid header name")
        event = event.lower()  # header lookups are case-insensitive; store the canonical form
    methods: tuple[str, ...] = HTTP_METHODS
    if "methods" in data:
        given = _string_list(c, table, "methods", data["methods"])
        if given is not None:
            upper = tuple(dict.fromkeys(m.upper() for m in given))
            bad = [m for m in upper if m not in HTTP_METHODS]
            if bad:
                c.add(table, "methods", f"only POST and PUT can be accepted, not {', '.join(bad)}")
            methods = upper
    token = _one_secret(c, table, c.secret(table, data, "token", "the path token"), token=True)
    secret_found = c.secret(table, data, "secret", "the signing secret")
    secret = _one_secret(c, table, secret_found, token=False)
    if kind == "aspnet" and "secret" not in data and "secret_env" not in data:
        c.add(table, "secret_env", "aspnet sources need the signing secret (ms-signature)")
    elif kind != "aspnet" and ("secret" in data or "secret_env" in data):
        key = "secret" if "secret" in data else "secret_env"
        c.add(table, key, f"only aspnet sources verify a signature; use token_env for {kind}")
    max_body = constants.DEFAULT_BODY_LIMIT
    if "max_body" in data:
        try:
            max_body = parse_size(data["max_body"])
        except ValueError as exc:
            c.add(table, "max_body", str(exc))
    dedupe = _load_dedupe(c, table, data.get("dedupe"), kind)
    call_once = data.get("call_once", False)
    if not isinstance(call_once, bool):
        c.add(table, "call_once", "must be true or false")
        call_once = False
    # A provider that calls once loses the event on a 503, so its events are spooled to disk
    # while Redis is down unless the operator says otherwise.
    spool = data.get("spool", call_once)
    if not isinstance(spool, bool):
        c.add(table, "spool", "must be true or false")
        spool = False
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
    )


def _load_dedupe(c: _Collector, table: str, value: Any, kind: str) -> Dedupe | None:
    if value is None:
        # ASP.NET senders reuse the body's Id on every retry: dedupe on it unless told otherwise.
        return Dedupe(key=("body:Id",), window=DEFAULT_DEDUPE_WINDOW) if kind == "aspnet" else None
    if value is False:
        return None
    where = f"{table}.dedupe"
    if not isinstance(value, Mapping):
        c.add(
            table, "dedupe", 'must be a table like { key = ["body:id"], window = "24h" } or false'
        )
        return None
    c.unknown_keys(where, value, _DEDUPE_KEYS)
    if "key" not in value:
        c.add(where, "key", 'missing; e.g. ["body:id"] or ["header:x-request-id"]')
        keys = None
    else:
        keys = _string_list(c, where, "key", value["key"])
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


def _load_target(c: _Collector, name: str, data: Mapping[str, Any]) -> Target | None:
    table = f"targets.{name}"
    ok = len(c.problems)
    if not _NAME.match(name):
        c.add(table, "", "target names may hold letters, digits, '_', '-' and '.'")
    c.unknown_keys(table, data, _TARGET_KEYS)
    url = data.get("url")
    if url is None:
        c.add(table, "url", "missing; the address events are delivered to")
        url = ""
    elif not isinstance(url, str):
        c.add(table, "url", "must be a string like 'https://app.example.com/hooks'")
        url = ""
    else:
        problem = url_problem(url)
        if problem:
            c.add(table, "url", problem)
    timeout = constants.DEFAULT_TIMEOUT
    if "timeout" in data:
        try:
            timeout = parse_duration(data["timeout"])
            if timeout <= 0:
                raise ValueError("the timeout must be more than 0 seconds")
        except ValueError as exc:
            c.add(table, "timeout", str(exc))
    secrets = _signing_secrets(c, table, data)
    retry = RetryPolicy()
    if "retry" in data:
        retry = _load_retry(c, table, data["retry"]) or retry
    headers = _load_headers(c, table, data["headers"]) if "headers" in data else ()
    body = data.get("body", "original")
    if body not in BODY_FORMATS:
        c.add(table, "body", f"must be one of: {', '.join(BODY_FORMATS)}")
    pause = data.get("pause_on_gone", False)
    if not isinstance(pause, bool):
        c.add(table, "pause_on_gone", "must be true or false")
    if len(c.problems) != ok:
        return None
    return Target(
        name=name,
        url=url,
        timeout=timeout,
        signing_secrets=secrets,
        retry=retry,
        headers=headers,
        body=str(body),
        pause_on_gone=bool(pause),
    )


def _signing_secrets(c: _Collector, table: str, data: Mapping[str, Any]) -> tuple[Secret, ...]:
    found = c.secret(table, data, "signing_secret", "the signing secret")
    if found is None:
        return ()
    secrets, key = found
    for secret in secrets:
        # Messages name the variable, never the value.
        if not secret.reveal().startswith("whsec_"):
            c.add(
                table,
                key,
                f"the value of {secret.name} must be a Standard Webhooks secret ('whsec_<base64>')",
            )
            continue
        try:
            size = len(secret.key_bytes())
        except ValueError:
            c.add(table, key, f"the value of {secret.name} is not valid base64 after 'whsec_'")
            continue
        if size < MIN_SIGNING_KEY_BYTES:
            c.add(
                table,
                key,
                f"the key in {secret.name} is {size} bytes: too short "
                f"(at least {MIN_SIGNING_KEY_BYTES}; the spec asks for 24 to 64)",
            )
    return secrets


def _load_headers(c: _Collector, table: str, value: Any) -> tuple[tuple[str, Secret], ...]:
    raw = _table(c, table, "headers", value)
    where = f"{table}.headers"
    headers: list[tuple[str, Secret]] = []
    for hname, hvalue in (raw or {}).items():
        lname = hname.lower()
        if not _HEADER_NAME.match(hname):
            c.add(where, hname, "is not a valid header name")
        elif lname in RESERVED_HEADERS or lname.startswith("x-relay-"):
            c.add(where, hname, "is set by relay itself on every delivery")
        elif not isinstance(hvalue, str):
            c.add(where, hname, "must be a string")
        elif ref := _ENV_REF.match(hvalue):
            env_value = c.env_value(where, hname, ref.group(1), f"header {hname}")
            if env_value is not None:
                if "\r" in env_value or "\n" in env_value:
                    c.add(where, hname, f"the value of {ref.group(1)} holds a line break")
                else:
                    headers.append((lname, Secret(env_value, name=ref.group(1))))
        elif "\r" in hvalue or "\n" in hvalue:
            c.add(where, hname, "must not hold a line break")
        else:
            headers.append((lname, Secret(hvalue, name="")))
    return tuple(headers)


def _load_retry(c: _Collector, table: str, value: Any) -> RetryPolicy | None:
    where = f"{table}.retry"
    data = _table(c, table, "retry", value)
    if data is None:
        return None
    c.unknown_keys(where, data, _RETRY_KEYS)
    attempts = data.get("attempts", constants.DEFAULT_ATTEMPTS)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 100:
        c.add(where, "attempts", "must be a whole number from 1 to 100")
        attempts = constants.DEFAULT_ATTEMPTS
    delays = {}
    defaults = (("first", constants.DEFAULT_FIRST_DELAY), ("max", constants.DEFAULT_MAX_DELAY))
    for key, default in defaults:
        try:
            delays[key] = parse_duration(data.get(key, default))
            if delays[key] <= 0:
                raise ValueError(f"the {key} delay must be more than 0 seconds")
        except ValueError as exc:
            c.add(where, key, str(exc))
            delays[key] = default
    if delays["first"] > delays["max"]:
        c.add(where, "first", "the first delay cannot be longer than the max delay")
    return RetryPolicy(attempts=attempts, first=delays["first"], max=delays["max"])


def url_problem(url: str) -> str | None:
    """Why a target URL cannot be used, or None when it is fine."""
    if url != url.strip() or any(ch.isspace() or ord(ch) < 32 for ch in url):
        return f"{url!r} holds spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        return f"{url!r} is not a valid URL: {exc}"
    del port
    if parts.scheme not in ("http", "https"):
        return f"{url!r} must start with http:// or https://"
    if not parts.hostname:
        return f"{url!r} has no host"
    if parts.username is not None or parts.password is not None:
        return f"{url!r} carries credentials: put them in headers from the environment"
    if parts.fragment or url.endswith("#"):
        return f"{url!r} has a '#fragment', which is never sent to the server: remove it"
    return None


def _load_route(
    c: _Collector, index: int, data: Any, sources: Mapping[str, Any], targets: Mapping[str, Any]
) -> Route | None:
    table = f"routes[{index}]"
    if not isinstance(data, Mapping):
        c.add(table, "", "each [[routes]] entry must be a table")
        return None
    ok = len(c.problems)
    c.unknown_keys(table, data, _ROUTE_KEYS)
    source = data.get("source")
    if source is None:
        c.add(table, "source", "missing; the source this route takes events from")
    elif not isinstance(source, str):
        c.add(table, "source", "must be the name of a source, as a string")
    elif source not in sources:
        c.add(table, "source", f"no source named '{source}' in [sources]{_hint(source, sources)}")
    events = _string_list(c, table, "events", data.get("events", ["*"]))
    for pattern in events or ():
        if not pattern.strip():
            c.add(table, "events", 'an empty pattern matches nothing; "*" matches every event')
        elif pattern != pattern.strip():
            c.add(table, "events", f"{pattern!r}: event types never start or end with spaces")
    for pattern in _repeated(events or ()):
        c.add(table, "events", f"'{pattern}' is listed more than once")
    if "targets" not in data:
        c.add(table, "targets", "missing; the targets these events go to")
        names = None
    else:
        names = _string_list(c, table, "targets", data["targets"])
    for name in names or ():
        if name not in targets:
            c.add(table, "targets", f"no target named '{name}' in [targets]{_hint(name, targets)}")
    for name in _repeated(names or ()):
        c.add(table, "targets", f"'{name}' is listed more than once")
    if len(c.problems) != ok or events is None or names is None or not isinstance(source, str):
        return None
    return compile_route(source, events, names)


def _repeated(items: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    repeated: dict[str, None] = {}
    for item in items:
        if item in seen:
            repeated[item] = None
        seen.add(item)
    return list(repeated)


def parse_routes(
    text: str, path: str, env: Mapping[str, str], *, require_env: bool = True
) -> RouteTable:
    """Validate the text of a routes.toml; raise ConfigError listing every problem, sorted.

    With `require_env=False` a variable missing from `env` is not a problem: the secret it would
    give is left out and the variable is listed in `RouteTable.missing_env`.
    """
    c = _Collector(path, env, require_env)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(path, "", "", f"not valid TOML: {exc}")]) from exc
    c.unknown_keys("", doc, _TOP_KEYS)
    raw_sources = _table(c, "", "sources", doc.get("sources", {})) or {}
    raw_targets = _table(c, "", "targets", doc.get("targets", {})) or {}
    raw_routes = doc.get("routes", [])
    if not isinstance(raw_routes, list):
        c.add("", "routes", "must be an array of tables: write [[routes]]")
        raw_routes = []

    def each(
        kind: str, raw: Mapping[str, Any], load: Callable[[_Collector, str, Mapping[str, Any]], Any]
    ) -> dict[str, Any]:
        loaded = {}
        for name, data in raw.items():
            table = _table(c, kind, name, data)
            if table is not None:
                value = load(c, name, table)
                if value is not None:
                    loaded[name] = value
        return loaded

    sources = each("sources", raw_sources, _load_source)
    targets = each("targets", raw_targets, _load_target)
    routes = [_load_route(c, i, r, raw_sources, raw_targets) for i, r in enumerate(raw_routes)]
    if c.problems:
        raise ConfigError(sort_problems(c.problems))
    return RouteTable(
        path=path,
        sources=MappingProxyType(sources),
        targets=MappingProxyType(targets),
        routes=tuple(r for r in routes if r is not None),
        missing_env=tuple(sorted(c.missing_env)),
    )


def load_routes(
    path: str | Path, env: Mapping[str, str], *, require_env: bool = True
) -> RouteTable:
    """Read and validate routes.toml at `path`; raise ConfigError listing every problem."""
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError([Problem(shown, "", "", "file not found")]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(shown, "", "", f"cannot be read: {exc}")]) from exc
    return parse_routes(text, shown, env, require_env=require_env)
