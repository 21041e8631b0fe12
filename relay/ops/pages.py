"""Walking an index (a sorted set scored by time) newest first, in pages, from a cursor.

The events index and the dead-letter store are both read this way: `zrevrangebyscore` pages
growing from a small first one, at most `max_scan` entries in all (and, with a deadline, no
page after it), so that a filter which matches nothing costs a bounded number of round trips.
A `Position` is where a walk stopped (the score and member of the last entry consumed); given
back as `start`, the next walk goes on just after it, in the order Redis keeps: score
descending, then member descending for equal scores. Positions travel as opaque cursors
(`to_cursor`/`from_cursor`) in the management API.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import cast

import redis

#: Longest cursor accepted: base64 of a score, a separator and a member (an event id, or a
#: dead letter's `id:target`, whose target name routes.toml does not bound tightly).
MAX_CURSOR = 512


@dataclass(frozen=True, order=True)
class Position:
    """An entry of an index: its score and member, the order a walk uses."""

    score: float
    member: str

    def to_cursor(self) -> str:
        """The position as an opaque, URL-safe cursor."""
        raw = f"{self.score!r}|{self.member}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def from_cursor(cls, text: str) -> Position:
        """Parse a cursor; ValueError when it is not one `to_cursor` made."""
        if not text or len(text) > MAX_CURSOR:
            raise ValueError("not a cursor of this API")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            score_text, sep, member = raw.partition("|")
            score = float(score_text)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise ValueError("not a cursor of this API") from None
        if not sep or not member or not math.isfinite(score):
            raise ValueError("not a cursor of this API")
        return cls(score, member)


@dataclass
class IndexWalk:
    """One walk of `key` newest first: scores in [low, high], after `start` when given."""

    conn: redis.Redis
    key: str
    low: float | None = None  # inclusive; None: no bound
    high: float | None = None  # inclusive; None: no bound
    start: Position | None = None  # exclusive: the walk goes on after this entry
    page_size: int = 200  # the first page; each next one is twice the last, to `max_page`
    max_scan: int | None = 10_000  # None: no bound (bulk operations that want everything)
    max_page: int = 1000
    deadline: float | None = None  # time.monotonic() after which no further page is read
    scanned: int = 0
    exhausted: bool = False  # the walk reached the end of the range
    last: Position | None = None  # the last entry read (where a walk that stops here ends)
    _seen: set[str] = field(default_factory=set)

    def pages(self) -> Iterator[list[Position]]:
        """Pages of entries in walk order; each entry once, even if re-scored meanwhile."""
        top: float | str = "+inf" if self.high is None else self.high
        if self.start is not None and (self.high is None or self.start.score <= self.high):
            top = self.start.score
        bottom: float | str = "-inf" if self.low is None else self.low
        ties = self._offset_of_start(top)  # entries to pass at exactly `top`
        size = self.page_size
        while self.max_scan is None or self.scanned < self.max_scan:
            if self.deadline is not None and self.scanned and time.monotonic() > self.deadline:
                return  # out of time: not exhausted, so the caller's cursor goes on from here
            # A filter that matches little walks far: growing pages make that fewer round
            # trips, while the first page stays small for the common, quickly filled one.
            want, size = size, min(size * 2, max(self.max_page, self.page_size))
            if self.max_scan is not None:
                want = min(want, self.max_scan - self.scanned)
            raw = cast(
                "list[tuple[bytes, float]]",
                self.conn.zrevrangebyscore(
                    self.key, top, bottom, start=ties, num=want, withscores=True
                ),
            )
            page = [Position(float(s), m.decode("utf-8", "replace")) for m, s in raw]
            if page:
                self.last = page[-1]
            fresh = [p for p in page if self._wanted(p)]
            # Entries before `start` (met only when its member has left the index) are passed
            # over without counting against the bound, so a resumed walk always moves on.
            self.scanned += sum(1 for p in page if self._after_start(p))
            self._seen.update(p.member for p in fresh)
            if fresh:
                yield fresh
            if len(raw) < want:
                self.exhausted = True
                return
            last = page[-1].score
            same = sum(1 for p in page if p.score == last)
            ties = ties + same if last == top else same
            top = last

    def _offset_of_start(self, top: float | str) -> int:
        """How many entries scored exactly `top` come up to and with `start` (0 without one).

        From the start member's rank when it is still in the index with its score (two cheap
        commands, however many entries share that score); else 0, and `_wanted` passes over
        them as they come.
        """
        start = self.start
        if start is None or top != start.score:
            return 0
        with self.conn.pipeline(transaction=False) as pipe:
            pipe.zscore(self.key, start.member)
            pipe.zrevrank(self.key, start.member)
            pipe.zcount(self.key, f"({start.score!r}", "+inf")
            score, rank, above = pipe.execute()
        if score is None or float(score) != start.score or rank is None:
            return 0
        return int(rank) - int(above) + 1

    def _after_start(self, entry: Position) -> bool:
        start = self.start
        # Equal scores come in member-descending order: after `start` means a smaller member.
        return start is None or entry.score < start.score or entry.member < start.member

    def _wanted(self, entry: Position) -> bool:
        """Not seen before, and after `start` in walk order."""
        return entry.member not in self._seen and self._after_start(entry)
