"""What the operator commands read and change in Redis: status, dead letters, one event, replay.

Functions take a sync `redis.Redis` and return frozen values; `relay.cli` renders them. Keys and
states are those of relay.store.keys and relay.store.records. Reading is side-effect free; only
`replay_delivery`, `replay_deliveries` (bulk) and the steps of bulk replay jobs (replay_jobs)
write. One module per concern; import this package (`from relay.ops import deliveries as ops`)
for all of them (`due_counts`, the exact due figures, is the store's).
"""

from relay.ops.deliveries.batches import replay_deliveries
from relay.ops.deliveries.bulk import (
    Pair,
    done_key,
    event_pairs,
    nothing_to_replay,
    replay_pairs,
    replay_summary,
)
from relay.ops.deliveries.dead_letters import (
    DeadFilter,
    DeadLetter,
    DeadPage,
    dead_count_by_target,
    dead_of_event,
    dead_targets_of,
    iter_dead,
    list_dead,
    page_dead,
)
from relay.ops.deliveries.detail import (
    Attempt,
    Delivery,
    EventDetail,
    delivery_states,
    show_event,
)
from relay.ops.deliveries.replay import ReplayResult, replay_delivery
from relay.ops.deliveries.replay_jobs import (
    begin_replay_job,
    claim_job,
    claim_open_jobs,
    fail_replay_job,
    replay_job_chunk,
)
from relay.ops.deliveries.status import (
    QueueStatus,
    SourceStatus,
    Status,
    TargetStatus,
    collect_status,
    source_statuses,
)
from relay.store.deliveries import due_counts

__all__ = [
    "Attempt",
    "DeadFilter",
    "DeadLetter",
    "DeadPage",
    "Delivery",
    "EventDetail",
    "Pair",
    "QueueStatus",
    "ReplayResult",
    "SourceStatus",
    "Status",
    "TargetStatus",
    "begin_replay_job",
    "claim_job",
    "claim_open_jobs",
    "collect_status",
    "dead_count_by_target",
    "dead_of_event",
    "dead_targets_of",
    "delivery_states",
    "done_key",
    "due_counts",
    "event_pairs",
    "fail_replay_job",
    "iter_dead",
    "list_dead",
    "nothing_to_replay",
    "page_dead",
    "replay_deliveries",
    "replay_delivery",
    "replay_job_chunk",
    "replay_pairs",
    "replay_summary",
    "show_event",
    "source_statuses",
]
