"""The event as relay keeps it in Redis: what a provider sent, plus where it must go."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

#: The fields of an event's hash, in the order of `Event.redis_values` (the commit script gets
#: the names once per batch and the values once per event).
EVENT_FIELDS = (
    "source",
    "type",
    "received",
    "ctype",
    "method",
    "headers",
    "body",
    "targets",
    "dedupe",
)


@dataclass(frozen=True)
class Event:
    """One inbound event; `body` is the exact bytes the provider sent (or its split part)."""

    id: str
    source: str
    type: str | None  # None when the request carried no event type (recorded as unrouted)
    received_at: float  # Unix seconds
    content_type: str
    method: str
    headers: tuple[tuple[str, str], ...]  # provider headers kept for forwarding and inspection
    body: bytes
    targets: tuple[str, ...]  # matched at intake: in-flight events keep the routes they started on
    dedupe_key: str = ""  # Redis key of the inbound dedupe value, "" when the source has none

    def redis_values(self) -> tuple[bytes, ...]:
        """The values of the event hash, as bytes, in the order of `EVENT_FIELDS`."""
        return (
            self.source.encode(),
            self.type.encode() if self.type is not None else b"",
            repr(self.received_at).encode(),
            self.content_type.encode(),
            self.method.encode(),
            orjson.dumps(self.headers),
            self.body,
            orjson.dumps(self.targets),
            self.dedupe_key.encode(),
        )

    def to_redis(self) -> dict[str, bytes]:
        """The fields of the event hash (see relay.store.keys)."""
        return dict(zip(EVENT_FIELDS, self.redis_values(), strict=True))

    @classmethod
    def from_redis(cls, event_id: str, data: Mapping[bytes, bytes]) -> Event:
        """Rebuild an event from its hash as redis-py returns it (bytes keys and values)."""

        def text(name: str) -> str:
            return data.get(name.encode(), b"").decode("utf-8", "replace")

        event_type = text("type")
        return cls(
            id=event_id,
            source=text("source"),
            type=event_type or None,
            received_at=float(text("received") or 0.0),
            content_type=text("ctype"),
            method=text("method") or "POST",
            headers=tuple((str(k), str(v)) for k, v in orjson.loads(data.get(b"headers", b"[]"))),
            body=data.get(b"body", b""),
            targets=tuple(orjson.loads(data.get(b"targets", b"[]"))),
            dedupe_key=text("dedupe"),
        )
