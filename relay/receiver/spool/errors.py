"""The spool's errors: both are Unavailable, so the receiver answers 503."""

from __future__ import annotations

from relay.core.errors import Unavailable

__all__ = ["SpoolError", "SpoolFull"]


class SpoolError(Unavailable):
    """The spool cannot take the event (a disk error): the receiver answers 503."""


class SpoolFull(SpoolError):
    """The spool holds its maximum size: the receiver answers 503."""
