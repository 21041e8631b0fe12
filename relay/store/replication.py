"""Replica-acknowledged writes (`RELAY_ACK_REPLICAS=N`) and the start-up checks behind them.

Redis replicates asynchronously: a primary that dies, or is cut off and then demoted, takes
with it the writes its replicas had not received yet. `WAIT N timeout` blocks the connection it
is sent on until N replicas have acknowledged every write that connection made, or the timeout
passes, and answers how many did. Because the replication stream is one ordered log, a WAIT
after a write covers every write the primary took before that one, whoever made it; the spool
drain relies on that when the events it finds already in Redis were written by someone else
(`confirm_replicas` writes `keys.ACK_MARK` first for exactly that reason).

A WAIT that answers fewer than N is `ReplicasUnconfirmed`: the write is on the primary but not
known to survive a failover, so the receiver answers 503 (or spools) rather than 202.

What relay cannot check from here, and the Deployment page asks for: AOF on the replicas, and
`min-replicas-to-write` on every node that can become primary.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from relay.store import keys

__all__ = [
    "MARK_TTL_MS",
    "ReplicasUnconfirmed",
    "ReplicationFacts",
    "check_confirmed",
    "confirm_replicas",
    "facts_from_info",
    "read_facts",
    "startup_warnings",
    "wait_command",
]

#: The mark only needs to outlive the WAIT that follows it.
MARK_TTL_MS = 60_000


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


def confirm_replicas(conn: redis.Redis, wanted: int, timeout: float) -> int:
    """Wait until `wanted` replicas have every write the primary took so far (see the module).

    One round trip: the mark and the WAIT are pipelined on one connection.
    """
    if wanted <= 0:
        return 0
    with conn.pipeline(transaction=False) as pipe:
        pipe.set(keys.ACK_MARK, repr(time.time()), px=MARK_TTL_MS)
        pipe.execute_command(*wait_command(wanted, timeout))  # type: ignore[no-untyped-call]
        _, reply = pipe.execute()
    return check_confirmed(reply, wanted, timeout)


@dataclass(frozen=True)
class ReplicationFacts:
    """What the primary says about its replicas and its persistence."""

    role: str
    connected_replicas: int
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
        aof_enabled=bool(int(persistence.get("aof_enabled", 0))),
        good_replicas=None if good is None else int(good),
    )


def startup_warnings(facts: ReplicationFacts, ack_replicas: int) -> list[str]:
    """What an operator should hear about at start-up, one sentence each (pure)."""
    warnings = []
    if facts.role and facts.role != "master":
        warnings.append(
            f"REDIS_URL leads to a {facts.role}, not a primary: every write will be refused"
        )
    if ack_replicas > facts.connected_replicas:
        warnings.append(
            f"RELAY_ACK_REPLICAS={ack_replicas} but the primary has {facts.connected_replicas} "
            "connected replica(s): every request will wait for its deadline and get 503 "
            "(or be spooled) until enough replicas connect"
        )
    if ack_replicas > 0 and facts.good_replicas is None:
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
