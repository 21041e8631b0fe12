"""Network namespaces joined by a bridge, for fault tests that need a real network partition.

Each "host" is a namespace (`ip netns`) with one veth interface on a private bridge in this
namespace, with its own address in a /24 no other interface uses; the test process reaches
every host through the bridge (as a load balancer and the targets' network would). A partition
is a set of blackhole routes: a host of one side can no longer send to any host of the other
(the kernel drops its packets), while both sides still reach the bridge's own address.

Needs root (CAP_NET_ADMIN) and iproute2. `available()` says whether this machine allows it and,
if not, why; the tests then run on loopback and skip what only a partition can show.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tests.support.sentinel import Place

#: Networks made by this process so far: names and subnets of each are their own.
_NETWORKS = itertools.count()


def _ip(
    *args: str, netns: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    command = ["ip", *(["netns", "exec", netns, "ip"] if netns else []), *args]
    return subprocess.run(command, capture_output=True, text=True, check=check, timeout=10)


def available() -> str | None:
    """None when namespaces can be made here; otherwise the reason they cannot."""
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN); the tests run as another user"
    probe = f"rlprobe{os.getpid() % 100000}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Network:
    """A bridge and one namespace per host name; `place(name)` is where a process runs."""

    hosts: Sequence[str]
    tag: str = field(default_factory=lambda: f"rl{os.getpid() % 10000}n{next(_NETWORKS)}")
    subnet: str = ""
    _places: dict[str, Place] = field(default_factory=dict)
    _cut: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.subnet:
            # One /24 per network, inside 10.240.0.0/12, away from common LAN ranges.
            n = (os.getpid() * 7 + int(self.tag.rsplit("n", 1)[1])) % 4096
            self.subnet = f"10.{240 + n // 256}.{n % 256}.0/24"
        net = ipaddress.ip_network(self.subnet)
        self.gateway = str(net.network_address + 1)
        self.bridge = f"{self.tag}br"
        for i, name in enumerate(self.hosts):
            self._places[name] = Place(str(net.network_address + 10 + i), f"{self.tag}-{name}")

    def place(self, name: str) -> Place:
        """Where host `name` runs: its address and namespace."""
        return self._places[name]

    def up(self) -> Network:
        """Create the bridge and every namespace with its address (undone by `down`)."""
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, name in enumerate(self.hosts):
                self._host(i, self._places[name])
        except subprocess.CalledProcessError as exc:
            self.down()
            raise RuntimeError(f"network setup failed: {exc.stderr}") from exc
        return self

    def _host(self, index: int, place: Place) -> None:
        assert place.netns is not None
        outer, inner = f"{self.tag}v{index}a", f"{self.tag}v{index}b"
        _ip("netns", "add", place.netns)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", outer, "master", self.bridge, "up")
        _ip("link", "set", inner, "netns", place.netns)
        _ip("addr", "add", f"{place.host}/24", "dev", inner, netns=place.netns)
        _ip("link", "set", inner, "up", netns=place.netns)
        _ip("link", "set", "lo", "up", netns=place.netns)

    def partition(self, side: Iterable[str]) -> None:
        """Cut the hosts of `side` off from every other host (not from the bridge's address)."""
        inside = set(side)
        outside = [h for h in self.hosts if h not in inside]
        for a in inside:
            for b in outside:
                self._blackhole(a, b)
                self._blackhole(b, a)

    def heal(self) -> None:
        """Remove every route `partition` added."""
        for src, dst in self._cut:
            route = f"{self._places[dst].host}/32"
            _ip("route", "del", "blackhole", route, netns=self._places[src].netns, check=False)
        self._cut.clear()

    def _blackhole(self, src: str, dst: str) -> None:
        route = f"{self._places[dst].host}/32"
        _ip("route", "add", "blackhole", route, netns=self._places[src].netns)
        self._cut.append((src, dst))

    def down(self) -> None:
        """Delete every namespace and the bridge (the processes in them must be gone)."""
        for place in self._places.values():
            _ip("netns", "del", str(place.netns), check=False)
        _ip("link", "del", self.bridge, check=False)
