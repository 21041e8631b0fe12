"""`RELAY_ACK_REPLICAS`: how many replicas must confirm a write before it is acknowledged.

Either a fixed number (0: the primary's word alone) or `all`: every replica the primary counts
online when the write is committed, and at least one (relay.store.replication reads that count).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ALL", "EVERY_ONLINE", "PRIMARY_ONLY", "AckReplicas"]

#: The word that asks for every online replica.
ALL = "all"


@dataclass(frozen=True)
class AckReplicas:
    """A fixed replica count, or every online replica (`every_online`, count unused)."""

    count: int = 0
    every_online: bool = False

    @classmethod
    def parse(cls, raw: str) -> AckReplicas:
        """`all` or an integer >= 0; ValueError otherwise."""
        text = raw.strip().lower()
        if text == ALL:
            return cls(every_online=True)
        if not text.isdigit():  # no sign, no decimals: "-1" and "1.5" are refused
            raise ValueError(f"{raw!r} is neither a whole number >= 0 nor {ALL!r}")
        return cls(count=int(text))

    @property
    def enabled(self) -> bool:
        """Whether a commit waits for any replica at all."""
        return self.every_online or self.count > 0

    def wanted(self, online: int) -> int:
        """The count to WAIT for when the primary has `online` replicas online.

        With `all` and no replica online it is still 1: the write is then refused (or spooled)
        as with `1`, never acknowledged on the primary alone.
        """
        return max(1, online) if self.every_online else self.count

    def __str__(self) -> str:
        return ALL if self.every_online else str(self.count)


#: `0`, the default: the primary's word alone.
PRIMARY_ONLY = AckReplicas()
#: `all`.
EVERY_ONLINE = AckReplicas(every_online=True)
