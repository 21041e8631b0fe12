"""`relay worker --processes N`: N worker processes under one supervisor (relay.core.supervisor).

The supervisor forwards SIGTERM, SIGINT and SIGHUP to its children and restarts a crashed one
(not in burst mode); each child is one worker process (worker.process.run_worker).
"""

from __future__ import annotations

import socket

import structlog

from relay.config.model import RouteTable
from relay.config.reload import route_updates
from relay.config.settings import Settings
from relay.core.supervisor import supervise
from worker.exporter import process_port
from worker.process import Operations, run_worker
from worker.rq_worker import DEFAULT_MAINTENANCE_INTERVAL

__all__ = ["busy_ports", "run_processes"]

log = structlog.get_logger("relay.worker")


def busy_ports(host: str, base: int, count: int) -> list[int]:
    """Ports among base .. base + count - 1 that cannot be bound on `host` right now."""
    busy = []
    for port in (process_port(base, i) for i in range(count)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                busy.append(port)
    return busy


def run_processes(
    settings: Settings,
    routes: RouteTable,
    processes: int,
    *,
    burst: bool = False,
    maintenance_interval: int = DEFAULT_MAINTENANCE_INTERVAL,
    ops: Operations | None = None,
) -> int:
    """Run N worker processes; forward SIGTERM, SIGINT, SIGHUP; restart crashed ones (not burst)."""
    ops = ops if ops is not None else Operations()
    if ops.metrics_port is not None:
        busy = busy_ports(ops.metrics_host, ops.metrics_port, processes)
        if busy:
            # Checked here: a child failing to bind would be restarted in a loop.
            log.error("worker metrics ports in use", host=ops.metrics_host, ports=busy)
            return 1

    def child(index: int, latest: RouteTable) -> int:  # pragma: no cover - a child process
        return run_worker(
            settings,
            latest,
            burst=burst,
            maintenance_interval=maintenance_interval,
            ops=ops,
            index=index,
        )

    ports = (
        [process_port(ops.metrics_port, i) for i in range(processes)]
        if ops.metrics_port is not None
        else None
    )
    stopped = supervise(
        child,
        processes,
        routes,
        name="worker",
        restart=not burst,
        updates=route_updates(routes.path) if ops.reload_routes else None,
        started={"metrics_ports": ports},
    )
    return 0 if stopped.clean else 1
