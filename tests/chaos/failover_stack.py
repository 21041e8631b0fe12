"""The Sentinel chaos stack: a primary, a replica, three Sentinels, two `relay serve`, two
`relay worker`, each in a network namespace of its own where the machine allows it.

`FailoverStack` starts everything and offers the faults the scenarios inject: SIGKILL the
primary (and bring it back as a replica of the new one), cut the primary and one receiver off
from everyone else (a partition; namespaces only), kill a Sentinel or the replica, restart the
whole Redis side. Each fault returns when the topology is whole again (bounded waits), noting
when it began and when the Sentinels named a new primary.
"""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from relay.config.loading import load_routes
from tests.support import netns
from tests.support.processes import RelayProcess, relay_env
from tests.support.redis_server import free_port
from tests.support.sentinel import LOOPBACK, DataNode, Place, SentinelTopology, Timings

RECEIVERS = ("receiver-a", "receiver-b")
WORKERS = ("worker-a", "worker-b")
SENTINELS = ("sentinel-0", "sentinel-1", "sentinel-2")


def hosts(replicas: int) -> tuple[str, ...]:
    """Every host (namespace) of a stack with `replicas` replicas."""
    data = tuple(f"redis-{i}" for i in range(replicas + 1))
    return (*data, *SENTINELS, *RECEIVERS, *WORKERS)


RECEIVER_PORT = 8400  # every receiver has a namespace (an address) of its own
INTAKE_TIMEOUT = "3s"

ROUTES = """
[sources.retrying]
kind = "header"

[sources.once]
kind = "header"
spool = true

[targets.crm]
url = "{url}"
timeout = "2s"
retry = {{ attempts = 40, first = "250ms", max = "1s" }}

[[routes]]
source = "retrying"
targets = ["crm"]

[[routes]]
source = "once"
targets = ["crm"]
"""


@dataclass
class FaultTimes:
    """When a fault began and when the Sentinels named a new primary (monotonic seconds)."""

    what: str
    began: float
    elected: float | None = None
    whole: float | None = None  # the topology complete again


@dataclass
class FailoverStack:
    """Every process of a run; `start()` then the faults; `close()` kills everything."""

    workdir: Path
    ack_replicas: int | str  # RELAY_ACK_REPLICAS: a count or "all"
    timings: Timings
    use_netns: bool = True
    replicas: int = 1
    network: netns.Network | None = None
    topology: SentinelTopology = field(init=False)
    receivers: dict[str, RelayProcess] = field(default_factory=dict)
    workers: dict[str, RelayProcess] = field(default_factory=dict)
    faults: list[FaultTimes] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)

    def place(self, name: str) -> Place:
        return self.network.place(name) if self.network is not None else LOOPBACK

    @property
    def gateway(self) -> str:
        """The address the targets bind and the provider posts from."""
        return self.network.gateway if self.network is not None else "127.0.0.1"

    def network_up(self) -> None:
        """One namespace per host (when `use_netns`); call first: the targets bind its gateway."""
        if self.use_netns and self.network is None:
            self.network = netns.Network(hosts(self.replicas)).up()

    def start(self, target_url: str) -> None:
        """Start the Redis side, then the receivers and workers; return once receivers are ready."""
        self.network_up()
        self.topology = SentinelTopology(
            self.workdir / "redis", replicas=self.replicas, timings=self.timings, places=self.place
        )
        self.topology.start()
        routes = self.workdir / "routes.toml"
        routes.write_text(ROUTES.format(url=target_url))
        load_routes(routes, {})
        for name in RECEIVERS:
            place = self.place(name)
            # A namespace has its ports to itself; on loopback, take free ones.
            port = self.ports[name] = RECEIVER_PORT if self.network else free_port()
            spool = str(self.workdir / name / "spool")
            env = self._env(routes, HOST=place.host, PORT=str(port), RELAY_SPOOL_DIR=spool)
            self.receivers[name] = RelayProcess(
                ["serve"], env, self.workdir, name, prefix=place.command([])
            )
        for name in WORKERS:
            env = self._env(routes)
            args = ["worker", "--maintenance-interval", "2"]
            self.workers[name] = RelayProcess(
                args, env, self.workdir, name, prefix=self.place(name).command([])
            )
        for name in RECEIVERS:
            self._wait_ready(name)

    def _env(self, routes: Path, **extra: str) -> dict[str, str]:
        return relay_env(
            self.topology.url,
            routes,
            RELAY_ACK_REPLICAS=str(self.ack_replicas),
            RELAY_INTAKE_TIMEOUT=INTAKE_TIMEOUT,
            **extra,
        )

    def hook_url(self, receiver: str, source: str) -> str:
        return f"{self.base(receiver)}/hooks/{source}"

    def base(self, receiver: str) -> str:
        return f"http://{self.place(receiver).host}:{self.ports[receiver]}"

    def _wait_ready(self, name: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            url = f"{self.base(name)}/readyz"
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(url, timeout=1) as answer,  # noqa: S310
            ):
                if answer.status == 200:
                    return
            if not self.receivers[name].alive():
                break
            time.sleep(0.1)
        raise RuntimeError(f"{name} not ready:\n{self.receivers[name].output()[-3000:]}")

    # --- faults ---------------------------------------------------------------------------

    def kill_primary(self) -> FaultTimes:
        """SIGKILL the primary; once a new one is elected, start the old one as its replica."""
        old = self.topology.primary()
        times = self._begin(f"SIGKILL primary {old.name}")
        old.kill()
        new, _ = self.topology.wait_new_primary(old)
        times.elected = time.monotonic()
        self._rejoin(old, new)
        times.whole = time.monotonic()
        return times

    def partition_primary(self, hold: float) -> FaultTimes:
        """Cut the primary and receiver-a off from every other host for `hold` s after the
        election, then heal; Sentinel itself demotes the old primary when it sees it again."""
        assert self.network is not None, "a partition needs network namespaces"
        old = self.topology.primary()
        times = self._begin(f"partition: {old.name} + receiver-a cut off")
        self.network.partition([old.name, "receiver-a"])
        new, _ = self.topology.wait_new_primary(old)
        times.elected = time.monotonic()
        time.sleep(hold)
        self.network.heal()
        self.topology.wait_replica_of(old, new, timeout=60)
        times.whole = time.monotonic()
        return times

    def kill_sentinel(self, down: float) -> FaultTimes:
        sentinel = self.topology.sentinels[0]
        times = self._begin(f"SIGKILL {sentinel.name}")
        sentinel.kill()
        time.sleep(down)
        sentinel.start()
        self.topology.wait_settled()
        times.whole = time.monotonic()
        return times

    def kill_replica(self, down: float) -> FaultTimes:
        primary = self.topology.primary()
        replica = next(n for n in self.topology.data if n is not primary)  # the first of them
        times = self._begin(f"SIGKILL replica {replica.name}")
        replica.kill()
        time.sleep(down)
        self._rejoin(replica, primary)
        times.whole = time.monotonic()
        return times

    def restart_redis_side(self, down: float) -> FaultTimes:
        """Stop every Sentinel and data node (SIGTERM: AOF flushed), start them all again."""
        primary = self.topology.primary()
        times = self._begin("whole Redis side restarted (SIGTERM, then started)")
        for node in [*self.topology.sentinels, *self.topology.data]:
            node.stop()
        time.sleep(down)
        primary.replicaof = None
        primary.start()
        for node in self.topology.data:
            if node is not primary:
                node.replicaof = primary.address
                node.start()
        for sentinel in self.topology.sentinels:
            sentinel.start()
        self.topology.wait_settled()
        times.whole = time.monotonic()
        return times

    def _rejoin(self, node: DataNode, primary: DataNode) -> None:
        """Start `node` as a replica of `primary`, as a deployment's start script does after
        asking the Sentinels who is primary; wait until its sync is done."""
        node.replicaof = primary.address
        node.start()
        self.topology.wait_replica_of(node, primary)
        self.topology.wait_settled()

    def _begin(self, what: str) -> FaultTimes:
        times = FaultTimes(what, time.monotonic())
        self.faults.append(times)
        return times

    # --- the end --------------------------------------------------------------------------

    def processes_alive(self) -> dict[str, bool]:
        """Whether each relay process still runs (none may have been restarted)."""
        every = {**self.receivers, **self.workers}
        return {name: proc.alive() for name, proc in every.items()}

    def outputs(self, tail: int = 3000) -> str:
        every = {**self.receivers, **self.workers}
        return "\n".join(f"--- {n}\n{p.output()[-tail:]}" for n, p in every.items())

    def close(self) -> None:
        for proc in [*self.receivers.values(), *self.workers.values()]:
            proc.cleanup()
        with contextlib.suppress(AttributeError):
            self.topology.close()
        if self.network is not None:
            self.network.down()


@contextlib.contextmanager
def failover_stack(
    workdir: Path, ack_replicas: int | str, timings: Timings, use_netns: bool, replicas: int = 1
) -> Iterator[FailoverStack]:
    stack = FailoverStack(workdir, ack_replicas, timings, use_netns, replicas)
    try:
        yield stack
    finally:
        stack.close()
