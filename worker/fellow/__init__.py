"""Fellow Digitals: its API client and the reconciliation of the webhooks it sends only once."""

from __future__ import annotations

__all__: list[str] = []
