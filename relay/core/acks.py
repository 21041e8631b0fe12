"""`RELAY_ACK_REPLICAS`: how many replicas must confirm a write before it is acknowledged.

Either a fixed number (0: the primary's word alone) or `all`: every replica the primary counts
online, and that has acknowledged within `max_lag` seconds (`RELAY_ACK_MAX_LAG`), when the write
is confirmed, and at least one (relay.store.replication reads that count).
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.core.constants import DEFAULT_ACK_MAX_LAG

__all__ = ["ALL", "EVERY_ONLINE", "MIN_MAX_LAG", "PRIMARY_ONLY", "AckReplicas"]

#: The word that asks for every online replica.
ALL = "all"
#: The smallest `max_lag` allowed: replicas acknowledge once a second and INFO shows whole
#: seconds, so a healthy replica often shows a lag of 1; below that it would be skipped at random.
MIN_MAX_LAG = 1.0


@dataclass(frozen=True)
class AckReplicas:
    """A fixed replica count, or every online replica (`every_online`, count unused).

    With `every_online`, a replica whose last acknowledgement is more than `max_lag` seconds old
    (frozen, or cut off from a primary that still lists it) is not waited for; a fixed count
    ignores `max_lag`, as WAIT itself does.
    """

    count: int = 0
    every_online: bool = False
    max_lag: float = DEFAULT_ACK_MAX_LAG

    @classmethod
    def parse(cls, raw: str) -> AckReplicas:
        """`all` or an integer >= 0; ValueError otherwise. The lag limit is the default."""
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
        """The count to WAIT for when the primary has `online` replicas online (and, with
        `all`, acknowledging within `max_lag`).

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
