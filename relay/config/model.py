"""The routes in force: frozen values for sources, targets and routes, and the matching.

`relay.config.loading` builds a RouteTable from routes.toml (validated, every problem collected);
the receiver and the workers only ever read these values.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from relay.config.breaker import Breaker
from relay.config.control import Order, Rate
from relay.config.filters import NO_FIELDS, EventFields, Filter, Unmatched
from relay.core import constants
from relay.core.headers import SUPPORTED, Coding
from relay.core.secrets import Secret


class SourceKind(StrEnum):
    """How a provider posts: the body it sends and where the event type is.

    A StrEnum, so the value is the word written in routes.toml and compares equal to it.
    """

    JSON = "json"  # a field of a JSON body (dotted path for nested fields)
    FORM = "form"  # a field of an application/x-www-form-urlencoded body
    JSON_OR_FORM = "json_or_form"  # either body (Elucidat's own sample receiver reads a form)
    HEADER = "header"  # a request header, any body
    RESTHOOKS = "resthooks"  # REST Hooks (Strigo): header, plus the X-Hook-Secret handshake
    ASPNET = "aspnet"  # ASP.NET WebHooks (Learn365): ms-signature, one event per notification

    @property
    def reads_header(self) -> bool:
        """Whether the event type is a request header (case-insensitive name)."""
        return self in (SourceKind.HEADER, SourceKind.RESTHOOKS)


#: Where each kind of source finds the event type by default.
SOURCE_KINDS: Mapping[SourceKind, str] = {
    SourceKind.JSON: "event",
    SourceKind.FORM: "event",
    SourceKind.JSON_OR_FORM: "event",
    SourceKind.HEADER: "x-event-type",
    SourceKind.RESTHOOKS: "x-event-type",
    SourceKind.ASPNET: "Notifications[].Action",
}

HTTP_METHODS = ("POST", "PUT")
BODY_FORMATS = ("original", "json")
#: What `enrich` on a target may name: the providers whose events relay can enrich.
ENRICH_PROVIDERS = ("fellow",)
#: The Fellow events an enriching target receives with their API record, and the record's kind.
ENRICHED_EVENTS: Mapping[str, str] = {
    "COURSEMEMBER_COMPLETED": "course",
    "PROGRAMMEMBER_COMPLETED": "program",
}
#: How many (source, event type) pairs a RouteTable remembers the match of.
MATCH_MEMO = 4096
#: Inbound dedupe window when a source does not say.
DEFAULT_DEDUPE_WINDOW = 24 * 3600.0


@dataclass(frozen=True)
class Dedupe:
    """Inbound deduplication: which part of a request identifies it, and for how long."""

    key: tuple[str, ...]  # JSON paths / form fields ("body:Id") or headers ("header:x-id")
    window: float  # seconds


#: The dedupe key of a reconciled Fellow source when it names none: the event, its course or
#: program ("a|b": the first of the fields present) and its member. The receiver and the
#: reconciliation pass both claim it, so a real webhook after a synthesized one is a duplicate.
RECONCILE_DEDUPE_KEY = ("body:event", "body:courseId|programId", "body:memberId")


@dataclass(frozen=True)
class Reconcile:
    """`[sources.NAME.reconcile]`: rebuild missed call-once events from the provider's API."""

    api: str  # base URL, e.g. https://academy.example.com (the API is under /api/v1)
    api_key: Secret
    every: float = 900.0  # seconds between passes
    grace: float = 300.0  # a change the API shows is declared missed only after this long
    id_field: str = "id"  # field of each listed object holding its id (an assumption)
    completed_field: str = "completed"  # truthy in a coursemember/programmember: completed
    page_size: int = 100  # `limit` of each list request
    concurrency: int = 8  # API requests in flight at once at most (fewer after a 429)
    timeout: float = 30.0  # seconds per request


@dataclass(frozen=True)
class Source:
    """A provider that posts to `/hooks/{name}`."""

    name: str
    kind: SourceKind
    event: str  # where the event type is: field path, or lower-cased header name, per kind
    methods: tuple[str, ...] = HTTP_METHODS
    token: Secret | None = None  # path token: /hooks/{name}/{token}
    secret: Secret | None = None  # signing secret (aspnet: ms-signature)
    max_body: int = constants.DEFAULT_BODY_LIMIT
    dedupe: Dedupe | None = None
    spool: bool = False  # keep events on local disk while Redis is down (call-once providers)
    call_once: bool = False  # the provider never retries: spool defaults to on
    # The Content-Encodings taken (relay.receiver.decoding); () takes uncompressed bodies only.
    content_encodings: tuple[Coding, ...] = SUPPORTED
    reconcile: Reconcile | None = None

    def __post_init__(self) -> None:
        # A Source built by hand with kind="json" still carries the enum member.
        if not isinstance(self.kind, SourceKind):
            object.__setattr__(self, "kind", SourceKind(self.kind))


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
    rate: Rate | None = None  # deliveries started per period, across every worker
    concurrency: int | None = None  # attempts in flight at once, across every worker
    order: Order | None = None  # FIFO per key (relay.config.control)
    breaker: Breaker | None = None  # circuit breaker (relay.config.breaker); None: none
    # "fellow": Fellow completions delivered as JSON with their API record (worker.fellow.enrich)
    enrich: str | None = None


@dataclass(frozen=True)
class Route:
    """Events of `source` whose type matches one of `events` (and whose fields pass `filter`,
    when it has one) go to `targets`."""

    source: str
    events: tuple[str, ...]
    targets: tuple[str, ...]
    filter: Filter | None = None
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


@dataclass(frozen=True, slots=True)
class _Filtered:
    """What `RouteTable.match` remembers for an event type that some filtered route takes:
    the routes taking it (their filters and targets), whose filters run on each event."""

    steps: tuple[tuple[Filter | None, tuple[str, ...]], ...]  # per route: filter, targets

    def targets(self, fields: EventFields) -> tuple[str, ...]:
        found: tuple[str, ...] = ()
        several = False  # only then can a target repeat
        for route_filter, targets in self.steps:
            if route_filter is None or route_filter.failing(fields) is None:
                several = bool(found)
                found += targets
        return tuple(dict.fromkeys(found)) if several else found


@dataclass(frozen=True)
class RouteVerdict:
    """Whether one route took an event, and if not why (for `relay check`'s dry run)."""

    index: int  # position in the file: routes[index]
    route: Route
    event_matched: bool  # the event type matches one of the route's `events`
    unmatched: Unmatched | None = None  # the filter's first failing field

    @property
    def matched(self) -> bool:
        """Whether the route sends this event to its targets."""
        return self.event_matched and self.unmatched is None


@dataclass(frozen=True)
class RouteTable:
    """Everything routes.toml says, validated."""

    path: str
    sources: Mapping[str, Source]
    targets: Mapping[str, Target]
    routes: tuple[Route, ...]
    #: Variables the file names but the environment lacks (only with require_env=False).
    missing_env: tuple[str, ...] = ()
    #: (source, event type) -> `match`'s answer, for the first MATCH_MEMO pairs seen: the
    #: receiver matches every event, and a provider sends few distinct types. Bounded, because
    #: event types come from outside. (The table is frozen; a reload builds a new one.) When a
    #: route with a filter takes the type, the answer depends on each event's fields: the memo
    #: keeps the routes taking the type (`_Filtered`), and only their filters run per event.
    _memo: dict[tuple[str, str], tuple[str, ...] | _Filtered] = field(
        default_factory=dict, compare=False, repr=False
    )

    def match(
        self, source: str, event_type: str | None, fields: EventFields = NO_FIELDS
    ) -> tuple[str, ...]:
        """Target names an event reaches, in first-mention order, each once.

        `fields` are what route filters read (by default none: every filtered field missing).
        """
        if event_type is None:
            return ()
        memo = self._memo
        found = memo.get((source, event_type))
        if found is None:
            found = self._plan(source, event_type)
            if len(memo) < MATCH_MEMO:
                memo[source, event_type] = found
        if isinstance(found, _Filtered):
            return found.targets(fields)
        return found  # no filter concerned: the answer for every event of the type

    def _plan(self, source: str, event_type: str) -> tuple[str, ...] | _Filtered:
        routes = tuple(r for r in self.routes if r.source == source and r.matches(event_type))
        if any(r.filter is not None for r in routes):
            return _Filtered(tuple((r.filter, r.targets) for r in routes))
        return tuple(dict.fromkeys(t for r in routes for t in r.targets))

    def explain(
        self, source: str, event_type: str | None, fields: EventFields = NO_FIELDS
    ) -> tuple[RouteVerdict, ...]:
        """Each route of `source`, in file order, with whether it takes the event and why not.

        Decided by the same tests as `match`: the targets of the routes it finds matched are
        exactly `match`'s answer.
        """
        verdicts = []
        for index, route in enumerate(self.routes):
            if route.source != source:
                continue
            if event_type is None or not route.matches(event_type):
                verdicts.append(RouteVerdict(index, route, event_matched=False))
                continue
            failed = route.filter.first_failure(fields) if route.filter is not None else None
            verdicts.append(RouteVerdict(index, route, event_matched=True, unmatched=failed))
        return tuple(verdicts)

    def routes_of(self, source: str) -> tuple[Route, ...]:
        """The routes that take events from one source, in file order."""
        return tuple(r for r in self.routes if r.source == source)

    def reachable(self, source: str) -> tuple[str, ...]:
        """Every target some event of `source` could reach, in first-mention order."""
        found: dict[str, None] = {}
        for route in self.routes_of(source):
            found.update(dict.fromkeys(route.targets))
        return tuple(found)


def compile_route(
    source: str,
    events: tuple[str, ...],
    targets: tuple[str, ...],
    filter: Filter | None = None,
) -> Route:
    """A Route with its glob patterns (and its filter's, already in `filter`) compiled once."""
    patterns = tuple(re.compile(fnmatch.translate(e)) for e in events)
    return Route(source, events, targets, filter, _patterns=patterns)


def event_location(source: Source) -> str:
    """Where a source finds the event type, in words (for `relay check`)."""
    if source.kind.reads_header:
        return f"header {source.event}"
    if source.kind is SourceKind.ASPNET:
        return "Notifications[].Action (one event per notification)"
    if source.kind is SourceKind.FORM:
        return f"form field {source.event!r}"
    if source.kind is SourceKind.JSON:
        return f"JSON field {source.event!r}"
    return f"JSON or form field {source.event!r}"
