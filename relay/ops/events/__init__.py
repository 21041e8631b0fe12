"""Read-only views of stored events for operators: one event with its attempts, or a filtered list.

Everything here reads the Redis contract of relay.store.keys through a sync client and returns
frozen values; rendering is relay.cli.events' job. One module per view; import this package
(`from relay.ops.events import ...`) for both.
"""

from relay.ops.events.listing import (
    MAX_SCAN,
    PAGE_SIZE,
    STATES,
    UNROUTED,
    EventListing,
    EventQuery,
    EventSummary,
    TargetState,
    latest_by_source,
    list_events,
)
from relay.ops.events.view import (
    MAX_ATTEMPT_RECORDS,
    Attempt,
    DeliveryView,
    EventView,
    get_event,
)

__all__ = [
    "MAX_ATTEMPT_RECORDS",
    "MAX_SCAN",
    "PAGE_SIZE",
    "STATES",
    "UNROUTED",
    "Attempt",
    "DeliveryView",
    "EventListing",
    "EventQuery",
    "EventSummary",
    "EventView",
    "TargetState",
    "get_event",
    "latest_by_source",
    "list_events",
]
