"""The glue between relay and RQ: one queue, an orjson serializer, and the job contract.

Deliveries live in per-target "due" sets (relay.store.keys.due_key); RQ jobs are the kicks that make
a worker take what is due:

    worker.jobs.deliver_due()    claim every delivery due now (fresh events, retries, replays,
                                 and in-flight attempts whose lease ended), deliver them, and
                                 loop while more is due

The receiver enqueues one kick per committed batch unless kicks are already waiting; workers
enqueue one when they find due work and an empty queue. A lost kick therefore delays a delivery
by at most a poll interval and never loses it. Jobs are named by dotted path so `relay/` never
imports `worker/`.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis import Redis
from rq import Queue

from relay.core import constants

DELIVER_DUE = "worker.jobs.deliver_due"

#: A kick runs for a few seconds at most (worker.jobs.LOOP_BUDGET plus the inline wait).
JOB_TIMEOUT = 60

#: A kick that failed (its worker was killed) is kept this long in RQ's failed registry, for
#: inspection only: the deliveries it held become due again when their leases end.
KICK_FAILURE_TTL = 3600

#: The receiver skips the kick of a batch when at least this many kicks are already waiting:
#: two, so that a kick is still queued behind the one that may be finishing right now.
KICKS_ENOUGH = 2


class OrjsonSerializer:
    """RQ serializer: JSON via orjson, never pickle, for job arguments."""

    @staticmethod
    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    @staticmethod
    def loads(data: bytes) -> Any:
        return orjson.loads(data)


def make_queue(connection: Redis, name: str = constants.QUEUE_NAME) -> Queue:
    """The relay queue on a connection, with relay's serializer."""
    return Queue(name, connection=connection, serializer=OrjsonSerializer)


def kick_job() -> Any:
    """Enqueue data (for `enqueue_many`) of one kick."""
    return Queue.prepare_data(
        DELIVER_DUE,
        timeout=JOB_TIMEOUT,
        result_ttl=0,  # results are worthless to us and cost ~7 KB each in Redis
        failure_ttl=KICK_FAILURE_TTL,
        description="deliver what is due",
    )


def kick(queue: Queue, pipeline: Any = None) -> None:
    """Enqueue one kick, on `pipeline` when given (it then runs with the pipeline)."""
    queue.enqueue_many([kick_job()], pipeline=pipeline)


def kick_commands(queue: Queue) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The Redis commands of one kick, recorded but not sent: (args, options) each.

    RQ writes only to a sync redis-py pipeline; the receiver commits on a redis.asyncio one, so
    the kick is recorded on a sync pipeline that is never executed and replayed there. RQ asks
    the server's version once per Queue (a real INFO on `queue.connection`): callers on an
    event loop make sure `queue.redis_server_version` is known first.
    """
    recorder = queue.connection.pipeline(transaction=False)
    try:
        kick(queue, pipeline=recorder)
        return [(tuple(args), dict(options)) for args, options in recorder.command_stack]
    finally:
        recorder.reset()
