"""Giving up a commit stalled on a primary that the Sentinels have replaced.

A primary cut off by a network partition answers nothing. A commit sent to it waits until the
kernel gives its connection up (TCP_USER_TIMEOUT, relay.store.failover) or its requests reach
their deadline, and only the next batch asks the Sentinels for the primary again; every request
that arrives meanwhile waits behind the stalled one. The Sentinels often elect a new primary
sooner than that (about 2.5 s with a 1 s down-after). So a commit that has not answered within
STALL_AFTER asks the Sentinels every POLL_EVERY which primary they name. Once they name another
than the server the commit waits on, it is given up (cancelled, which drops its connection) and
fails as `PrimaryReplaced`: its requests get 503 (or are spooled), since the commit may have
landed on the old primary, and the next batch goes to the new one at once.

A commit that is only slow (a WAIT for a slow replica, a primary busy with a slow command) keeps
its primary, which the Sentinels still name: it is never given up. Without Sentinels
(`redis://`) there is nobody to ask and the watch stays out of the way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import redis
import structlog

__all__ = ["POLL_EVERY", "STALL_AFTER", "PrimaryReplaced", "StallWatch", "replaced"]

log = structlog.get_logger("relay.intake")

T = TypeVar("T")
Address = tuple[str, int]

#: Seconds a commit may take before the Sentinels are asked: far above a healthy commit (a
#: millisecond or two), well below an election.
STALL_AFTER = 0.3
#: Seconds between questions while it stays stalled: how late, at most, a new primary is seen.
POLL_EVERY = 0.2


class PrimaryReplaced(redis.ConnectionError):
    """The Sentinels named a new primary while a commit waited on the old one (see module)."""


def replaced(waiting_on: Address | None, named: Address | None) -> bool:
    """Whether the Sentinels name a primary other than the server a commit waits on (pure).

    Unknown on either side (no connection open yet, no Sentinel answering) is not a change.
    """
    return waiting_on is not None and named is not None and named != waiting_on


class StallWatch:
    """Runs commits, giving up one that stalls on a replaced primary (see module)."""

    def __init__(
        self,
        ask: Callable[[], Awaitable[Address | None]],
        waiting_on: Callable[[], Address | None],
        *,
        stall_after: float = STALL_AFTER,
        poll_every: float = POLL_EVERY,
    ) -> None:
        """`ask` the Sentinels which primary they name; `waiting_on` is the commit's server."""
        self._ask = ask
        self._waiting_on = waiting_on
        self._stall_after = stall_after
        self._poll_every = poll_every

    async def run(self, commit: Coroutine[Any, Any, T]) -> T:
        """`commit`'s result, or PrimaryReplaced once the Sentinels name another primary."""
        task = asyncio.ensure_future(commit)
        try:
            done, _ = await asyncio.wait({task}, timeout=self._stall_after)
            while not done:
                question = asyncio.ensure_future(self._ask())
                either: set[asyncio.Task[Any]] = {task, question}
                done, _ = await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if task in done:
                    question.cancel()
                    break
                waiting_on, named = self._waiting_on(), question.result()
                if replaced(waiting_on, named):
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    log.warning(
                        "intake_commit_given_up",
                        waiting_on=_show(waiting_on),
                        primary=_show(named),
                        why="the Sentinels named a new primary while the commit waited",
                    )
                    raise PrimaryReplaced(
                        f"the Sentinels named {_show(named)} the primary while the commit "
                        f"waited on {_show(waiting_on)}"
                    )
                done, _ = await asyncio.wait({task}, timeout=self._poll_every)
            return task.result()
        except asyncio.CancelledError:
            task.cancel()  # the writer itself is stopping: nothing may go on behind it
            raise


def _show(address: Address | None) -> str:
    return "?" if address is None else f"{address[0]}:{address[1]}"
