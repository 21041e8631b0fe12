"""A value that must never be printed: its repr and str hide it (as starlette's `Secret` does)."""

from __future__ import annotations

import base64
import binascii
import hmac


class Secret:
    """A secret from the environment; `name` is the variable it came from, safe to show."""

    __slots__ = ("_value", "name")

    def __init__(self, value: str, name: str = "") -> None:
        self._value = value
        self.name = name

    def __repr__(self) -> str:
        return f"Secret(name={self.name!r}, value='**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(
            self._value.encode(), other._value.encode()
        )

    def __hash__(self) -> int:
        return hash(self.name)

    def reveal(self) -> str:
        """The secret itself: call only where it is used, never where it is logged."""
        return self._value

    def matches(self, candidate: str) -> bool:
        """Constant-time comparison with a value a request presented."""
        return hmac.compare_digest(self._value.encode(), candidate.encode())

    def key_bytes(self) -> bytes:
        """The HMAC key of a Standard Webhooks secret: the base64 after the `whsec_` prefix."""
        raw = self._value.removeprefix("whsec_")
        raw += "=" * (-len(raw) % 4)  # the standardwebhooks library accepts unpadded keys too
        try:
            return base64.b64decode(raw, validate=True)
        except binascii.Error as exc:
            raise ValueError("not valid base64") from exc
