"""The processes of a Sentinel topology: Redis data nodes and Sentinels, each a real
`redis-server` (Sentinels run as `redis-server CONF --sentinel`, the binary `redis-sentinel`
is) on a free port with its data and config in a directory of its own, placed on loopback or in
a network namespace (`Place`), and with `tls` (tests/support/tls.py) on a TLS port only, TLS on
every link. tests/support/sentinel.py puts them together.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.redis_server import free_port, redis_server_binary
from tests.support.tls import TlsFiles

#: The service name the Sentinels monitor (SERVICE in redis+sentinel://.../SERVICE/DB).
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


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
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

    def __init__(
        self,
        name: str,
        directory: Path,
        place: Place,
        port: int | None = None,
        *,
        tls: TlsFiles | None = None,
    ) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server is not on PATH")
        self.binary = binary
        self.name = name
        self.directory = directory
        self.place = place
        self.port = port if port is not None else free_port()
        self.tls = tls
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

    def listening(self) -> list[tuple[str, str]]:
        """The settings (name, value) of where the node listens: `port`, or with TLS `port 0`
        (no plain port at all) and `tls-port` with the certificates."""
        if self.tls is None:
            return [("port", str(self.port))]
        return [("port", "0"), ("tls-port", str(self.port)), *self.tls.server_settings()]

    def start(self, timeout: float = 10.0) -> None:
        """Start the process and wait until it answers PING."""
        self.process = subprocess.Popen(
            self.place.command([self.binary, *self.arguments()]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        with self.client(timeout=0.5) as client:
            wait_for(client.ping, timeout, f"{self.name} did not answer PING (see {self.log_path})")

    def client(self, timeout: float = 2.0) -> redis.Redis:
        """A direct client of this node (TLS when it has it), with short bounds and no
        re-sends."""
        host, port = self.address
        return redis.Redis(
            host,
            port,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            **(self.tls.client_options() if self.tls else {}),
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash (or a lost machine) would."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: a clean shutdown."""
        self._signal(signal.SIGTERM)

    def freeze(self) -> None:
        """SIGSTOP: the process stops answering, its connections stay open (a hung host, or
        one cut off by a partition that drops packets without closing anything)."""
        self._pause(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: a frozen process goes on where it stopped."""
        self._pause(signal.SIGCONT)

    def _pause(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

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
        tls: TlsFiles | None = None,
    ) -> None:
        super().__init__(name, directory, place, tls=tls)
        self.replicaof = replicaof
        self.settings = list(settings)

    def arguments(self) -> list[str]:
        args = [
            "--bind", self.place.host,
            "--protected-mode", "no",  # no password, and peers on other hosts (namespaces)
            *(arg for key, value in self.listening() for arg in (f"--{key}", value)),
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

    def __init__(
        self,
        name: str,
        directory: Path,
        place: Place,
        monitor: str,
        tls: TlsFiles | None = None,
    ) -> None:
        super().__init__(name, directory, place, tls=tls)
        self.config = directory / "sentinel.conf"
        # With TLS, `tls-replication yes` is what makes Sentinel speak TLS to the data nodes and
        # to the other Sentinels, not only to its own clients.
        listening = "".join(f"{key} {value}\n" for key, value in self.listening())
        self.config.write_text(
            f"bind {place.host}\nprotected-mode no\n{listening}dir {directory}\n"
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
