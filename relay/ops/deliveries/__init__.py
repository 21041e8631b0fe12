"""What the operator commands read and change in Redis: status, dead letters, one event, replay.

Functions take a sync `redis.Redis` and return frozen values; `relay.cli` renders them. Keys and
states are those of relay.store.keys and relay.store.records. Reading is side-effect free; only
`replay_delivery` and `replay_deliveries` (bulk) write. One module per concern; import this
package (`from relay.ops import deliveries as ops`) for all of them (`due_counts`, the exact
due figures, is the store's).
"""

from relay.ops.deliveries.bulk import replay_deliveries
from relay.ops.deliveries.dead_letters import (
    DeadFilter,
    DeadLetter,
    dead_count_by_target,
    dead_of_event,
    dead_targets_of,
    iter_dead,
    list_dead,
)
from relay.ops.deliveries.detail import (
    Attempt,
    Delivery,
    EventDetail,
    delivery_states,
    show_event,
)
from relay.ops.deliveries.replay import ReplayResult, replay_delivery
from relay.ops.deliveries.status import (
    QueueStatus,
    SourceStatus,
    Status,
    TargetStatus,
    collect_status,
)
from relay.store.deliveries import due_counts

__all__ = [
    "Attempt",
    "DeadFilter",
    "DeadLetter",
    "Delivery",
    "EventDetail",
    "QueueStatus",
    "ReplayResult",
    "SourceStatus",
    "Status",
    "TargetStatus",
    "collect_status",
    "dead_count_by_target",
    "dead_of_event",
    "dead_targets_of",
    "delivery_states",
    "due_counts",
    "iter_dead",
    "list_dead",
    "replay_deliveries",
    "replay_delivery",
    "show_event",
]
