"""Building blocks of the API's JSON Schemas (OpenAPI 3.1, i.e. JSON Schema 2020-12)."""

from __future__ import annotations

from typing import Any

from relay.ops.events import STATES

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


TIME: Schema = {"type": "string", "description": "ISO 8601, UTC: 2026-12-02T09:25:00.351Z"}
STATE: Schema = {
    "type": "string",
    "description": f"a delivery state: {', '.join(map(str, STATES))}",
}
