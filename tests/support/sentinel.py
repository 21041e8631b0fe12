"""A real Redis Sentinel topology for tests: a primary, replicas and Sentinels as processes.

Every node is a `redis-server` (Sentinels run as `redis-server CONF --sentinel`, the same
binary as `redis-sentinel`) on a free port, with its data and config in a temp directory and
short Sentinel timings so a failover takes a few seconds, not half a minute. Each node has a
`Place`: 127.0.0.1 in this network namespace, or an address inside a namespace of its own
(tests/support/netns.py) for the partition tests. With `tls=True` every node and Sentinel
listens on TLS only, replication and Sentinel's links included, with a throwaway CA made in the
topology's directory (tests/support/tls.py), and `url` is a `rediss+sentinel://` URL. The nodes
themselves are in tests/support/redis_nodes.py. Every wait here is bounded.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.support.redis_nodes import (
    LOOPBACK,
    SERVICE,
    DataNode,
    Place,
    SentinelNode,
    wait_for,
)
from tests.support.redis_server import redis_server_binary
from tests.support.tls import TlsFiles, TlsSet, make_tls

__all__ = ["LOOPBACK", "DataNode", "MakeTopology", "Place", "SentinelTopology", "Timings"]

#: Sentinel timings of the tests: a primary is subjectively down after DOWN_AFTER_MS without an
#: answer; FAILOVER_TIMEOUT_MS bounds one failover attempt (and the wait before another).
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


@dataclass
class Timings:
    """Sentinel timings (milliseconds) and the replication settings of the data nodes."""

    down_after_ms: int = DOWN_AFTER_MS
    failover_timeout_ms: int = FAILOVER_TIMEOUT_MS
    quorum: int = 2
    min_replicas_to_write: int = 0
    min_replicas_max_lag: int = 10
    appendonly: bool = True
    extra: list[str] = field(default_factory=list)  # more redis-server arguments, every node


class SentinelTopology:
    """A primary, `replicas` replicas and `sentinels` Sentinels; `url` is relay's REDIS_URL."""

    def __init__(
        self,
        directory: Path,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        timings: Timings | None = None,
        places: Callable[[str], Place] | None = None,
        tls: bool = False,
    ) -> None:
        self.directory = directory
        #: The CA and certificates when the topology speaks TLS only.
        self.tls: TlsSet | None = make_tls(directory / "tls") if tls else None
        server_tls = self.tls.server if self.tls else None
        self.timings = timings or Timings()
        place = places or (lambda _name: LOOPBACK)
        t = self.timings
        settings = [
            "--appendonly", "yes" if t.appendonly else "no",
            "--appendfsync", "everysec",
            "--min-replicas-to-write", str(t.min_replicas_to_write),
            "--min-replicas-max-lag", str(t.min_replicas_max_lag),
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
            *t.extra,
        ]  # fmt: skip
        primary = DataNode(
            "redis-0",
            directory / "redis-0",
            place("redis-0"),
            replicaof=None,
            settings=settings,
            tls=server_tls,
        )
        self.data = [primary] + [
            DataNode(
                f"redis-{i}",
                directory / f"redis-{i}",
                place(f"redis-{i}"),
                replicaof=primary.address,
                settings=settings,
                tls=server_tls,
            )
            for i in range(1, replicas + 1)
        ]
        monitor = (
            f"sentinel monitor {SERVICE} {primary.place.host} {primary.port} {t.quorum}\n"
            f"sentinel down-after-milliseconds {SERVICE} {t.down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE} {t.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.sentinels = [
            SentinelNode(
                f"sentinel-{i}",
                directory / f"sentinel-{i}",
                place(f"sentinel-{i}"),
                monitor,
                tls=server_tls,
            )
            for i in range(sentinels)
        ]

    @property
    def url(self) -> str:
        """relay's URL of the topology, database 0: `redis+sentinel://`, or with TLS
        `rediss+sentinel://` trusting the topology's CA and presenting relay's certificate."""
        return self.url_with(self.tls.client if self.tls else None)

    def url_with(self, tls: TlsFiles | None) -> str:
        """The topology's URL with these TLS files (None: plain `redis+sentinel://`)."""
        hosts = ",".join(f"{s.place.host}:{s.port}" for s in self.sentinels)
        if tls is None:
            return f"redis+sentinel://{hosts}/{SERVICE}/0"
        return f"rediss+sentinel://{hosts}/{SERVICE}/0?{tls.url_query()}"

    def start(self, timeout: float = 30.0) -> None:
        """Start every node; return once each Sentinel knows the replicas and the others."""
        for node in [*self.data, *self.sentinels]:
            node.start()
        self.wait_settled(timeout)

    def wait_settled(self, timeout: float = 30.0) -> None:
        """Wait until every Sentinel agrees on one primary, sees every other Sentinel and every
        replica, and each replica has finished its sync."""
        replicas = len(self.data) - 1
        others = len(self.sentinels) - 1

        def settled() -> bool:
            named = {s.primary() for s in self.sentinels}
            if len(named) != 1 or None in named:
                return False
            states = [s.state() for s in self.sentinels]
            if any(int(str(st["num-other-sentinels"])) < others for st in states):
                return False
            if any(int(str(st["num-slaves"])) < replicas for st in states):
                return False
            primary = self.node_at(named.pop())  # type: ignore[arg-type]
            with primary.client() as client:
                info = client.info("replication")
            synced = [info.get(f"slave{i}", {}) for i in range(replicas)]
            return all(isinstance(r, dict) and r.get("state") == "online" for r in synced)

        wait_for(settled, timeout, "the Sentinel topology did not settle", interval=0.2)

    def primary_address(self) -> tuple[str, int] | None:
        """The primary most live Sentinels name now (None when no majority names one)."""
        votes: Counter[tuple[str, int]] = Counter()
        for sentinel in self.sentinels:
            if not sentinel.alive():
                continue
            try:
                found = sentinel.primary()
            except (redis.RedisError, OSError):
                continue
            if found is not None:
                votes[found] += 1
        if not votes:
            return None
        address, count = votes.most_common(1)[0]
        return address if count * 2 > len(self.sentinels) else None

    def primary(self) -> DataNode:
        """The data node the Sentinels name as primary."""
        address = self.primary_address()
        if address is None:
            raise RuntimeError("no majority of Sentinels names a primary")
        return self.node_at(address)

    def node_at(self, address: tuple[str, int]) -> DataNode:
        """The data node at `address`."""
        for node in self.data:
            if node.address == address:
                return node
        raise KeyError(f"no data node at {address}")

    def wait_new_primary(self, old: DataNode, timeout: float = 30.0) -> tuple[DataNode, float]:
        """Wait until the Sentinels name a primary other than `old`; (it, seconds waited)."""
        started = time.monotonic()
        found: list[DataNode] = []

        def promoted() -> bool:
            address = self.primary_address()
            if address is None or address == old.address:
                return False
            node = self.node_at(address)
            if node.role() != "master":
                return False
            found.append(node)
            return True

        wait_for(promoted, timeout, f"no new primary replaced {old.name}", interval=0.05)
        return found[-1], time.monotonic() - started

    def wait_replica_of(self, node: DataNode, primary: DataNode, timeout: float = 30.0) -> None:
        """Wait until `node` replicates `primary` and its link is up (e.g. an old primary back)."""

        def following() -> bool:
            with node.client() as client:
                info = client.info("replication")
            return bool(
                info.get("role") == "slave"
                and info.get("master_port") == primary.port
                and info.get("master_link_status") == "up"
            )

        what = f"{node.name} did not become a replica of {primary.name}"
        wait_for(following, timeout, what, interval=0.1)

    def close(self) -> None:
        """Kill every node."""
        for node in [*self.sentinels, *self.data]:
            node.kill()

    def logs(self, tail: int = 2000) -> str:
        """The end of every node's log, for failure messages."""
        parts = []
        for node in [*self.data, *self.sentinels]:
            try:
                text = node.log_path.read_text(errors="replace")[-tail:]
            except OSError:
                text = "(no log)"
            parts.append(f"--- {node.name}\n{text}")
        return "\n".join(parts)


#: `make_topology(**kwargs)`: a started SentinelTopology, killed after the test.
MakeTopology = Callable[..., SentinelTopology]


@pytest.fixture
def make_topology(tmp_path: Path) -> Iterator[MakeTopology]:
    """Factory of started Sentinel topologies (arguments: SentinelTopology's), killed after."""
    if redis_server_binary() is None:
        pytest.skip("needs redis-server (set RELAY_REQUIRE_REDIS_SERVER=1 to make this fail)")
    started: list[SentinelTopology] = []

    def make(**kwargs: object) -> SentinelTopology:
        topology = SentinelTopology(tmp_path / f"topology-{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(topology)
        topology.start()
        return topology

    yield make
    for topology in started:
        topology.close()
