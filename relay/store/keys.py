"""Names of relay's Redis keys: the storage contract between the receiver and the workers.

    relay:ev:{id}        HASH  the event and each target's delivery state (relay.store.records)
    relay:att:{id}       LIST  one JSON record per delivery attempt, oldest first (records)
    relay:events         ZSET  event id -> received time (for listing; trimmed to retention)
    relay:unrouted       ZSET  event id -> received time, events no route matched
    relay:dead           ZSET  "{id}:{target}" -> time it went dead (dead-letter store)
    relay:dd:{source}:{digest}  STRING  inbound dedupe value -> first event id (expires)
    relay:stats:target:{name}   HASH    counters: records.TargetStat
    relay:stats:source:{name}   HASH    counters: records.SourceStat
    relay:due:{target}          ZSET    event id -> when its delivery to the target is due: now
                                        for a fresh event, the retry time after a failure, or the
                                        end of the lease while an attempt is in flight (a crashed
                                        worker's delivery becomes due again when it ends); removed
                                        when the delivery is over
    relay:duetargets            SET     names of the targets that have a due set
    relay:paused:{target}       STRING  JSON {at, event_id, reason}: the target is paused (set by a
                                        410 with pause_on_gone or `relay pause`; no expiry)
    relay:lock:trim             STRING  held (SET NX EX) by the worker trimming the indexes
    relay:ack:mark              STRING  written just before a WAIT that must cover every earlier
                                        write, not only the caller's own (relay.store.replication)
    relay:rc:{source}:members   HASH    reconciliation's snapshot: membership -> its state at the
                                        last pass (relay.store.reconcile); no expiry
    relay:rc:{source}:pending   HASH    change seen in the API but not (yet) by webhook -> when
                                        a pass first saw it (declared missed after `grace`)
    relay:rc:{source}:pass      HASH    the last pass: when, outcome, failures in a row
    relay:lock:rc:{source}      STRING  held (SET NX EX) by the process running a pass

Every per-event key expires with the retention period, so Redis memory stays bounded.
"""

from __future__ import annotations

import hashlib

from relay.core.constants import KEY_PREFIX

__all__ = [
    "ACK_MARK",
    "DEAD",
    "DUE_TARGETS",
    "EVENTS_INDEX",
    "TRIM_LOCK",
    "UNROUTED",
    "attempts_key",
    "dead_member",
    "dedupe_key",
    "due_key",
    "event_key",
    "paused_key",
    "reconcile_lock_key",
    "reconcile_members_key",
    "reconcile_pass_key",
    "reconcile_pending_key",
    "source_stats_key",
    "split_dead_member",
    "target_stats_key",
]

EVENTS_INDEX = f"{KEY_PREFIX}:events"
UNROUTED = f"{KEY_PREFIX}:unrouted"
DEAD = f"{KEY_PREFIX}:dead"
ACK_MARK = f"{KEY_PREFIX}:ack:mark"


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


#: Held by the one worker process that trims the indexes to the retention period this interval.
TRIM_LOCK = f"{KEY_PREFIX}:lock:trim"


def paused_key(target: str) -> str:
    """The key whose presence pauses deliveries to a target (they are held, not attempted)."""
    return f"{KEY_PREFIX}:paused:{target}"


DUE_TARGETS = f"{KEY_PREFIX}:duetargets"


def due_key(target: str) -> str:
    """The sorted set of a target's deliveries by the time they are due (or their lease ends)."""
    return f"{KEY_PREFIX}:due:{target}"


def reconcile_members_key(source: str) -> str:
    """The membership snapshot of a reconciled source's last pass."""
    return f"{KEY_PREFIX}:rc:{source}:members"


def reconcile_pending_key(source: str) -> str:
    """Changes a pass saw in the API and no webhook brought yet, with when first seen."""
    return f"{KEY_PREFIX}:rc:{source}:pending"


def reconcile_pass_key(source: str) -> str:
    """The record of a reconciled source's last pass."""
    return f"{KEY_PREFIX}:rc:{source}:pass"


def reconcile_lock_key(source: str) -> str:
    """Held by the one process running a reconciliation pass of a source."""
    return f"{KEY_PREFIX}:lock:rc:{source}"
