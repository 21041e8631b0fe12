"""Replica-acknowledged writes (`RELAY_ACK_REPLICAS`) and the start-up checks behind them.

Redis replicates asynchronously: a primary that dies, or is cut off and then demoted, takes
with it the writes its replicas had not received yet. `WAIT N timeout` blocks the connection it
is sent on until N replicas have acknowledged every write that connection made, or the timeout
passes, and answers how many did. Because the replication stream is one ordered log, a WAIT
after a write covers every write the primary took before that one, whoever made it; the spool
drain relies on that when the events it finds already in Redis were written by someone else
(`confirm_replicas` writes `keys.ACK_MARK` first for exactly that reason).

`RELAY_ACK_REPLICAS=all` (relay.core.acks) asks for every replica the primary counts online,
and at least one: the WAIT is followed by `ROLE`, which lists the online replicas, and the write
counts as confirmed once every replica online when the WAIT answered has it. With two replicas
whichever Sentinel promotes then has every acknowledged write, and after a failover the one
replica left confirms alone. A replica still syncing (or reconnecting) is not online: it is not
counted, and need not be. It does not have the data yet (the primary sends it the write after
its snapshot), and a failover does not prefer it to the replicas that confirmed: among replicas
of equal priority Sentinel promotes the one with the largest replication offset, and one still
loading its snapshot reports an older offset than any replica that confirmed the write.

A WAIT that answers fewer than it needs (`AckReplicas.wanted` of the replicas online once it
answered) is `ReplicasUnconfirmed`: the write is on the primary but not known to survive a
failover, so the receiver answers 503 (or spools) rather than 202.

What relay cannot check from here, and the Deployment page asks for: AOF on the replicas, and
`min-replicas-to-write` on every node that can become primary.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from relay.core.acks import AckReplicas
from relay.store import keys

__all__ = [
    "MARK_TTL_MS",
    "ROLE_COMMAND",
    "ReplicasUnconfirmed",
    "ReplicationFacts",
    "check_confirmed",
    "confirm_replicas",
    "facts_from_info",
    "online_from_info",
    "online_from_role",
    "read_facts",
    "startup_warnings",
    "wait_command",
]

#: The mark only needs to outlive the WAIT that follows it.
MARK_TTL_MS = 60_000
#: Lists the replicas the primary counts online, with their offsets: a short reply, cheaper
#: than INFO replication, and the same list (replicas still syncing left out).
ROLE_COMMAND: tuple[str, ...] = ("ROLE",)


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


def online_from_role(reply: Any) -> int:
    """How many replicas a ROLE reply lists as online: 0 from anything but a primary (pure).

    A primary answers `[b"master", offset, [[ip, port, offset], ...]]` and lists only the
    replicas in state online.
    """
    if not isinstance(reply, list | tuple) or len(reply) < 3:
        return 0
    role = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
    return len(reply[2]) if role == "master" else 0


def online_from_info(replication: Mapping[str, Any]) -> int:
    """How many replicas INFO replication lists with `state=online` (pure).

    `replication` is the section as redis-py parses it (`slave0` maps to a dict) or as raw
    `key:value` pairs (`slave0` maps to `ip=...,port=...,state=online,offset=...,lag=...`).
    """
    online = 0
    for key, value in replication.items():
        if not (key.startswith("slave") and key[5:].isdigit()):
            continue
        if isinstance(value, Mapping):
            state = value.get("state")
        else:
            fields = dict(part.partition("=")[::2] for part in str(value).split(","))
            state = fields.get("state")
        online += state == "online"
    return online


def confirm_replicas(conn: redis.Redis, ack: AckReplicas, timeout: float) -> int:
    """Wait until the replicas `ack` asks for have every write the primary took so far (see
    the module).

    A fixed count: one round trip, the mark and the WAIT pipelined on one connection. With
    `all`, two or three: the online count is asked first, with the mark (this runs in the spool
    drain and relay dev's embedded mode, where a round trip more costs nothing worth saving),
    and a WAIT that a replica coming online outgrew is sent again for it, within `timeout`.
    """
    if not ack.enabled:
        return 0
    if not ack.every_online:
        with conn.pipeline(transaction=False) as pipe:
            pipe.set(keys.ACK_MARK, repr(time.time()), px=MARK_TTL_MS)
            pipe.execute_command(*wait_command(ack.count, timeout))  # type: ignore[no-untyped-call]
            _, reply = pipe.execute()
        return check_confirmed(reply, ack.count, timeout)
    with conn.pipeline(transaction=False) as pipe:
        pipe.set(keys.ACK_MARK, repr(time.time()), px=MARK_TTL_MS)
        pipe.execute_command(*ROLE_COMMAND)  # type: ignore[no-untyped-call]
        _, role = pipe.execute()
    wanted = ack.wanted(online_from_role(role))
    deadline = time.monotonic() + timeout
    left = timeout
    while True:
        with conn.pipeline(transaction=False) as pipe:
            pipe.execute_command(*wait_command(wanted, left))  # type: ignore[no-untyped-call]
            pipe.execute_command(*ROLE_COMMAND)  # type: ignore[no-untyped-call]
            reply, role = pipe.execute()
        needed = ack.wanted(online_from_role(role))  # who is online once the WAIT answered
        left = deadline - time.monotonic()
        if int(reply) >= needed or needed <= wanted or left <= 0:
            return check_confirmed(reply, needed, timeout)
        wanted = needed  # a replica came online during the WAIT: wait for it too


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


def read_facts(conn: redis.Redis) -> ReplicationFacts:
    """INFO replication and persistence, read in one round trip."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.info("replication")
        pipe.info("persistence")
        replication, persistence = pipe.execute()
    return facts_from_info(replication, persistence)


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
    if not facts.aof_enabled:
        warnings.append(
            "AOF is off (appendonly no): a Redis restart loses every event written since the "
            "last snapshot; set appendonly yes"
        )
    return warnings
