"""One batch of the group commit: what waits, how it is written, how its replies are read.

No I/O here: `write_batch` only buffers commands on a pipeline it is given, and the readers take
replies already received. The writer (relay.receiver.intake) and the spool's drain
(relay.receiver.spool.drain) both write their batches with `write_batch`.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rq import Queue

from relay.store.commit import Request, commit_arguments
from relay.store.queue import kick_commands
from relay.store.records import Event

__all__ = [
    "MAX_BATCH_BYTES",
    "ONE_NEW",
    "BatchReplies",
    "Committed",
    "Pending",
    "committed",
    "kick_owed",
    "kicks_waiting",
    "record_duplicates",
    "take_batch",
    "write_batch",
]

#: A batch also stops growing at this many body bytes, so one MULTI stays a few MiB at most
#: even when every request is near the 1 MiB limit (a single larger request still goes alone).
MAX_BATCH_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Committed:
    """What the commit says about each event of one request, in order."""

    duplicate_of: tuple[str | None, ...]  # the first event with the same dedupe value, or None

    @property
    def duplicate(self) -> bool:
        """Whether every event of the request repeats an earlier one."""
        return bool(self.duplicate_of) and None not in self.duplicate_of


#: The usual request's answer (one event, new): shared, not made per request.
ONE_NEW = Committed((None,))


def committed(duplicate_of: tuple[str | None, ...]) -> Committed:
    """`Committed(duplicate_of)`, the shared ONE_NEW for one new event."""
    return ONE_NEW if duplicate_of == ONE_NEW.duplicate_of else Committed(duplicate_of)


@dataclass
class Pending:
    """One request's events waiting for the next commit."""

    events: Sequence[Event]
    dedupe_window: int
    future: asyncio.Future[Committed]
    size: int = field(default=0)
    deadline: float = math.inf  # the loop's time when the request is answered 503 anyway


def take_batch(waiting: deque[Pending], max_batch: int) -> list[Pending]:
    """Take the next batch off `waiting` (not empty): up to `max_batch` events or
    MAX_BATCH_BYTES, whichever comes first, and always at least one request."""
    first = waiting.popleft()
    batch = [first]
    count, size = len(first.events), first.size
    while count < max_batch and size < MAX_BATCH_BYTES and waiting:
        item = waiting.popleft()
        batch.append(item)
        count += len(item.events)
        size += item.size
    return batch


@dataclass(frozen=True)
class BatchReplies:
    """Where the replies of one batch's commit are, in the pipeline's reply list."""

    script_at: int  # the commit script's reply: the queue's length, then the dedupe strings
    dedupe: list[tuple[int, int]]  # (request index, event index) of each, in reply order
    kicked: bool = False  # a kick was sent after the script (and went through)
    #: Something was routed but no kick went out: kicks were waiting at the last commit (or
    #: the kick failed after the script had committed the batch).
    kick_skipped: bool = False


def write_batch(
    pipe: Any,
    queue: Queue,
    batch: Sequence[Request],
    retention: float,
    now: float,
    *,
    kick_workers: bool = True,
) -> BatchReplies:
    """Buffer the commands of one batch on a sync MULTI pipeline.

    The events go in one call of the commit script (relay.store.commit), which also reads the
    length of RQ's queue; then, if asked and anything was routed, one RQ kick. (The receiver's
    own commit sends the same commands on its link: relay.receiver.committer.)
    """
    call = commit_arguments(batch, retention, now, queue.key)
    at = len(pipe.command_stack)
    pipe.execute_command(*call.command())  # the EVAL the link sends (whole, once a connection)
    kicked = call.routed and kick_workers
    if kicked:
        for args, options in kick_commands(queue):
            pipe.execute_command(*args, **options)
    return BatchReplies(at, call.dedupe, kicked=kicked, kick_skipped=call.routed and not kicked)


def kicks_waiting(replies_at: BatchReplies, replies: Sequence[Any]) -> int:
    """The kicks in the queue once the batch is in: the script's count plus the batch's own."""
    return int(replies[replies_at.script_at][0]) + replies_at.kicked


def kick_owed(replies_at: BatchReplies, kicks_waiting: int) -> bool:
    """Whether a committed batch still needs a kick: it sent none, and none waits.

    The skip was decided on the queue length of the previous commit; workers may have taken
    every kick since. The length read by this commit's own script is exact: a kick still
    waiting then will claim this batch's deliveries when it runs; with none waiting, they
    would wait for a worker's poll (half a second) unless a kick is sent now.
    """
    return replies_at.kick_skipped and kicks_waiting == 0


def record_duplicates(
    batch: Sequence[Request], replies_at: BatchReplies, replies: Sequence[Any]
) -> list[tuple[str | None, ...]]:
    """Read a committed batch's dedupe replies: per request, the earlier event each repeats.

    (The commit script has already counted the repeats in the sources' `duplicates` counters.)
    """
    if not replies_at.dedupe:  # no event of the batch has a dedupe key: nothing repeats
        return [(None,) * len(p.events) for p in batch]
    found: list[list[str | None]] = [[None] * len(p.events) for p in batch]
    firsts = replies[replies_at.script_at][1:]  # [0] is the queue's length
    for (r, e), previous in zip(replies_at.dedupe, firsts, strict=True):
        first = previous.decode() if isinstance(previous, bytes) else str(previous)
        if first and first != batch[r].events[e].id:  # "" or our own id: nothing was there
            found[r][e] = first
    return [tuple(f) for f in found]
