"""Replica-acknowledged writes (`RELAY_ACK_REPLICAS`) and the start-up checks behind them.

Redis replicates asynchronously: a primary that dies, or is cut off and then demoted, takes
with it the writes its replicas had not received yet. `WAIT N timeout` blocks the connection it
is sent on until N replicas have acknowledged every write that connection made, or the timeout
passes, and answers how many did. Because the replication stream is one ordered log, a WAIT
after a write covers every write the primary took before that one, whoever made it; the spool
drain relies on that when the events it finds already in Redis were written by someone else
(`confirm_replicas` writes `keys.ACK_MARK` first for exactly that reason).

`RELAY_ACK_REPLICAS=all` (relay.core.acks) asks for every replica the primary counts online and
that acknowledged recently, and at least one: the write counts as confirmed once every such
replica has it. With two replicas whichever Sentinel promotes then has every acknowledged write,
and after a failover the one replica left confirms alone. Who counts is read from `INFO
replication` (`fresh_from_info`): a replica in state online whose `lag`, the seconds since its
last REPLCONF ACK, is at most `AckReplicas.max_lag` (`RELAY_ACK_MAX_LAG`). Replicas acknowledge
every second; one that is frozen, or cut off from a primary that stays primary, stops, and the
primary would still list it as online until `repl-timeout` (60 s): the lag is how it is given up
within seconds instead, and intake goes on with the replicas left.

The WAIT is sent in slices of WAIT_SLICE, each followed by INFO in the same round trip: after
each slice the count is read again, so a replica lost during the WAIT (killed: the primary drops
it at once, but a WAIT already asked for it would block to its timeout) or gone stale stops
being waited for within about a slice, and one that came online is waited for by the next slice
(`next_slice` decides). A healthy write takes one slice, answered as soon as the replicas have
it. A WAIT repeated on the same connection covers the same writes: WAIT is about the
connection's last write, and nothing is written between the slices.

Skipping a stale replica is a trade-off, not a free pass: it lacks the writes confirmed without
it, which survive a failover only if Sentinel promotes a replica that confirmed them. Sentinel
does, among replicas of equal `replica-priority`: it promotes the one with the largest
replication offset, and a replica stale for seconds is behind every replica that confirmed (a
frozen one does not even answer Sentinel, which promotes no replica it sees down). Those writes
are lost only if every replica that confirmed them is lost with the primary. A replica still
syncing (or reconnecting) is not online: it is not counted, and need not be, for the same
reason (it reports an older offset than any replica that confirmed the write).

A WAIT that answers fewer than it needs (`AckReplicas.wanted` of the replicas counted once its
last slice answered) is `ReplicasUnconfirmed`: the write is on the primary but not known to
survive a failover, so the receiver answers 503 (or spools) rather than 202.

What relay cannot check from here, and the Deployment page asks for: AOF on the replicas, and
`min-replicas-to-write` on every node that can become primary.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import redis

from relay.core.acks import AckReplicas
from relay.store import keys
from relay.store.sentinels import replica_priorities

__all__ = [
    "INFO_COMMAND",
    "MARK_TTL_MS",
    "MIN_SLICE",
    "WAIT_SLICE",
    "NotOnPrimary",
    "ReplicaCounts",
    "ReplicasUnconfirmed",
    "ReplicationFacts",
    "check_confirmed",
    "confirm_replicas",
    "facts_from_info",
    "fresh_from_info",
    "info_fields",
    "next_slice",
    "online_from_info",
    "read_facts",
    "replica_counts",
    "startup_warnings",
    "wait_command",
]

#: The mark only needs to outlive the WAIT that follows it.
MARK_TTL_MS = 60_000
#: Lists each replica with its state and its `lag` (ROLE, shorter, has no lag): read after every
#: WAIT slice under `all`, in the same round trip.
INFO_COMMAND: tuple[str, ...] = ("INFO", "replication")
#: Longest single WAIT under `all` (seconds). A replica killed during a WAIT still counts in it
#: until its timeout; a slice bounds how long a batch waits for one that is gone. Short enough
#: to give up a lost replica well within a 3 s intake deadline; long enough that a replica
#: merely slow costs a round trip every half second, not a busy loop.
WAIT_SLICE = 0.5
#: A slice shorter than this is not worth its round trip: the deadline's margin has come.
MIN_SLICE = 0.01


class ReplicasUnconfirmed(redis.RedisError):
    """Fewer replicas than asked confirmed a write within the time allowed."""

    def __init__(self, wanted: int, confirmed: int, timeout: float) -> None:
        self.wanted = wanted
        self.confirmed = confirmed
        self.timeout = timeout
        super().__init__(
            f"the write reached the Redis primary but {confirmed} of the {wanted} replica(s) "
            f"RELAY_ACK_REPLICAS asks for confirmed it within {timeout:.3g} s"
        )


def wait_command(replicas: int, timeout: float) -> tuple[str, int, int]:
    """`WAIT replicas ms`, never 0 ms (which would mean: wait forever)."""
    return ("WAIT", replicas, max(1, int(timeout * 1000)))


def check_confirmed(reply: Any, wanted: int, timeout: float) -> int:
    """The replica count of a WAIT reply; ReplicasUnconfirmed when under `wanted`."""
    confirmed = int(reply)
    if confirmed < wanted:
        raise ReplicasUnconfirmed(wanted, confirmed, timeout)
    return confirmed


def next_slice(confirmed: int, needed: int, left: float) -> float | None:
    """The timeout of the next WAIT slice under `all`, or None when there is none (pure).

    None once `confirmed` reaches what is `needed` now (the count read after the last slice), or
    when less than MIN_SLICE is `left` before the deadline's margin; otherwise up to WAIT_SLICE.
    """
    if confirmed >= needed or left < MIN_SLICE:
        return None
    return min(WAIT_SLICE, left)


def info_fields(text: bytes | str) -> dict[str, str]:
    """The `key:value` lines of raw INFO text, as strings (pure; `# Section` lines skipped)."""
    if isinstance(text, bytes):
        text = text.decode()
    pairs = (line.partition(":") for line in text.splitlines() if not line.startswith("#"))
    return {key: value for key, colon, value in pairs if colon}


def _replicas(replication: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The `slaveN` entries of an INFO replication section, each as its fields.

    redis-py's parsed INFO maps `slave0` to a dict; raw `key:value` pairs map it to
    `ip=...,port=...,state=online,offset=...,lag=...`.
    """
    for key, value in replication.items():
        if not (key.startswith("slave") and key[5:].isdigit()):
            continue
        if isinstance(value, Mapping):
            yield value
        else:
            yield dict(part.partition("=")[::2] for part in str(value).split(","))


def _fresh(replica: Mapping[str, Any], max_lag: float) -> bool:
    """Whether a replica acknowledged within `max_lag` seconds. A lag missing or unreadable
    counts as fresh: waiting for a replica is the side that loses nothing."""
    try:
        return float(replica.get("lag", 0)) <= max_lag
    except (TypeError, ValueError):
        return True


def online_from_info(replication: Mapping[str, Any]) -> int:
    """How many replicas INFO replication lists with `state=online`, whatever their lag (pure).

    `replication` is the section as redis-py parses it or as raw `key:value` pairs.
    """
    return sum(replica.get("state") == "online" for replica in _replicas(replication))


@dataclass(frozen=True)
class ReplicaCounts:
    """The replicas a primary lists online, and those of them acknowledging within the lag
    limit: the ones `all` waits for."""

    online: int
    fresh: int

    @property
    def stale(self) -> int:
        """Online replicas skipped for their lag."""
        return self.online - self.fresh


def replica_counts(info: bytes | str | Mapping[str, Any], max_lag: float) -> ReplicaCounts:
    """ReplicaCounts from INFO replication, in one pass; none from anything but a primary (pure).

    `info` is the raw reply (what the intake's link reads: bytes) or the section as redis-py
    parses it (the sync client's `info("replication")`).
    """
    replication = info if isinstance(info, Mapping) else info_fields(info)
    if str(replication.get("role", "")) != "master":
        return ReplicaCounts(0, 0)
    online = fresh = 0
    for replica in _replicas(replication):
        if replica.get("state") == "online":
            online += 1
            fresh += _fresh(replica, max_lag)
    return ReplicaCounts(online, fresh)


def fresh_from_info(info: bytes | str | Mapping[str, Any], max_lag: float) -> int:
    """How many replicas INFO replication lists online with a `lag` of at most `max_lag`
    seconds: the replicas `all` waits for (replica_counts' `fresh`; pure)."""
    return replica_counts(info, max_lag).fresh


def confirm_replicas(
    conn: redis.Redis, ack: AckReplicas, timeout: float, *, present: Sequence[str] = ()
) -> int:
    """Wait until the replicas `ack` asks for have every write the primary took so far (see
    the module), and, where `present` names keys, check that they are on that primary.

    Every WAIT is pipelined after a write of the mark and the EXISTS of `present`, on one
    connection: `conn` is a pooled client, so two round trips may use two connections, and
    during a failover two servers. A WAIT on a connection that wrote nothing returns at once
    with every replica, and one on another server than the events confirms nothing about them:
    the confirmation must come from the server that has them, on the connection that wrote
    last. A fixed count: one round trip. With `all`, two or more: the replicas to wait for are
    read first (this runs in the spool drain and relay dev's embedded mode, where a round trip
    more costs nothing worth saving), then WAIT slices, each with INFO, until they confirm or
    `timeout` passes. NotOnPrimary when `present` is not all there.
    """
    if not ack.enabled:
        return 0
    if not ack.every_online:
        with conn.pipeline(transaction=False) as pipe:
            _mark(pipe, present)
            pipe.execute_command(*wait_command(ack.count, timeout))  # type: ignore[no-untyped-call]
            replies = pipe.execute()
        _check_present(replies, present)
        return check_confirmed(replies[-1], ack.count, timeout)
    deadline = time.monotonic() + timeout
    info = conn.execute_command(*INFO_COMMAND)  # type: ignore[no-untyped-call]
    confirmed, needed = 0, ack.wanted(fresh_from_info(info, ack.max_lag))
    while (wait := next_slice(confirmed, needed, deadline - time.monotonic())) is not None:
        with conn.pipeline(transaction=False) as pipe:
            _mark(pipe, present)
            pipe.execute_command(*wait_command(needed, wait))  # type: ignore[no-untyped-call]
            pipe.execute_command(*INFO_COMMAND)  # type: ignore[no-untyped-call]
            replies = pipe.execute()
        _check_present(replies, present)
        reply, info = replies[-2:]
        # Who counts once the slice answered decides: a replica lost or gone stale during it
        # is not waited for, one that came online during it is (by the next slice).
        confirmed, needed = int(reply), ack.wanted(fresh_from_info(info, ack.max_lag))
    return check_confirmed(confirmed, needed, timeout)


class NotOnPrimary(redis.RedisError):
    """The keys a confirmation was for are not on the primary it ran on (a failover between
    the write and the WAIT): nothing is confirmed; write them again."""

    def __init__(self, missing: int, asked: int) -> None:
        super().__init__(
            f"{missing} of {asked} event(s) are not on the primary the replicas' confirmation "
            "ran on (a failover between the write and the WAIT?); they are written again"
        )


def _mark(pipe: Any, present: Sequence[str]) -> None:
    """Queue the mark, so that the WAIT after it covers every earlier write on this server,
    and the EXISTS of `present` (second reply) if any."""
    pipe.set(keys.ACK_MARK, repr(time.time()), px=MARK_TTL_MS)
    if present:
        pipe.exists(*present)


def _check_present(replies: Sequence[Any], present: Sequence[str]) -> None:
    if present and int(replies[1]) < len(present):
        raise NotOnPrimary(len(present) - int(replies[1]), len(present))


@dataclass(frozen=True)
class ReplicationFacts:
    """What the primary says about its replicas and its persistence."""

    role: str
    connected_replicas: int
    #: Connected replicas in state online (not those still syncing).
    online_replicas: int
    aof_enabled: bool
    #: Replicas counted "good" for min-replicas-to-write; None when that setting is off.
    good_replicas: int | None
    #: The `replica-priority` of each replica the Sentinels list (none without Sentinels).
    replica_priorities: tuple[int, ...] = ()


def read_facts(conn: redis.Redis) -> ReplicationFacts:
    """INFO replication and persistence, read in one round trip."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.info("replication")
        pipe.info("persistence")
        replication, persistence = pipe.execute()
    facts = facts_from_info(replication, persistence)
    return replace(facts, replica_priorities=replica_priorities(conn))


def facts_from_info(
    replication: Mapping[str, Any], persistence: Mapping[str, Any]
) -> ReplicationFacts:
    """ReplicationFacts from parsed INFO sections (pure, for tests)."""
    good = replication.get("min_slaves_good_slaves")
    return ReplicationFacts(
        role=str(replication.get("role", "")),
        connected_replicas=int(replication.get("connected_slaves", 0)),
        online_replicas=online_from_info(replication),
        aof_enabled=bool(int(persistence.get("aof_enabled", 0))),
        good_replicas=None if good is None else int(good),
    )


def startup_warnings(facts: ReplicationFacts, ack: AckReplicas) -> list[str]:
    """What an operator should hear about at start-up, one sentence each (pure)."""
    warnings = []
    if facts.role and facts.role != "master":
        warnings.append(
            f"REDIS_URL leads to a {facts.role}, not a primary: every write will be refused"
        )
    # With `all` no request waits for a replica that is not there, but with none at all every
    # request waits for one.
    if ack.wanted(0) > facts.connected_replicas:
        warnings.append(
            f"RELAY_ACK_REPLICAS={ack} but the primary has {facts.connected_replicas} "
            "connected replica(s): every request will wait for its deadline and get 503 "
            "(or be spooled) until enough replicas connect"
        )
    if ack.enabled and facts.good_replicas is None:
        warnings.append(
            "min-replicas-to-write is off on the primary: no 202 depends on it (WAIT does), "
            "but a primary cut off from its replicas keeps taking the workers' writes, which a "
            "failover drops: those deliveries are made again (set min-replicas-to-write 1 for "
            "fewer repeats, at the price of deliveries pausing while a new primary has no "
            "replica; Deployment page)"
        )
    promotable = {p for p in facts.replica_priorities if p > 0}  # 0: never promoted
    if ack.every_online and len(promotable) > 1:
        warnings.append(
            f"the replicas' replica-priority differ ({', '.join(map(str, sorted(promotable)))}): "
            f"with RELAY_ACK_REPLICAS={ack} Sentinel may promote a replica skipped as stale "
            "over one that confirmed the latest events; keep them equal (Deployment page)"
        )
    if not facts.aof_enabled:
        warnings.append(
            "AOF is off (appendonly no): a Redis restart loses every event written since the "
            "last snapshot; set appendonly yes"
        )
    return warnings
