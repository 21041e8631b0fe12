"""The words for where a delivery stands and what an attempt came to.

They are stored (the event hash's s:{target} fields, the attempt records' `outcome`) and they are
Prometheus label values, so they live in the kernel, below the store's codec
(relay.store.records) and the metrics alike. StrEnums: a member is the very string stored, so
data written before the enums existed reads back unchanged.
"""

from __future__ import annotations

from enum import StrEnum


class DeliveryState(StrEnum):
    """Where one (event, target) delivery stands: the value of s:{target} in the event hash."""

    PENDING = "pending"  # not yet attempted, or an attempt is in flight
    RETRYING = "retrying"  # failed at least once; a retry is scheduled
    DELIVERED = "delivered"
    DEAD = "dead"  # out of attempts: in the dead-letter store
    GONE = "gone"  # the target answered 410: stopped, in the dead-letter store
    DUPLICATE = "duplicate"  # an inbound duplicate (its dedupe key names another event)
    #: Read for a word this version does not write; never stored.
    UNKNOWN = "unknown"

    @property
    def final(self) -> bool:
        """Whether the delivery ended: delivered, dead or gone."""
        return self in FINAL_STATES

    @property
    def done(self) -> bool:
        """Whether nothing more happens to the delivery (final, or an inbound duplicate)."""
        return self in DONE_STATES

    @property
    def dead_letter(self) -> bool:
        """Whether the delivery is in the dead-letter store (dead or gone): it can be replayed."""
        return self in DEAD_LETTER_STATES


FINAL_STATES = frozenset({DeliveryState.DELIVERED, DeliveryState.DEAD, DeliveryState.GONE})
DONE_STATES = FINAL_STATES | {DeliveryState.DUPLICATE}
DEAD_LETTER_STATES = frozenset({DeliveryState.DEAD, DeliveryState.GONE})


class Outcome(StrEnum):
    """What one delivery attempt came to: the `outcome` of its record and its metric label."""

    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"  # out of attempts: dead-lettered
    GONE = "gone"  # 410 Gone: stopped and dead-lettered
    #: A record that does not say (unreadable, or written by another version); never stored.
    NONE = ""

    @property
    def dead_letter(self) -> bool:
        """Whether the attempt put its delivery in the dead-letter store."""
        return self in (Outcome.DEAD, Outcome.GONE)
