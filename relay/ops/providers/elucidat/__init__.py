"""Elucidat: its request signing (`signing`, pure) and its subscriptions API (`client`).

Used by `relay subscribe elucidat`; the names below are the package's whole surface.
"""

from __future__ import annotations

from relay.ops.providers.elucidat.client import (
    DEFAULT_API_ROOT,
    DEFAULT_TIMEOUT,
    EVENTS,
    MAX_RESPONSE,
    SUBSCRIBE_PATH,
    SUBSCRIPTIONS_PATH,
    UNSUBSCRIBE_PATH,
    ElucidatClient,
    ElucidatError,
    Response,
    api_root_problem,
)
from relay.ops.providers.elucidat.signing import (
    OAUTH_VERSION,
    SIGNATURE_METHOD,
    SignedRequest,
    authorization_header,
    base_string,
    encode_fields,
    oauth_params,
    rawurlencode,
    sign_request,
    signature,
)

__all__ = [
    "DEFAULT_API_ROOT",
    "DEFAULT_TIMEOUT",
    "EVENTS",
    "MAX_RESPONSE",
    "OAUTH_VERSION",
    "SIGNATURE_METHOD",
    "SUBSCRIBE_PATH",
    "SUBSCRIPTIONS_PATH",
    "UNSUBSCRIBE_PATH",
    "ElucidatClient",
    "ElucidatError",
    "Response",
    "SignedRequest",
    "api_root_problem",
    "authorization_header",
    "base_string",
    "encode_fields",
    "oauth_params",
    "rawurlencode",
    "sign_request",
    "signature",
]
