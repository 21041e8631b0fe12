"""The management API's errors: one stable JSON shape, one precise status each.

Every error the API answers has the body `{"error": {"code", "message", "field"}}`: `code` is a
stable machine word (documented in docs/api.md), `message` a human sentence, `field` the query
or body field at fault (null when none is).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

#: Answers carry no cache and are never sniffed as something else.
API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class ApiError(Exception):
    """An error answered as `{"error": {...}}` with `status`."""

    def __init__(
        self, status: HTTPStatus, code: str, message: str, field: str | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        super().__init__(message)

    def to_json(self) -> dict[str, Any]:
        """The error body."""
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


def bad_field(field: str, message: str) -> ApiError:
    """400 for a bad filter or body field, naming it."""
    return ApiError(HTTPStatus.BAD_REQUEST, "invalid_field", f"{field}: {message}", field)


def not_found(code: str, message: str) -> ApiError:
    """404 for an event or target that does not exist."""
    return ApiError(HTTPStatus.NOT_FOUND, code, message)


def unauthorized(message: str) -> ApiError:
    """401: no credentials, or wrong ones."""
    return ApiError(HTTPStatus.UNAUTHORIZED, "unauthorized", message)


def forbidden(code: str, message: str) -> ApiError:
    """403: known credentials that may not do this."""
    return ApiError(HTTPStatus.FORBIDDEN, code, message)


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON answer with the API's headers."""
    headers = {**API_HEADERS, **(headers or {})}
    if status == HTTPStatus.UNAUTHORIZED:
        headers["WWW-Authenticate"] = 'Bearer realm="relay admin"'
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def error_response(error: ApiError) -> web.Response:
    """The JSON answer of an ApiError."""
    return json_response(error.to_json(), int(error.status))


#: aiohttp's own refusals (no route, wrong method, body too large) in the API's words.
_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def from_http_exception(exc: web.HTTPException) -> ApiError:
    """An aiohttp HTTPException (raised by the router or a body limit) as an ApiError."""
    code = _HTTP_CODES.get(exc.status, "http_error")
    return ApiError(HTTPStatus(exc.status), code, exc.reason)
