"""The event as relay keeps it in Redis: what a provider sent, plus where it must go."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson


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

    def to_redis(self) -> dict[str, bytes | str]:
        """The fields of the event hash (see relay.keys)."""
        return {
            "source": self.source,
            "type": self.type if self.type is not None else "",
            "received": repr(self.received_at),
            "ctype": self.content_type,
            "method": self.method,
            "headers": orjson.dumps(self.headers),
            "body": self.body,
            "targets": orjson.dumps(self.targets),
            "dedupe": self.dedupe_key,
        }

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
