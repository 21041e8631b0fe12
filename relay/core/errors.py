"""The relay's exceptions.

    RelayError
    ├── ConfigError          routes.toml or the environment is wrong (carries every Problem)
    └── HTTPError            an input problem with one precise HTTP status
        ├── BadRequest       400 malformed input (e.g. a broken signature header)
        ├── Unauthorized     401 bad signature or token
        ├── NotFound         404 unknown source
        ├── MethodNotAllowed 405
        ├── RequestTimeout   408 the body did not arrive within the read timeout
        ├── PayloadTooLarge  413
        ├── UnsupportedMediaType 415
        └── Unavailable      503 Redis cannot take the event (providers that retry will retry)

There is deliberately no 410 here: to REST Hooks senders and Zapier a 410 cancels the subscription.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus


class RelayError(Exception):
    """Base of every error relay raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One mistake in a configuration file, located by file, table and key."""

    file: str
    table: str
    key: str
    message: str

    def __str__(self) -> str:
        where = ".".join(part for part in (self.table, self.key) if part)
        return f"{self.file}: [{where}] {self.message}" if where else f"{self.file}: {self.message}"


class ConfigError(RelayError):
    """The configuration cannot be used; `problems` lists every mistake found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class HTTPError(RelayError):
    """An error that maps to exactly one HTTP status and a human message."""

    status: HTTPStatus = HTTPStatus.BAD_REQUEST

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class BadRequest(HTTPError):
    status = HTTPStatus.BAD_REQUEST


class Unauthorized(HTTPError):
    status = HTTPStatus.UNAUTHORIZED


class NotFound(HTTPError):
    status = HTTPStatus.NOT_FOUND


class MethodNotAllowed(HTTPError):
    status = HTTPStatus.METHOD_NOT_ALLOWED


class RequestTimeout(HTTPError):
    status = HTTPStatus.REQUEST_TIMEOUT


class PayloadTooLarge(HTTPError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedMediaType(HTTPError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class Unavailable(HTTPError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
