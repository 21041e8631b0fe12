"""relay's delivery side: RQ workers that forward events to their targets."""

from __future__ import annotations

__all__: list[str] = []
