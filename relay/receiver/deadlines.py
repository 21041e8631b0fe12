"""Deadlines for many waiting futures with one event-loop timer between them.

The receiver bounds each request's wait for its group commit (`intake_timeout`). One `call_later`
per request (its TimerHandle, its place in the loop's timer heap, its cancel, and the loop's
clean-up of cancelled timers) is a cost on every request. Here each waiting future is one tuple on
a heap ordered by deadline, and a single loop timer is armed for the earliest one. The writer
answers requests in arrival order, so answered ones leave from the front (`forget_answered`); a
future that is answered or cancelled anywhere else is skipped when it reaches the front.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any

#: A timer may run up to the loop's clock resolution early; a deadline this close to "now" has
#: passed (so the timer is not re-armed for the same instant, again and again).
EARLY = 0.001

Expire = Callable[["asyncio.Future[Any]", float], None]


class Deadlines:
    """Call `expire(future, max_wait)` for each future not done `max_wait` seconds after `add`."""

    def __init__(self, expire: Expire) -> None:
        self._expire = expire
        self._heap: list[tuple[float, int, asyncio.Future[Any], float]] = []
        self._order = itertools.count()  # ties on the deadline: futures do not compare
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def __len__(self) -> int:
        """Futures still tracked (answered ones not yet at the front count too)."""
        return len(self._heap)

    def add(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        max_wait: float,
        deadline: float | None = None,
    ) -> None:
        """Track `future`: expire it in `max_wait` seconds unless it is done by then (at the
        loop's time `deadline`, when the caller has it: the loop's time read once)."""
        if deadline is None:
            deadline = loop.time() + max_wait
        heapq.heappush(self._heap, (deadline, next(self._order), future, max_wait))
        if deadline < self._timer_at:  # usually not: the same wait for every request
            self._arm(loop, deadline)

    def forget_answered(self) -> None:
        """Drop the done futures at the front (call after answering a batch)."""
        heap = self._heap
        while heap and heap[0][2].done():
            heapq.heappop(heap)

    def close(self) -> None:
        """Stop the timer and forget every future (they are left as they are)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, math.inf
        self._heap.clear()

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = loop.call_at(at, self._fire, loop), at

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._timer_at = None, math.inf
        now = loop.time() + EARLY
        heap = self._heap
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            _, _, future, max_wait = heapq.heappop(heap)
            if not future.done():
                self._expire(future, max_wait)
        if heap:
            self._arm(loop, heap[0][0])
