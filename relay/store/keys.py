"""Names of relay's Redis keys: the storage contract between the receiver and the workers.

    relay:ev:{id}        HASH  the event, each target's delivery state and its attempt log, one
                         field a:{target}:{n} per attempt (relay.store.records, the codec):
                         a value over 64 bytes is stored in parts ("body", "body.1", ...) so
                         the hash keeps Redis's compact listpack encoding
    relay:att:{id}       LIST  the attempt log of an event stored before 2026-12: one JSON
                         record per attempt, oldest first (read until it expires)
    relay:events:{minute}  LIST  ids of the events received in one minute (Unix s // 60), in
                         their 16-byte compact form (relay.core.ids.id_to_bytes), in
                         intake order (pushed at the end only, so an index from the start
                         keeps naming one id: the API's cursors rely on it); expires a minute
                         after the retention period (relay.store.events_index; walked newest
                         first by relay.ops.events.walk)
    relay:events:minutes ZSET  minute -> minute: the minutes that have a list (trimmed to
                         retention)
    relay:events         ZSET  event id -> received time: the index before 2026-12, read after
                         the minute lists (listings, API cursors, status page) until trimmed
                         to retention
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
    relay:rate:{target}         STRING  a target with `rate`: Unix time from which its next
                                        delivery may start (GCRA; expires once in the past)
    relay:inflight:{target}     ZSET    a target with `concurrency`: event id -> lease end of
                                        each attempt in flight (a crashed worker's slot comes
                                        back when its lease ends)
    relay:order:{target}        HASH    a target with `order`: the head of each FIFO key, event
                                        id -> key digest, and "#waiting" -> deliveries waiting
                                        behind a head (relay.store.control)
    relay:order:{target}:{digest}  LIST  the deliveries of one FIFO key in intake order, the
                                        head (in the due set) first; removed when empty
    relay:controls              HASH    target -> JSON of the rate, concurrency and order the
                                        workers enforce (written by each worker at start and
                                        route reload; read by status, the page and metrics)
    relay:paused:{target}       STRING  JSON {at, event_id, reason}: the target is paused (set by a
                                        410 with pause_on_gone or `relay pause`; no expiry)
    relay:lock:trim             STRING  held (SET NX EX) by the worker trimming the indexes
    relay:ack:mark              STRING  written just before a WAIT that must cover every earlier
                                        write, not only the caller's own (relay.store.replication)
    relay:breaker:{target}      HASH    the target's circuit breaker (relay.store.breakers):
                                        failed attempts in a row, since when it is open, the
                                        last failure; absent: closed, no failure since a success
    relay:breaker:{target}:probe
                                STRING  held (SET NX PX) until the next probe of an open
                                        breaker is due: one probe per interval, all workers
    relay:breakers              SET     names of the targets that have a breaker record
    relay:rc:{source}:containers  SET   the courses and programs reconciliation's snapshot holds
                                        ("course:{id}", "program:{id}"); no expiry
    relay:rc:{source}:m:{kind}:{id}  HASH  the snapshot of one course or program: member -> its
                                        state at the last pass (relay.store.reconcile_snapshot)
    relay:rc:{source}:members   HASH    the snapshot's layout before 2026-12 (one hash of every
                                        "{kind}:{id}:{member}"): converted into the per-container
                                        hashes, then deleted, by the next pass
                                        (relay.store.reconcile_legacy)
    relay:rc:{source}:pending   HASH    change seen in the API but not (yet) by webhook -> when
                                        a pass first saw it (declared missed after `grace`)
    relay:rc:{source}:pass      HASH    the last pass: when, outcome, failures in a row, the error,
                                        the last success, the first pass
    relay:rc:{source}:stats     HASH    counters: passes by outcome, synthesized events by type
    relay:rc:sources            SET     names of the sources that ever recorded a pass
    relay:lock:rc:{source}      STRING  held (SET NX PX) by the process running a pass, extended
                                        while it runs (worker.fellow.lock)
    relay:enr:{id}              STRING  the API record an enriched delivery of the event carries
                                        (JSON, relay.store.enrichment); expires with the event
    relay:lock:enr:{id}         STRING  held (SET NX PX) by the process fetching that record
    relay:job:{id}              HASH    a bulk replay started through the management API: its
                                        progress (relay.store.jobs); expires a day after its last
                                        write
    relay:job:{id}:pairs        LIST    the job's deliveries, "{id}:{target}" in replay order: what
                                        a resumed job reads from `done` on (relay.store.job_pairs);
                                        expires with the record, deleted when the job ends
    relay:jobs:open             ZSET    job id -> created time: jobs not yet over, which admin
                                        processes look through for one to resume (an entry whose
                                        record is over or gone is dropped by the next look)
    relay:lock:job:{id}         STRING  held (SET NX PX) by the admin process running the job,
                                        extended every chunk (relay.store.job_lease)
    relay:admin:revoked:{nonce} STRING  a console session signed out before its end: the name of
                                        its token (never the value; relay.store.revoked_sessions);
                                        expires when the session would have ended (and
                                        the console's clock skew later)

Every per-event key expires with the retention period, so Redis memory stays bounded.
"""

from __future__ import annotations

import hashlib

from relay.core.constants import KEY_PREFIX

__all__ = [
    "ACK_MARK",
    "BREAKERS",
    "CONTROLS",
    "DEAD",
    "DUE_TARGETS",
    "EVENTS_BUCKET_PREFIX",
    "EVENTS_INDEX",
    "EVENTS_MINUTES",
    "OPEN_JOBS",
    "RECONCILED_SOURCES",
    "TRIM_LOCK",
    "UNROUTED",
    "attempts_key",
    "breaker_key",
    "breaker_probe_key",
    "dead_member",
    "dedupe_key",
    "due_key",
    "enrichment_key",
    "enrichment_lock_key",
    "event_key",
    "in_flight_key",
    "job_key",
    "job_lock_key",
    "job_pairs_key",
    "order_key",
    "order_queue_key",
    "paused_key",
    "rate_key",
    "reconcile_container_key",
    "reconcile_containers_key",
    "reconcile_legacy_key",
    "reconcile_lock_key",
    "reconcile_pass_key",
    "reconcile_pending_key",
    "reconcile_stats_key",
    "revoked_session_key",
    "source_stats_key",
    "split_dead_member",
    "target_stats_key",
]

EVENTS_INDEX = f"{KEY_PREFIX}:events"
#: The minute lists of the events index: "{EVENTS_BUCKET_PREFIX}{minute}" (events_index).
EVENTS_BUCKET_PREFIX = f"{KEY_PREFIX}:events:"
EVENTS_MINUTES = f"{KEY_PREFIX}:events:minutes"
UNROUTED = f"{KEY_PREFIX}:unrouted"
DEAD = f"{KEY_PREFIX}:dead"
ACK_MARK = f"{KEY_PREFIX}:ack:mark"
RECONCILED_SOURCES = f"{KEY_PREFIX}:rc:sources"


def event_key(event_id: str) -> str:
    """The hash holding one event and its per-target delivery state."""
    return f"{KEY_PREFIX}:ev:{event_id}"


def attempts_key(event_id: str) -> str:
    """The list of attempt records of one event stored before 2026-12, all targets together
    (since, the attempts are fields of the event hash)."""
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

#: Names of the targets that have a breaker record (so one removed from routes.toml is found).
BREAKERS = f"{KEY_PREFIX}:breakers"


def breaker_key(target: str) -> str:
    """The hash of a target's circuit breaker (relay.store.breakers holds its fields)."""
    return f"{KEY_PREFIX}:breaker:{target}"


def breaker_probe_key(target: str) -> str:
    """Held while an open breaker's next probe is not due yet (names never contain ':')."""
    return f"{KEY_PREFIX}:breaker:{target}:probe"


def due_key(target: str) -> str:
    """The sorted set of a target's deliveries by the time they are due (or their lease ends)."""
    return f"{KEY_PREFIX}:due:{target}"


def reconcile_containers_key(source: str) -> str:
    """The courses and programs ("course:{id}") a reconciled source's snapshot holds."""
    return f"{KEY_PREFIX}:rc:{source}:containers"


def reconcile_container_key(source: str, container: str) -> str:
    """The snapshot of one course or program (`container`: "course:{id}"), member -> state."""
    return f"{KEY_PREFIX}:rc:{source}:m:{container}"


def reconcile_legacy_key(source: str) -> str:
    """The snapshot of a reconciled source as versions before 2026-12 kept it: one hash."""
    return f"{KEY_PREFIX}:rc:{source}:members"


def reconcile_pending_key(source: str) -> str:
    """Changes a pass saw in the API and no webhook brought yet, with when first seen."""
    return f"{KEY_PREFIX}:rc:{source}:pending"


def reconcile_pass_key(source: str) -> str:
    """The record of a reconciled source's last pass."""
    return f"{KEY_PREFIX}:rc:{source}:pass"


def reconcile_stats_key(source: str) -> str:
    """The counters of a reconciled source's passes (relay.store.reconcile.PassStats)."""
    return f"{KEY_PREFIX}:rc:{source}:stats"


def reconcile_lock_key(source: str) -> str:
    """Held by the one process running a reconciliation pass of a source."""
    return f"{KEY_PREFIX}:lock:rc:{source}"


#: The delivery control settings the workers enforce, per target (relay.store.control).
CONTROLS = f"{KEY_PREFIX}:controls"


def rate_key(target: str) -> str:
    """When a rate-limited target's next delivery may start (relay.store.control)."""
    return f"{KEY_PREFIX}:rate:{target}"


def in_flight_key(target: str) -> str:
    """The attempts in flight to a target with `concurrency`, scored by their lease end."""
    return f"{KEY_PREFIX}:inflight:{target}"


def order_key(target: str) -> str:
    """The heads of an ordered target's FIFO keys, and how many deliveries wait behind them."""
    return f"{KEY_PREFIX}:order:{target}"


def order_queue_key(target: str, digest: str) -> str:
    """One FIFO key's deliveries in intake order (the Lua scripts build the same name)."""
    return f"{order_key(target)}:{digest}"


def enrichment_key(event_id: str) -> str:
    """The record fetched once for an event's enriched deliveries (relay.store.enrichment)."""
    return f"{KEY_PREFIX}:enr:{event_id}"


def enrichment_lock_key(event_id: str) -> str:
    """Held by the one process fetching an event's enrichment record."""
    return f"{KEY_PREFIX}:lock:enr:{event_id}"


def job_key(job_id: str) -> str:
    """The record of one bulk replay job of the management API (its progress, to poll)."""
    return f"{KEY_PREFIX}:job:{job_id}"


def job_pairs_key(job_id: str) -> str:
    """The deliveries of one bulk replay job, in replay order (what is left is from `done` on)."""
    return f"{KEY_PREFIX}:job:{job_id}:pairs"


def job_lock_key(job_id: str) -> str:
    """Held by the one admin process running a bulk replay job."""
    return f"{KEY_PREFIX}:lock:job:{job_id}"


#: The bulk replay jobs not over yet, by created time: where resumable ones are looked for.
OPEN_JOBS = f"{KEY_PREFIX}:jobs:open"


def revoked_session_key(nonce: str) -> str:
    """Present while the console session with this nonce is revoked (signed out before its end)."""
    return f"{KEY_PREFIX}:admin:revoked:{nonce}"
