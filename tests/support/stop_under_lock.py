"""Ctrl-C landing while the main thread is inside an embedded (fakeredis) command.

Run as `python -m tests.support.stop_under_lock busy|idle`: it builds `relay dev`'s embedded
worker on an in-memory server, holds the server's lock on the main thread (as every fakeredis
command and Lua script does while it runs), and delivers SIGINT there. The signal handler runs on
that same thread; if it makes a Redis call it waits for the lock its own thread holds, forever.
Prints `stop-recorded <flag>` and exits 0 when the handler came back; a test runs this in a
subprocess with a timeout, so a deadlock fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import signal
import sys

import fakeredis
from rq.exceptions import StopRequested
from rq.worker import WorkerStatus

from relay.cli.dev.embedded import thread_scheduler_worker
from relay.store.queue import OrjsonSerializer, make_queue
from worker.rq_worker import RelayWorker


def main(state: str) -> int:
    """Deliver SIGINT under the server lock with the worker `state` ("busy" or "idle")."""
    server = fakeredis.FakeServer()
    connection = fakeredis.FakeRedis(server=server)
    worker = thread_scheduler_worker(RelayWorker)(
        [make_queue(connection)], connection=connection, serializer=OrjsonSerializer
    )
    worker.register_birth()
    worker.set_state(WorkerStatus.BUSY if state == "busy" else WorkerStatus.IDLE)
    worker._install_signal_handlers()
    try:
        with server.lock:  # what fakeredis holds while a command or a script runs
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs on this thread, lock held
            signal.pthread_sigmask(signal.SIG_BLOCK, [])  # a call: the handler runs by now
    except StopRequested:
        print("stop-raised", flush=True)  # RQ's idle path: fine, nothing waits for the lock
        return 0
    print(f"stop-recorded {worker._stop_requested}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "busy"))
