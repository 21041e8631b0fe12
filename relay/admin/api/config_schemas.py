"""JSON Schemas of the API's answers about configuration and figures: targets, sources,
status, routes (OpenAPI 3.1 components; relay.admin.api.schemas gathers them all)."""

from __future__ import annotations

from relay.admin.api.schema_kit import (
    BOOLEAN,
    INTEGER,
    NUMBER,
    STRING,
    TIME,
    Schema,
    array,
    nullable,
    obj,
    ref,
)

_PAUSE = obj(
    {
        "target": STRING,
        "reason": STRING,
        "since": nullable(TIME),
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
    "breaker": nullable(ref("Breaker")),
    "control": nullable(ref("Control")),
}

#: BreakerState.to_view: a target's circuit breaker, open or counting failures in a row.
_BREAKER = obj(
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

#: ControlView.to_view: the rate, concurrency and order in force, and what they hold now.
_CONTROL = obj(
    {
        "rate": nullable(STRING),
        "concurrency": nullable(INTEGER),
        "order": nullable(STRING),
        "in_flight": INTEGER,
        "order_keys": INTEGER,
        "held": obj({"rate": INTEGER, "concurrency": INTEGER, "order": INTEGER}),
    }
)

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
        "rate": nullable(STRING),
        "concurrency": nullable(INTEGER),
        "order": nullable(STRING),
        "breaker": nullable(obj({"failures": INTEGER, "probe_s": NUMBER})),
        "enrich": nullable(STRING),
    }
)


CONFIG_COMPONENTS: dict[str, Schema] = {
    "Pause": _PAUSE,
    "Breaker": _BREAKER,
    "Control": _CONTROL,
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
                        "received": TIME,
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
