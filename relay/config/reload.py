"""Live reloads of routes.toml: on SIGHUP and when the file changes, only if it validates.

An invalid edit is logged with every problem and the routes in force stay as they were. The
swap is a single assignment, so a request or a delivery already under way keeps the table it
started with (events also carry the targets matched at intake).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import structlog

from relay.config.loading import load_routes
from relay.config.model import RouteTable
from relay.core.errors import ConfigError

log = structlog.get_logger("relay.reload")

#: How often the file is looked at; an edit is in force within this many seconds.
POLL_INTERVAL = 1.0


def _fingerprint(path: Path) -> tuple[int, int, str] | None:
    """(mtime, size, digest) of the file, or None when it cannot be read right now."""
    try:
        stat = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, digest


class RouteReloader:
    """Watches one routes.toml and hands each valid new version to `apply`."""

    def __init__(
        self,
        path: str | Path,
        apply: Callable[[RouteTable], None],
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.apply = apply
        self.env = env
        self._seen = _fingerprint(self.path)
        self.reloads = 0  # applied reloads, for tests and logs
        self.rejected = 0

    def poll(self) -> bool:
        """Reload when the file's content changed since last seen; True when routes changed."""
        current = _fingerprint(self.path)
        if current is None or (self._seen is not None and current[2] == self._seen[2]):
            if current is not None:
                self._seen = current
            return False
        self._seen = current
        return self.reload(reason="file changed")

    def reload(self, reason: str = "SIGHUP") -> bool:
        """Load and validate the file now; apply it only if it is valid."""
        env = os.environ if self.env is None else self.env
        try:
            table = load_routes(self.path, env)
        except ConfigError as exc:
            self.rejected += 1
            log.error(
                "routes_reload_rejected",
                reason=reason,
                path=str(self.path),
                problems=[str(p) for p in exc.problems],
                effect="the routes in force are unchanged",
            )
            return False
        self._seen = _fingerprint(self.path)
        self.apply(table)
        self.reloads += 1
        log.info(
            "routes_reloaded",
            reason=reason,
            path=str(self.path),
            sources=len(table.sources),
            targets=len(table.targets),
            routes=len(table.routes),
        )
        return True


def route_updates(path: str | Path) -> Callable[[], RouteTable | None]:
    """A poll function for a process supervisor: the routes newly reloaded, else None."""
    latest: list[RouteTable] = []
    reloader = RouteReloader(path, latest.append)

    def poll() -> RouteTable | None:
        reloader.poll()
        return latest.pop() if latest else None

    return poll
