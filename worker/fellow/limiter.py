"""An adaptive bound on one Fellow client's requests in flight: AIMD, as TCP's congestion window.

The configured `concurrency` is the ceiling, and the start. A 429 halves the limit (never below
1), once per window: the window opens at that 429 and lasts its Retry-After (at least
MIN_WINDOW, at most MAX_WINDOW), because the requests in flight when Fellow started refusing
come back 429 together and are one signal, not eight. After the window, a run of `limit`
successes in a row raises the limit by one, up to the ceiling: back from 1 to 8 in
1 + 2 + ... + 7 = 28 successes, a fraction of a second in a pass of 100,000 requests.

`Aimd` is the arithmetic (no I/O; the time is given); `Limiter` applies it to asyncio tasks:
a request waits while `in_flight >= limit`, first come first served. A limit lowered below
`in_flight` only holds new starts until enough have finished, so nothing ever waits for a slot
that will not be freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

__all__ = ["MAX_WINDOW", "MIN_WINDOW", "Aimd", "Cut", "Limiter"]

#: The shortest window after a cut (seconds): a Retry-After of 0 must not let the 429s of one
#: burst, answered microseconds apart, halve the limit once each.
MIN_WINDOW = 1.0
#: The longest window (seconds): Fellow's Retry-After is waited out only up to 60 s anyway.
MAX_WINDOW = 60.0


@dataclass(frozen=True)
class Cut:
    """A decrease of the limit, for the log."""

    before: int
    after: int


class Aimd:
    """The limit's arithmetic: halved on a 429 once per window, +1 after `limit` successes."""

    def __init__(self, ceiling: int) -> None:
        if ceiling < 1:
            raise ValueError(f"the ceiling must be at least 1, not {ceiling}")
        self.ceiling = ceiling
        self.limit = ceiling
        self.streak = 0  # successes in a row since the last change (or 429)
        self.quiet_until = -math.inf  # the end of the last cut's window

    def throttled(self, now: float, retry_after: float) -> Cut | None:
        """A 429 at `now`: the cut it makes, or None (inside the last cut's window, or at 1)."""
        self.streak = 0
        if now < self.quiet_until:
            return None
        self.quiet_until = now + min(max(retry_after, MIN_WINDOW), MAX_WINDOW)
        before, self.limit = self.limit, max(1, self.limit // 2)
        return Cut(before, self.limit) if self.limit < before else None

    def succeeded(self, now: float) -> bool:
        """A success at `now`; whether it raised the limit. Inside a cut's window a success
        counts for nothing: it may have been asked before Fellow began refusing."""
        if now < self.quiet_until or self.limit >= self.ceiling:
            return False
        self.streak += 1
        if self.streak < self.limit:
            return False
        self.limit += 1
        self.streak = 0
        return True


class Limiter:
    """Slots for requests, `limit` at once (Aimd's), handed out in the order asked."""

    def __init__(self, ceiling: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.aimd = Aimd(ceiling)
        self.in_flight = 0
        self._clock = clock
        self._waiting: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        """The current limit (the ceiling until a 429)."""
        return self.aimd.limit

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for a request (waits while `in_flight >= limit`)."""
        await self._acquire()
        try:
            yield
        finally:
            self._release()

    def throttled(self, retry_after: float) -> Cut | None:
        """Record a 429; the cut it made, if any (new starts wait until in_flight < limit)."""
        return self.aimd.throttled(self._clock(), retry_after)

    def succeeded(self) -> None:
        """Record a success, starting a waiting request at once if it raised the limit."""
        if self.aimd.succeeded(self._clock()):
            self._wake()

    async def _acquire(self) -> None:
        # A newcomer never overtakes a waiting request: it queues behind it.
        if not self._waiting and self.in_flight < self.aimd.limit:
            self.in_flight += 1
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # handed the slot as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(turn)
            raise

    def _release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        # The slot is counted here, when handed over, so that no newcomer can take it between
        # this call and the waiter's resumption.
        while self._waiting and self.in_flight < self.aimd.limit:
            turn = self._waiting.popleft()
            if not turn.done():
                self.in_flight += 1
                turn.set_result(None)
