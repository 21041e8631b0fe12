"""The admin listener: the management API (/api/v1) and the operator console (/).

An adapter layer beside relay.receiver: thin aiohttp handlers over relay.ops, the same
implementation the operator commands use. `make_admin_app` builds the application; `tokens`
holds the bearer tokens and `Principal`; `auth` resolves who a request acts as (a bearer token,
or the console's session hook).
"""

from relay.admin.app import make_admin_app
from relay.admin.auth import (
    PRINCIPAL,
    SessionRefused,
    SessionResolver,
    authenticate,
    set_session_resolver,
)
from relay.admin.tokens import Principal, Scope, TokenSet, parse_tokens, tokens_from_env

__all__ = [
    "PRINCIPAL",
    "Principal",
    "Scope",
    "SessionRefused",
    "SessionResolver",
    "TokenSet",
    "authenticate",
    "make_admin_app",
    "parse_tokens",
    "set_session_resolver",
    "tokens_from_env",
]
