"""The request a target receives: pure header and body building, no I/O.

Contract (DESIGN.md): POST, the original body bytes unchanged, the original Content-Type, the
provider headers that matter for verification, Standard Webhooks headers
(https://www.standardwebhooks.com/: webhook-id, webhook-timestamp, webhook-signature), the
relay's own x-relay-* headers (x-relay-reconciled: 1 on an event a reconciliation pass
synthesized), then the target's extra headers from routes.toml. An enriched delivery
(worker.fellow.enrich) carries the form's fields and the fetched record as a JSON object instead
of the provider's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs

import orjson

from relay import __version__
from relay.config.model import Target
from relay.core.headers import (
    FORWARDED_PROVIDER_HEADERS,
    RECONCILED_HEADER,
    is_form,
    is_forwarded,
    is_reserved,
)
from relay.core.signatures import sign_standard
from relay.store.records import Event

USER_AGENT = f"relay/{__version__}"


@dataclass(frozen=True)
class OutboundRequest:
    """One POST to a target: where, with which headers, and the exact body bytes."""

    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of a header (case-insensitive), or None."""
        lname = name.lower()
        return next((v for k, v in self.headers if k == lname), None)


@dataclass(frozen=True)
class Enrichment:
    """A record an enriched delivery carries: its field in the JSON body, and its JSON bytes."""

    field: str  # "coursemember" or "programmember"
    record: bytes  # a JSON object, as kept in Redis (relay.store.enrichment)


def form_fields(body: bytes) -> dict[str, str] | None:
    """A form body's fields (first value of each), or None if it is not a form."""
    try:
        text = body.decode("utf-8")
        fields = parse_qs(text, keep_blank_values=True, max_num_fields=1000, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return None
    return {name: values[0] for name, values in fields.items()}


def form_to_json(body: bytes) -> bytes | None:
    """A form body as a JSON object of its fields (first value of each), or None if not a form."""
    fields = form_fields(body)
    return None if fields is None else orjson.dumps(fields)


def enriched_json(body: bytes, enrichment: Enrichment) -> bytes:
    """The form's fields and the record under its field, as one JSON object (the record's bytes
    embedded as they are kept, so every target gets the same). ValueError if not a form."""
    parsed = form_fields(body)
    if parsed is None:
        raise ValueError("the event body is not a form")
    fields: dict[str, object] = dict(parsed)
    fields[enrichment.field] = orjson.Fragment(enrichment.record)
    return orjson.dumps(fields)


def delivery_body(
    event: Event, target: Target, enrichment: Enrichment | None = None
) -> tuple[bytes, str, bool]:
    """(body, content type, whether it is the provider's own bytes) for a target."""
    if enrichment is not None:
        return enriched_json(event.body, enrichment), "application/json", False
    if target.body == "json" and is_form(event.content_type):
        converted = form_to_json(event.body)
        if converted is not None:
            return converted, "application/json", False
    return event.body, event.content_type, True


def build_request(
    event: Event,
    target: Target,
    attempt: int,
    now: int,
    enrichment: Enrichment | None = None,
) -> OutboundRequest:
    """The request delivering `event` to `target` as attempt number `attempt` at time `now`,
    with `enrichment`'s record in its body when given (signed over the body sent)."""
    body, content_type, original = delivery_body(event, target, enrichment)
    headers: dict[str, str] = {}
    for name, value in event.headers:
        # A provider signature only verifies over the provider's own bytes.
        if is_forwarded(name) and (original or name not in FORWARDED_PROVIDER_HEADERS):
            headers[name.lower()] = value
    headers["user-agent"] = USER_AGENT
    for name, secret in target.headers:
        if not is_reserved(name):
            headers[name.lower()] = secret.reveal()
    if content_type:
        headers["content-type"] = content_type
    headers["webhook-id"] = event.id
    headers["webhook-timestamp"] = str(now)
    if target.signing_secrets:
        keys = [secret.key_bytes() for secret in target.signing_secrets]
        headers["webhook-signature"] = sign_standard(keys, event.id, now, body)
    headers["x-relay-source"] = event.source
    headers["x-relay-event"] = event.type or ""
    headers["x-relay-attempt"] = str(attempt)
    if (RECONCILED_HEADER, "1") in event.headers:
        headers[RECONCILED_HEADER] = "1"
    return OutboundRequest(url=target.url, headers=tuple(headers.items()), body=body)
