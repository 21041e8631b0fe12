"""Elucidat's subscriptions API: signed calls over HTTPS, each with a fresh nonce.

The signing itself is relay.ops.providers.elucidat.signing; this adds the HTTP (urllib, no
redirects followed: a signature is bound to one URL) and the errors a person can act on.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import structlog

from relay.core.errors import RelayError
from relay.core.secrets import Secret
from relay.ops.providers.elucidat.signing import SignedRequest, sign_request

__all__ = [
    "DEFAULT_API_ROOT",
    "DEFAULT_TIMEOUT",
    "EVENTS",
    "MAX_RESPONSE",
    "SUBSCRIBE_PATH",
    "SUBSCRIPTIONS_PATH",
    "UNSUBSCRIBE_PATH",
    "ElucidatClient",
    "ElucidatError",
    "Response",
    "api_root_problem",
]

log = structlog.get_logger("relay.elucidat")

DEFAULT_API_ROOT = "https://api.elucidat.com"

#: Documented: `POST /v2/event/subscribe` with `event` and `callback_url`.
SUBSCRIBE_PATH = "/v2/event/subscribe"
#: UNCONFIRMED: the public docs show only subscribing; these two follow the same naming.
UNSUBSCRIBE_PATH = "/v2/event/unsubscribe"
SUBSCRIPTIONS_PATH = "/v2/event/subscriptions"

#: The events Elucidat documents (seed 000). New ones may appear: the CLI has --force-event.
EVENTS = ("release_course", "project_created", "project_deleted", "release_deleted")

#: Their API answers small JSON documents; anything larger is not an answer worth reading.
MAX_RESPONSE = 1024 * 1024

DEFAULT_TIMEOUT = 30.0


class ElucidatError(RelayError):
    """A call to Elucidat failed: refused (`status` set) or never answered (`status` None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.message = message
        self.status = status
        super().__init__(message)


def api_root_problem(root: str) -> str | None:
    """Why an API root cannot be used (only http(s), a host, no query), or None."""
    try:
        parts = urlsplit(root)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"{root!r} is not a valid URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return f"{root!r} must start with https:// (or http:// for a local test server)"
    if not parts.hostname:
        return f"{root!r} has no host"
    if parts.username or parts.password or parts.query or parts.fragment:
        return f"{root!r} must be a plain address, without credentials, query or fragment"
    return None


@dataclass(frozen=True)
class Response:
    """Elucidat's answer to a call: its status and JSON document (None when not JSON)."""

    status: int
    data: Any
    text: str


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would send a signature bound to one URL to another: fail instead."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _opener() -> urllib.request.OpenerDirector:
    # create_default_context verifies certificates and host names.
    context = ssl.create_default_context()
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirect)


def _message(response: Response) -> str:
    """The human part of an error answer: its `message`/`error` field, or a bit of the text."""
    if isinstance(response.data, dict):
        for key in ("message", "error", "errors"):
            if response.data.get(key):
                return str(response.data[key])
    return response.text.strip()[:300] or "(empty answer)"


@dataclass
class ElucidatClient:
    """Signed calls to Elucidat's API; each call fetches its own nonce first."""

    public_key: Secret
    private_key: Secret
    api_root: str = DEFAULT_API_ROOT
    timeout: float = DEFAULT_TIMEOUT
    clock: Callable[[], float] = time.time
    _opener: urllib.request.OpenerDirector = field(default_factory=_opener, repr=False)

    def __post_init__(self) -> None:
        problem = api_root_problem(self.api_root)
        if problem:
            raise ElucidatError(f"ELUCIDAT_API_ROOT: {problem}")
        self.api_root = self.api_root.rstrip("/")

    def subscribe(self, event: str, callback_url: str, *, simulate: bool = True) -> Response:
        """Subscribe `callback_url` to `event` (a dry run unless `simulate` is False)."""
        fields = {"event": event, "callback_url": callback_url}
        return self.call("POST", SUBSCRIBE_PATH, self._simulation(fields, simulate))

    def unsubscribe(self, event: str, *, simulate: bool = True) -> Response:
        """Remove the subscription to `event` (endpoint unconfirmed)."""
        return self.call("POST", UNSUBSCRIBE_PATH, self._simulation({"event": event}, simulate))

    def subscriptions(self) -> Response:
        """The subscriptions of these API keys (endpoint unconfirmed)."""
        return self.call("GET", SUBSCRIPTIONS_PATH, {})

    @staticmethod
    def _simulation(fields: dict[str, str], simulate: bool) -> dict[str, str]:
        return {**fields, "simulation_mode": "simulation"} if simulate else fields

    def nonce(self, path: str) -> str:
        """A fresh nonce for one call to `path`: a GET on it signed without a nonce."""
        url = self.api_root + path
        request = self._sign("GET", url, {}, nonce=None)
        response = self._send(request, path)
        # Their reference client reads the nonce whatever the status, so do the same.
        nonce = response.data.get("nonce") if isinstance(response.data, dict) else None
        if not isinstance(nonce, str) or not nonce:
            raise ElucidatError(
                f"Elucidat gave no nonce for {path} (HTTP {response.status}): {_message(response)}",
                status=response.status,
            )
        return nonce

    def call(self, method: str, path: str, fields: Mapping[str, str]) -> Response:
        """One signed call; raise ElucidatError unless the answer is a 2xx."""
        nonce = self.nonce(path)
        request = self._sign(method, self.api_root + path, fields, nonce=nonce)
        response = self._send(request, path)
        if not 200 <= response.status < 300:
            raise ElucidatError(
                f"Elucidat refused {method} {path} (HTTP {response.status}): {_message(response)}",
                status=response.status,
            )
        return response

    def _sign(
        self, method: str, url: str, fields: Mapping[str, str], nonce: str | None
    ) -> SignedRequest:
        return sign_request(
            method,
            url,
            fields,
            public_key=self.public_key.reveal(),
            private_key=self.private_key.reveal(),
            timestamp=int(self.clock()),
            nonce=nonce,
        )

    def _no_answer(self) -> str:
        return f"no answer from {self.api_root} within {self.timeout:g} s"

    def _send(self, signed: SignedRequest, path: str) -> Response:
        """Send one request; any HTTP answer is a Response, no answer is an ElucidatError."""
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked to be http(s)
            signed.url, data=signed.body, headers=dict(signed.headers), method=signed.method
        )
        started = time.monotonic()
        try:
            with self._opener.open(request, timeout=self.timeout) as answer:
                status, raw = answer.status, answer.read(MAX_RESPONSE)
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read(MAX_RESPONSE)
            exc.close()
            if 300 <= status < 400:
                where = exc.headers.get("Location", "?")
                raise ElucidatError(
                    f"Elucidat answered {signed.method} {path} with a redirect ({status}) to "
                    f"{where}; set ELUCIDAT_API_ROOT to the final address",
                    status=status,
                ) from exc
        except TimeoutError as exc:
            raise ElucidatError(self._no_answer()) from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise ElucidatError(self._no_answer()) from exc
            raise ElucidatError(f"cannot reach {self.api_root}: {exc.reason}") from exc
        except OSError as exc:
            raise ElucidatError(f"cannot reach {self.api_root}: {exc}") from exc
        text = raw.decode("utf-8", errors="replace")
        try:
            data = json.loads(text) if text.strip() else None
        except ValueError:
            data = None
        log.debug(
            "elucidat_call",
            method=signed.method,
            path=path,
            status=status,
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        return Response(status=status, data=data, text=text)
