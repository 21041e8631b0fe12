"""Elucidat's request signing: a nonce and HMAC-SHA1, as pure functions (no I/O).

Elucidat's scheme looks like OAuth 1.0 but is not: it is what their reference client does
(https://help.elucidat.com, "Making your first call to the Project API"; see PROVIDERS.md):

1. every call needs a fresh nonce: GET the endpoint signed without a nonce, read `{"nonce": ...}`;
2. the `oauth_*` parameters merged with the call's own fields, sorted by key;
3. base string `METHOD&URL&k1=v1&k2=v2...`, keys and values encoded like PHP's `rawurlencode`
   (RFC 3986); the URL and the joined string are not encoded again (unlike real OAuth);
4. `oauth_signature = base64(HMAC-SHA1(key=rawurlencode(private key), base string))`;
5. `Authorization: k=rawurlencode(v),...` with `oauth_signature` last and no `OAuth ` prefix.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

__all__ = [
    "OAUTH_VERSION",
    "SIGNATURE_METHOD",
    "SignedRequest",
    "authorization_header",
    "base_string",
    "encode_fields",
    "oauth_params",
    "rawurlencode",
    "sign_request",
    "signature",
]

SIGNATURE_METHOD = "HMAC-SHA1"
OAUTH_VERSION = "1.0"


def rawurlencode(value: str) -> str:
    """PHP's `rawurlencode`: RFC 3986 percent-encoding of UTF-8, only `A-Za-z0-9-_.~` left bare."""
    # quote() always keeps exactly the RFC 3986 unreserved set; safe="" stops it keeping "/".
    return quote(value, safe="")


def base_string(method: str, url: str, params: Mapping[str, str]) -> str:
    """`METHOD&URL&k1=v1&...`: params sorted by key, each key and value rawurlencoded."""
    pairs = "&".join(f"{rawurlencode(k)}={rawurlencode(params[k])}" for k in sorted(params))
    return f"{method.upper()}&{url}&{pairs}"


def signature(private_key: str, base: str) -> str:
    """`base64(HMAC-SHA1(rawurlencode(private_key), base))`, the `oauth_signature` value."""
    digest = hmac.new(rawurlencode(private_key).encode(), base.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def oauth_params(public_key: str, timestamp: int, nonce: str | None = None) -> dict[str, str]:
    """The `oauth_*` parameters of one call; the nonce request is the one call without a nonce."""
    params = {
        "oauth_consumer_key": public_key,
        "oauth_signature_method": SIGNATURE_METHOD,
        "oauth_timestamp": str(timestamp),
        "oauth_version": OAUTH_VERSION,
    }
    if nonce is not None:
        params["oauth_nonce"] = nonce
    return params


def authorization_header(params: Mapping[str, str], signed: str) -> str:
    """`k=rawurlencode(v),...` sorted by key, then `oauth_signature` last; no `OAuth ` prefix."""
    parts = [f"{k}={rawurlencode(params[k])}" for k in sorted(params)]
    parts.append(f"oauth_signature={rawurlencode(signed)}")
    return ",".join(parts)


def encode_fields(fields: Mapping[str, str]) -> str:
    """A form body or query string, encoded the way the base string encodes it."""
    return "&".join(f"{rawurlencode(k)}={rawurlencode(fields[k])}" for k in sorted(fields))


@dataclass(frozen=True)
class SignedRequest:
    """One request ready to send: the URL (with any query), headers and body."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None


def sign_request(
    method: str,
    url: str,
    fields: Mapping[str, str],
    *,
    public_key: str,
    private_key: str,
    timestamp: int,
    nonce: str | None,
) -> SignedRequest:
    """Sign a call; the fields go in the body (POST) or the query string (GET)."""
    method = method.upper()
    params = oauth_params(public_key, timestamp, nonce)
    signed = signature(private_key, base_string(method, url, {**fields, **params}))
    headers = {"Authorization": authorization_header(params, signed), "Accept": "application/json"}
    body: bytes | None = None
    if method == "GET":
        if fields:
            url = f"{url}?{encode_fields(fields)}"
    else:
        body = encode_fields(fields).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    return SignedRequest(method=method, url=url, headers=headers, body=body)
