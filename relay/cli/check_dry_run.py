"""`relay check PATH --source S --body FILE`: what the receiver would answer to a sample request.

The sample goes through `relay.receiver.accept.accept`, the same decisions the receiver's handler
takes, so the two cannot disagree. The sample is posted as its provider would: with the source's
path token when it has one, and an `echo` value on an ASP.NET handshake. Secrets are never
printed: only the names of the variables that hold them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from relay.cli.check_filters import verdict_json, verdict_lines
from relay.config.model import RouteTable, RouteVerdict, Source, SourceKind
from relay.receiver.accept import Accepted, Handshake, Refused, Request, Step, accept
from relay.receiver.handshakes import HandshakeKind

#: Content type a dry run sends when none is given, per source kind.
DEFAULT_CONTENT_TYPES: Mapping[SourceKind, str] = {
    SourceKind.JSON: "application/json",
    SourceKind.FORM: "application/x-www-form-urlencoded",
    SourceKind.ASPNET: "application/json; charset=utf-8",
}
#: The `echo` value of a sample ASP.NET handshake (the sender sends 32 hex digits).
SAMPLE_ECHO = "0" * 32
#: What a dry run's events are stamped with; never shown, never stored.
SAMPLE_ID, SAMPLE_TIME = "evt_dry_run", 0.0

_HANDSHAKES = {
    HandshakeKind.ASPNET: "the ASP.NET WebHooks ?echo= handshake: no event is recorded",
    HandshakeKind.RESTHOOKS: "the REST Hooks X-Hook-Secret handshake: no event is recorded",
}
_MISSING = "missing (pass --header ms-signature:sha256=...)"


@dataclass(frozen=True)
class DryEvent:
    """One event a sample request yields."""

    type: str | None
    dedupe: str | None
    targets: tuple[str, ...]
    # Every route of the source: taken, or why not (the first filter field that failed).
    routes: tuple[RouteVerdict, ...] = ()


@dataclass(frozen=True)
class DryRun:
    """What the receiver would do with one sample request."""

    source: str
    method: str
    content_type: str
    status: int  # the HTTP status the receiver would answer
    message: str  # why, when it is not 202
    signature: str = ""  # aspnet: what became of the ms-signature check
    events: tuple[DryEvent, ...] = ()

    @property
    def accepted(self) -> bool:
        """Whether the receiver would take the request (or answer its handshake)."""
        return self.status < 300


def default_content_type(source: Source, body: bytes) -> str:
    """The content type a provider of this kind sends, guessed from the body where it varies."""
    if source.kind in DEFAULT_CONTENT_TYPES:
        return DEFAULT_CONTENT_TYPES[source.kind]
    looks_json = body.lstrip()[:1] in (b"{", b"[")
    if source.kind is SourceKind.JSON_OR_FORM:
        return "application/json" if looks_json else "application/x-www-form-urlencoded"
    return "application/json" if looks_json else "application/octet-stream"


def sample_request(
    source: Source | None,
    name: str,
    method: str,
    headers: Mapping[str, str],
    content_type: str,
) -> Request:
    """The request a provider would send: its token in the path, a sample echo value."""
    token = source.token.reveal() if source is not None and source.token is not None else None
    sent = {**headers, "content-type": content_type} if content_type else dict(headers)
    return Request(method, name, token, sent, {"echo": SAMPLE_ECHO})


def dry_run(
    table: RouteTable,
    source_name: str,
    body: bytes,
    headers: Mapping[str, str],
    content_type: str | None = None,
    method: str = "POST",
) -> DryRun:
    """Run a sample through the receiver's decisions; `headers` must be lower-cased."""
    method = method.upper()
    source = table.sources.get(source_name)
    ctype = ""
    if source is not None:
        ctype = content_type or headers.get("content-type") or default_content_type(source, body)
    request = sample_request(source, source_name, method, headers, ctype)
    outcome = accept(table, request, body, event_id=SAMPLE_ID, received_at=SAMPLE_TIME)
    if isinstance(outcome, Handshake):
        return DryRun(source_name, method, ctype, outcome.status, _HANDSHAKES[outcome.kind])
    note = _signature_note(source, headers, outcome)
    if isinstance(outcome, Accepted):
        found = _dry_events(table, outcome)
        return DryRun(source_name, method, ctype, 202, "accepted", note, found)
    message = outcome.message
    if outcome.step is Step.SOURCE:
        message += f" ({', '.join(table.sources) or 'none'})"
    events: tuple[DryEvent, ...] = ()
    if outcome.step is Step.SIGNATURE:  # what the body yields, were it signed
        unsigned = accept(
            table, request, body, event_id=SAMPLE_ID, received_at=SAMPLE_TIME, signatures=False
        )
        if isinstance(unsigned, Accepted):
            events = _dry_events(table, unsigned)
    return DryRun(source_name, method, ctype, outcome.status, message, note, events)


def _dry_events(table: RouteTable, accepted: Accepted) -> tuple[DryEvent, ...]:
    return tuple(
        DryEvent(
            event.type,
            part.dedupe_value,
            event.targets,
            table.explain(event.source, event.type, part.fields),
        )
        for event, part in zip(accepted.events, accepted.parsed, strict=True)
    )


def _signature_note(
    source: Source | None, headers: Mapping[str, str], outcome: Refused | Accepted
) -> str:
    """What became of the ms-signature check, for an ASP.NET source once it was reached."""
    if source is None or source.kind is not SourceKind.ASPNET:
        return ""
    if isinstance(outcome, Refused) and outcome.step is Step.SIGNATURE:
        return _MISSING if "ms-signature" not in headers else f"rejected: {outcome.message}"
    if isinstance(outcome, Refused) and outcome.step is not Step.BODY:
        return ""  # refused before the signature was looked at
    if source.secret is None:
        return "not verified: the secret's environment variable is not set"
    return f"verified with ${source.secret.name}"


def dry_run_json(run: DryRun) -> dict[str, Any]:
    """The machine-readable form of a dry run (`--json`)."""
    return {
        "source": run.source,
        "method": run.method,
        "content_type": run.content_type,
        "status": run.status,
        "accepted": run.accepted,
        "message": run.message,
        "signature": run.signature or None,
        "events": [
            {
                "type": e.type,
                "dedupe": e.dedupe,
                "targets": list(e.targets),
                "routes": [verdict_json(v) for v in e.routes],
            }
            for e in run.events
        ],
    }


def render_dry_run(run: DryRun) -> str:
    """The human report of a dry run."""
    lines = [f"{run.method} /hooks/{run.source}  content-type: {run.content_type or '-'}"]
    if run.signature:
        lines.append(f"ms-signature: {run.signature}")
    if run.status == HTTPStatus.ACCEPTED:
        count = len(run.events)
        lines.append(f"the receiver would answer 202 with {count} event{'s' if count != 1 else ''}")
    else:
        lines.append(f"the receiver would answer {run.status}: {run.message}")
        if run.events:
            lines.append("were it accepted, the body yields:")
    for index, event in enumerate(run.events, 1):
        kind = event.type if event.type is not None else "none: recorded as unrouted"
        lines.append(f"event {index}: {kind}")
        if event.dedupe is not None:
            lines.append(f"  dedupe   {event.dedupe.replace(chr(0x1F), ' | ')}")
        if event.type is not None:
            lines.append(f"  targets  {', '.join(event.targets) or 'none: recorded as unrouted'}")
            lines.extend(verdict_lines(event.routes))
    return "\n".join(lines) + "\n"
