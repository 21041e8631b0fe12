"""Names of relay's Redis keys: the storage contract between the receiver and the workers.

    relay:ev:{id}        HASH  the event: source, type, received, ctype, method, headers (JSON),
                               body (raw bytes), targets (JSON list), dedupe (key or ""), and per
                               target t: s:{target} state, n:{target} attempts made,
                               r:{target} reason of the final state,
                               b:{target} attempts made before the latest replay (default 0):
                               the current round may make attempts while n - b < policy.attempts
    relay:att:{id}       LIST  one JSON record per delivery attempt, oldest first
    relay:events         ZSET  event id -> received time (for listing; trimmed to retention)
    relay:unrouted       ZSET  event id -> received time, events no route matched
    relay:dead           ZSET  "{id}:{target}" -> time it went dead (dead-letter store)
    relay:dd:{source}:{digest}  STRING  inbound dedupe value -> first event id (expires)
    relay:stats:target:{name}   HASH    counters: delivered, dead, gone, attempts, failures,
                                        replayed (relay replay)
    relay:stats:source:{name}   HASH    counters: received, duplicates, unrouted
    relay:due:{target}          ZSET    event id -> when its delivery to the target is due: now
                                        for a fresh event, the retry time after a failure, or the
                                        end of the lease while an attempt is in flight (a crashed
                                        worker's delivery becomes due again when it ends); removed
                                        when the delivery is over
    relay:duetargets            SET     names of the targets that have a due set
    relay:paused:{target}       STRING  JSON {at, event_id, reason}: the target is paused (set by a
                                        410 with pause_on_gone or `relay pause`; no expiry)
    relay:lock:trim             STRING  held (SET NX EX) by the worker trimming the indexes

Every per-event key expires with the retention period, so Redis memory stays bounded.
"""

from __future__ import annotations

import hashlib

from relay.core.constants import KEY_PREFIX

EVENTS_INDEX = f"{KEY_PREFIX}:events"
UNROUTED = f"{KEY_PREFIX}:unrouted"
DEAD = f"{KEY_PREFIX}:dead"

#: Delivery states kept in the event hash under s:{target}.
PENDING = "pending"  # not yet attempted, or an attempt is in flight
RETRYING = "retrying"  # failed at least once; a retry is scheduled
DELIVERED = "delivered"
DEAD_STATE = "dead"  # out of attempts: in the dead-letter store
GONE = "gone"  # the target answered 410: stopped, in the dead-letter store
FINAL_STATES = frozenset({DELIVERED, DEAD_STATE, GONE})
#: An inbound duplicate (its dedupe key names another event): never delivered.
DUPLICATE = "duplicate"


def event_key(event_id: str) -> str:
    """The hash holding one event and its per-target delivery state."""
    return f"{KEY_PREFIX}:ev:{event_id}"


def attempts_key(event_id: str) -> str:
    """The list of attempt records of one event, all targets together."""
    return f"{KEY_PREFIX}:att:{event_id}"


def dedupe_key(source: str, value: str) -> str:
    """The key that marks an inbound dedupe value as seen for a source."""
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]
    return f"{KEY_PREFIX}:dd:{source}:{digest}"


def target_stats_key(target: str) -> str:
    """Counters of one target."""
    return f"{KEY_PREFIX}:stats:target:{target}"


def source_stats_key(source: str) -> str:
    """Counters of one source."""
    return f"{KEY_PREFIX}:stats:source:{source}"


def dead_member(event_id: str, target: str) -> str:
    """The dead-letter store's member for one delivery (names never contain ':')."""
    return f"{event_id}:{target}"


def split_dead_member(member: str) -> tuple[str, str]:
    """(event id, target) from a dead-letter member."""
    event_id, _, target = member.partition(":")
    return event_id, target


def state_field(target: str) -> str:
    """Field of the event hash with a target's delivery state."""
    return f"s:{target}"


def attempts_field(target: str) -> str:
    """Field of the event hash with the number of attempts made to a target."""
    return f"n:{target}"


def reason_field(target: str) -> str:
    """Field of the event hash with why a delivery ended as it did."""
    return f"r:{target}"


def base_field(target: str) -> str:
    """Field of the event hash with the attempts made before the latest replay of a target."""
    return f"b:{target}"


#: Held by the one worker process that trims the indexes to the retention period this interval.
TRIM_LOCK = f"{KEY_PREFIX}:lock:trim"


def paused_key(target: str) -> str:
    """The key whose presence pauses deliveries to a target (they are held, not attempted)."""
    return f"{KEY_PREFIX}:paused:{target}"


DUE_TARGETS = f"{KEY_PREFIX}:duetargets"


def due_key(target: str) -> str:
    """The sorted set of a target's deliveries by the time they are due (or their lease ends)."""
    return f"{KEY_PREFIX}:due:{target}"
