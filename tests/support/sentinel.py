"""A real Redis Sentinel topology for tests: a primary, replicas and Sentinels as processes.

Every node is a `redis-server` (Sentinels run as `redis-server CONF --sentinel`, the same
binary as `redis-sentinel`) on a free port, with its data and config in a temp directory and
short Sentinel timings so a failover takes a few seconds, not half a minute. Each node has a
`Place`: 127.0.0.1 in this network namespace, or an address inside a namespace of its own
(tests/support/netns.py) for the partition tests. Every wait here is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.redis_server import free_port, redis_server_binary

#: Sentinel timings of the tests: a primary is subjectively down after DOWN_AFTER_MS without an
#: answer; FAILOVER_TIMEOUT_MS bounds one failover attempt (and the wait before another).
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
SERVICE = "relay"


@dataclass(frozen=True)
class Place:
    """Where a process runs: its address, and the network namespace it runs in (if any)."""

    host: str = "127.0.0.1"
    netns: str | None = None

    def command(self, args: Sequence[str]) -> list[str]:
        """`args`, run inside the namespace when there is one."""
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return [*prefix, *args]


LOOPBACK = Place()


def _wait(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(interval)
    raise TimeoutError(f"{what} within {timeout:g} s")


class Node:
    """One redis-server process (data node or Sentinel), restartable on the same port and dir."""

    def __init__(self, name: str, directory: Path, place: Place, port: int | None = None) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server is not on PATH")
        self.binary = binary
        self.name = name
        self.directory = directory
        self.place = place
        self.port = port if port is not None else free_port()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def address(self) -> tuple[str, int]:
        return (self.place.host, self.port)

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.name}.log"

    def arguments(self) -> list[str]:
        """The redis-server arguments (subclasses)."""
        raise NotImplementedError

    def start(self, timeout: float = 10.0) -> None:
        """Start the process and wait until it answers PING."""
        self.process = subprocess.Popen(
            self.place.command([self.binary, *self.arguments()]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        with self.client(timeout=0.5) as client:
            _wait(client.ping, timeout, f"{self.name} did not answer PING (see {self.log_path})")

    def client(self, timeout: float = 2.0) -> redis.Redis:
        """A plain client of this node, with short bounds and no re-sends."""
        host, port = self.address
        return redis.Redis(
            host,
            port,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash (or a lost machine) would."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: a clean shutdown."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            # The process may be `ip netns exec`'s child: signal the whole group.
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=10)
        self.process = None


class DataNode(Node):
    """A Redis server of the replication group (a primary or a replica)."""

    def __init__(
        self,
        name: str,
        directory: Path,
        place: Place,
        *,
        replicaof: tuple[str, int] | None,
        settings: Sequence[str],
    ) -> None:
        super().__init__(name, directory, place)
        self.replicaof = replicaof
        self.settings = list(settings)

    def arguments(self) -> list[str]:
        args = [
            "--bind", self.place.host,
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--logfile", str(self.log_path),
            "--save", "",
            "--maxmemory-policy", "noeviction",
            *self.settings,
        ]  # fmt: skip
        if self.replicaof is not None:
            args += ["--replicaof", self.replicaof[0], str(self.replicaof[1])]
        return args

    def role(self) -> str:
        """master or slave, as the node itself says."""
        with self.client() as client:
            return str(client.info("replication")["role"])


class SentinelNode(Node):
    """A Sentinel watching the service (its config file is its own: Sentinel rewrites it)."""

    def __init__(self, name: str, directory: Path, place: Place, monitor: str) -> None:
        super().__init__(name, directory, place)
        self.config = directory / "sentinel.conf"
        self.config.write_text(
            f"bind {place.host}\nport {self.port}\ndir {directory}\n"
            f"logfile {self.log_path}\n{monitor}"
        )

    def arguments(self) -> list[str]:
        return [str(self.config), "--sentinel"]

    def primary(self) -> tuple[str, int] | None:
        """The primary this Sentinel names now (None while it names none)."""
        with self.client(timeout=1.0) as client:
            found = client.sentinel_get_master_addr_by_name(SERVICE)
        if not found:
            return None
        host = found[0].decode() if isinstance(found[0], bytes) else str(found[0])
        return host, int(found[1])

    def state(self) -> dict[str, object]:
        """This Sentinel's view of the service (SENTINEL MASTER)."""
        with self.client(timeout=1.0) as client:
            return dict(client.sentinel_master(SERVICE))


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
    ) -> None:
        self.directory = directory
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
            "redis-0", directory / "redis-0", place("redis-0"), replicaof=None, settings=settings
        )
        self.data = [primary] + [
            DataNode(
                f"redis-{i}",
                directory / f"redis-{i}",
                place(f"redis-{i}"),
                replicaof=primary.address,
                settings=settings,
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
                f"sentinel-{i}", directory / f"sentinel-{i}", place(f"sentinel-{i}"), monitor
            )
            for i in range(sentinels)
        ]

    @property
    def url(self) -> str:
        """`redis+sentinel://` URL of the topology, database 0."""
        hosts = ",".join(f"{s.place.host}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

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

        _wait(settled, timeout, "the Sentinel topology did not settle", interval=0.2)

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

        _wait(promoted, timeout, f"no new primary replaced {old.name}", interval=0.05)
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
        _wait(following, timeout, what, interval=0.1)

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
