"""JSON Schemas (OpenAPI 3.1, i.e. JSON Schema 2020-12) of what the API answers and accepts.

They describe the documents of relay.ops (`relay events --json` and the API share them) and of
the API's own answers; tests/test_admin_openapi.py checks real answers against them and
Schemathesis fuzzes every operation against them. Targets, sources, status and routes are in
relay.admin.api.config_schemas; COMPONENTS here holds them all.
"""

from __future__ import annotations

from relay.admin.api.config_schemas import CONFIG_COMPONENTS
from relay.admin.api.schema_kit import (
    BOOLEAN,
    INTEGER,
    NUMBER,
    STATE,
    STRING,
    TIME,
    Schema,
    array,
    nullable,
    obj,
    ref,
)
from relay.store.jobs import JobState

__all__ = ["BOOLEAN", "COMPONENTS", "Schema", "obj", "ref"]

_REPLAY_RESULT = obj(
    {
        "event_id": STRING,
        "target": STRING,
        "outcome": {
            "type": "string",
            "enum": ["replayed", "would_replay", "expired", "not_dead", "unknown_target"],
        },
        "state": STRING,
        "attempt": INTEGER,
        "message": STRING,
    }
)

COMPONENTS: dict[str, Schema] = {
    "Error": obj(
        {
            "error": obj(
                {
                    "code": {"type": "string", "description": "a stable word: see docs/api.md"},
                    "message": STRING,
                    "field": nullable(STRING),
                }
            )
        }
    ),
    "EventSummary": obj(
        {
            "id": STRING,
            "received": TIME,
            "received_at": NUMBER,
            "source": STRING,
            "type": nullable(STRING),
            "unrouted": BOOLEAN,
            "targets": array(obj({"target": STRING, "state": STATE, "attempts": INTEGER})),
        }
    ),
    "EventList": obj(
        {
            "events": array(ref("EventSummary")),
            "next_cursor": nullable(STRING),
            "scanned": INTEGER,
            "partial": BOOLEAN,
        }
    ),
    "Attempt": obj(
        {
            "attempt": INTEGER,
            "at": STRING,
            "at_unix": nullable(NUMBER),
            "status": nullable(INTEGER),
            "error": nullable(STRING),
            "duration_ms": nullable(INTEGER),
            "outcome": STRING,
            "response": STRING,
            "retry_in_s": nullable(NUMBER),
        }
    ),
    "Delivery": obj(
        {
            "target": STRING,
            "state": STATE,
            "attempts_made": INTEGER,
            "attempts_before_replay": INTEGER,
            "reason": STRING,
            "attempts": array(ref("Attempt")),
            # The target's circuit breaker while it is open (relay.store.breakers), else null.
            "breaker": nullable(
                obj(
                    {
                        "state": {"type": "string", "enum": ["open", "closed"]},
                        "failures": INTEGER,
                        "since": nullable(TIME),
                        "at": nullable(NUMBER),
                        "last_error": nullable(STRING),
                        "last_at": nullable(NUMBER),
                        "next_probe_in": nullable(NUMBER),
                    }
                )
            ),
            # FIFO per key: the key's digest and how many earlier deliveries of it go first.
            "order": nullable(obj({"key": STRING, "ahead": INTEGER})),
        }
    ),
    "Event": obj(
        {
            "id": STRING,
            "source": STRING,
            "type": nullable(STRING),
            "received": TIME,
            "received_at": NUMBER,
            "method": STRING,
            "content_type": STRING,
            "headers": array({"type": "array", "items": STRING, "minItems": 2, "maxItems": 2}),
            "body": obj(
                {
                    "size": INTEGER,
                    "encoding": {"type": "string", "enum": ["utf-8", "base64"]},
                    "data": STRING,
                    "truncated": BOOLEAN,
                }
            ),
            "unrouted": BOOLEAN,
            # Fellow enrichment: the API record kept with the event, else null.
            "enrichment": nullable({"type": "object"}),
            "expires_in": nullable(INTEGER),
            "attempts_omitted": INTEGER,
            "deliveries": array(ref("Delivery")),
        }
    ),
    "ReplayResult": _REPLAY_RESULT,
    "ReplaySummary": obj(
        {
            "event_id": STRING,
            "dry_run": BOOLEAN,
            "selected": INTEGER,
            "replayed": INTEGER,
            "would_replay": INTEGER,
            "failed": INTEGER,
            "results": array(ref("ReplayResult")),
        },
        optional=("event_id", "replayed", "would_replay"),
    ),
    "DeadLetter": obj(
        {
            "event_id": STRING,
            "target": STRING,
            "dead": TIME,
            "dead_at": NUMBER,
            "state": STRING,
            "source": STRING,
            "type": nullable(STRING),
            "received_at": nullable(NUMBER),
            "attempts": INTEGER,
            "reason": STRING,
            "expired": BOOLEAN,
        }
    ),
    "DeadLetterList": obj(
        {
            "dead_letters": array(ref("DeadLetter")),
            "next_cursor": nullable(STRING),
            "scanned": INTEGER,
            "partial": BOOLEAN,
        }
    ),
    "BulkReplayCount": obj({"dry_run": BOOLEAN, "selected": INTEGER, "more": BOOLEAN}),
    "Job": obj(
        {
            "id": STRING,
            "kind": {"type": "string", "enum": ["replay"]},
            "state": {"type": "string", "enum": [str(s) for s in JobState]},
            "by": STRING,
            "total": INTEGER,
            "done": INTEGER,
            "replayed": INTEGER,
            "failed": INTEGER,
            "error": nullable(STRING),
            "created": TIME,
            "updated": TIME,
            "selection": {"type": "object"},
            "failures": array(ref("ReplayResult")),
            # How often another admin process took the job over after its own stopped.
            "resumed": INTEGER,
        }
    ),
    "JobAnswer": obj({"job": ref("Job")}),
    **CONFIG_COMPONENTS,
}
