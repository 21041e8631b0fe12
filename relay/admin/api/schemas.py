"""JSON Schemas (OpenAPI 3.1, i.e. JSON Schema 2020-12) of what the API answers and accepts.

They describe the documents of relay.ops (`relay events --json` and the API share them) and of
the API's own answers; tests/test_admin_openapi.py checks real answers against them and
Schemathesis fuzzes every operation against them.
"""

from __future__ import annotations

from typing import Any

from relay.ops.events import STATES
from relay.store.jobs import JobState

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}


def nullable(schema: Schema) -> Schema:
    """The schema, or null."""
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Schema], *, optional: tuple[str, ...] = ()) -> Schema:
    """An object with these properties, all required but `optional`."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
    }


def array(items: Schema) -> Schema:
    """A list of `items`."""
    return {"type": "array", "items": items}


def ref(name: str) -> Schema:
    """A reference to one of COMPONENTS."""
    return {"$ref": f"#/components/schemas/{name}"}


_TIME = {"type": "string", "description": "ISO 8601, UTC: 2026-12-02T09:25:00.351Z"}
_STATE = {"type": "string", "description": f"a delivery state: {', '.join(map(str, STATES))}"}

_PAUSE = obj(
    {
        "target": STRING,
        "reason": STRING,
        "since": nullable(_TIME),
        "at": nullable(NUMBER),
        "event_id": nullable(STRING),
    }
)

_TARGET_COUNTS = {
    "name": STRING,
    "configured": BOOLEAN,
    "pending": INTEGER,
    "scheduled": INTEGER,
    "dead_letters": INTEGER,
    "delivered": INTEGER,
    "dead": INTEGER,
    "gone": INTEGER,
    "attempts": INTEGER,
    "failures": INTEGER,
    "replayed": INTEGER,
    "paused": nullable(ref("Pause")),
}

_SOURCE_CONFIG = obj(
    {
        "kind": STRING,
        "event": STRING,
        "methods": array(STRING),
        "path": STRING,
        "token_env": nullable(STRING),
        "secret_env": nullable(STRING),
        "max_body": INTEGER,
        "spool": BOOLEAN,
        "call_once": BOOLEAN,
        "content_encodings": array(STRING),
        "dedupe": nullable(obj({"key": array(STRING), "window_s": NUMBER})),
        "reconcile": nullable(obj({"api": STRING, "api_key_env": nullable(STRING)})),
    }
)

_TARGET_CONFIG = obj(
    {
        "url": STRING,
        "timeout_s": NUMBER,
        "signing_secret_env": array(STRING),
        "headers": array(obj({"name": STRING, "env": nullable(STRING)})),
        "retry": obj({"attempts": INTEGER, "first_s": NUMBER, "max_s": NUMBER}),
        "body": STRING,
        "pause_on_gone": BOOLEAN,
    }
)

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
            "received": _TIME,
            "received_at": NUMBER,
            "source": STRING,
            "type": nullable(STRING),
            "unrouted": BOOLEAN,
            "targets": array(obj({"target": STRING, "state": _STATE, "attempts": INTEGER})),
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
            "state": _STATE,
            "attempts_made": INTEGER,
            "attempts_before_replay": INTEGER,
            "reason": STRING,
            "attempts": array(ref("Attempt")),
        }
    ),
    "Event": obj(
        {
            "id": STRING,
            "source": STRING,
            "type": nullable(STRING),
            "received": _TIME,
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
            "dead": _TIME,
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
            "created": _TIME,
            "updated": _TIME,
            "selection": {"type": "object"},
            "failures": array(ref("ReplayResult")),
        }
    ),
    "JobAnswer": obj({"job": ref("Job")}),
    "Pause": _PAUSE,
    "PauseResult": obj(
        {"target": STRING, "paused": BOOLEAN, "changed": BOOLEAN, "pause": nullable(ref("Pause"))}
    ),
    "Target": obj({**_TARGET_COUNTS, "config": nullable(_TARGET_CONFIG)}),
    "TargetList": obj({"targets": array(ref("Target"))}),
    "Source": obj(
        {
            "name": STRING,
            "configured": BOOLEAN,
            "received": INTEGER,
            "duplicates": INTEGER,
            "unrouted": INTEGER,
            "last_event": nullable(
                obj(
                    {
                        "id": STRING,
                        "received": _TIME,
                        "received_at": NUMBER,
                        "type": nullable(STRING),
                    }
                )
            ),
            "config": nullable(_SOURCE_CONFIG),
        }
    ),
    "SourceList": obj({"sources": array(ref("Source")), "last_event_scanned": INTEGER}),
    "Status": obj(
        {
            "at": NUMBER,
            "queue": obj(
                {
                    "name": STRING,
                    "queued": INTEGER,
                    "started": INTEGER,
                    "scheduled": INTEGER,
                    "failed": INTEGER,
                    "deferred": INTEGER,
                }
            ),
            "workers": INTEGER,
            "targets": array(obj(_TARGET_COUNTS)),
            "sources": array(
                obj(
                    {
                        "name": STRING,
                        "received": INTEGER,
                        "duplicates": INTEGER,
                        "unrouted": INTEGER,
                    }
                )
            ),
        }
    ),
    "Routes": obj(
        {
            "path": STRING,
            "sources": {"type": "object", "additionalProperties": _SOURCE_CONFIG},
            "targets": {"type": "object", "additionalProperties": _TARGET_CONFIG},
            "routes": array(
                obj({"source": STRING, "events": array(STRING), "targets": array(STRING)})
            ),
            "missing_env": array(STRING),
        }
    ),
}
