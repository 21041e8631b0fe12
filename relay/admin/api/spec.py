"""The API's operations, declared once: the routes are added and the OpenAPI 3.1 document is
generated from the same declarations, so the document lists exactly what the app serves.

Every operation answers 401 without a valid token, 403 for a read token on a write (and for a
console session that fails its CSRF check), 503 when Redis does not answer, and 400 when it
takes parameters or a body; those answers are added to each operation here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from relay.admin.api.params import Param
from relay.admin.api.schemas import COMPONENTS, Schema, ref

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The API's version, in its paths and its document.
API_VERSION = "1.0.0"
OPENAPI_PATH = "/api/openapi.json"


@dataclass(frozen=True)
class PathParam:
    """A `{name}` segment of an operation's path."""

    name: str
    description: str
    schema: Schema = field(default_factory=lambda: {"type": "string", "maxLength": 200})


@dataclass(frozen=True)
class Operation:
    """One method on one path: its handler, its inputs and its answers."""

    method: str
    path: str
    operation_id: str
    summary: str
    handler: Handler
    tag: str
    answers: Mapping[int, tuple[str, str]]  # status -> (description, component name)
    query: Sequence[Param] = ()
    path_params: Sequence[PathParam] = ()
    body: Schema | None = None  # the JSON request body (always optional: {} by default)
    description: str = ""

    @property
    def write(self) -> bool:
        """Whether the operation changes something (needs a write token, is audited)."""
        return self.method not in ("GET", "HEAD", "OPTIONS")


def _answer(description: str, component: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref(component)}}}


def _operation_document(op: Operation) -> dict[str, Any]:
    responses = {str(status): _answer(*answer) for status, answer in sorted(op.answers.items())}
    if op.query or op.body is not None:
        responses.setdefault(
            "400", _answer("a parameter or field is wrong (`field` names it)", "Error")
        )
    responses["401"] = _answer("no token, or a wrong one", "Error")
    responses["403"] = _answer(
        "a read token on a write (`insufficient_scope`), or a session failing its CSRF check",
        "Error",
    )
    if op.path_params:
        responses.setdefault("404", _answer("no such resource", "Error"))
    responses["503"] = _answer("Redis did not answer", "Error")
    document: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": [
            {
                "name": p.name,
                "in": "path",
                "required": True,
                "description": p.description,
                "schema": p.schema,
            }
            for p in op.path_params
        ]
        + [
            {
                "name": p.name,
                "in": "query",
                "required": False,
                "description": p.description,
                "schema": dict(p.schema),
            }
            for p in op.query
        ],
        "responses": responses,
    }
    if op.description:
        document["description"] = op.description
    if op.body is not None:
        document["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": op.body}},
        }
    return document


def openapi_document(operations: Sequence[Operation]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `operations`."""
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation_document(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "relay management API",
            "version": API_VERSION,
            "description": (
                "Find events, see why a delivery failed, replay dead letters, pause and resume "
                "targets. Every path under /api/v1 needs `Authorization: Bearer <token>` "
                "(RELAY_ADMIN_TOKENS); writes need a token of scope `write`."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token of RELAY_ADMIN_TOKENS (name:scope:value)",
                }
            },
        },
    }


def add_operations(app: web.Application, operations: Sequence[Operation]) -> None:
    """Route each operation's method and path to its handler."""
    for op in operations:
        app.router.add_route(op.method, op.path, op.handler, name=op.operation_id)
