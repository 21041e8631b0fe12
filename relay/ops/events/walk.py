"""Walking the events index newest first, in pages, from a cursor (relay.store.events_index).

The index is the minute lists (`relay:events:{minute}`, with the sorted set of their minutes),
then, for events stored before them, the sorted set `relay:events`. A walk reads the minute
lists through one script call per page (lua/minutes.lua), newest minute first and each list
from its end, then goes on in the sorted set with relay.ops.pages.IndexWalk.

Where a walk stopped is a `MinutePosition` (a minute and the index of an id in its list,
counted from the list's start: new ids are pushed at the end, so an index keeps naming the
same id while events arrive) or, in the sorted set, a relay.ops.pages `Position`. Both travel
as opaque cursors (`to_cursor`, `event_cursor`).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis

from relay.core.ids import id_from_bytes
from relay.ops.pages import MAX_CURSOR, IndexWalk, Position
from relay.store import events_index, keys, scripts

__all__ = ["EventPosition", "EventsWalk", "MinutePosition", "event_cursor", "minutes_page"]

#: The prefix of a minute-list cursor's text (a sorted-set cursor's text starts with a number).
_MINUTE_TAG = "minute|"


@dataclass(frozen=True)
class MinutePosition:
    """An id of a minute list: its minute and its index from the list's start."""

    minute: int
    index: int
    member: str

    def to_cursor(self) -> str:
        """The position as an opaque, URL-safe cursor (the id is not needed to go on)."""
        raw = f"{_MINUTE_TAG}{self.minute}|{self.index}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


#: Where a walk of the events index stopped: in the minute lists or in the sorted set.
EventPosition = MinutePosition | Position


def event_cursor(text: str) -> EventPosition:
    """Parse a cursor of the events listing; ValueError when no walk made it."""
    if not text or len(text) > MAX_CURSOR:
        raise ValueError("not a cursor of this API")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("not a cursor of this API") from None
    if not raw.startswith(_MINUTE_TAG):
        return Position.from_cursor(text)
    minute, sep, index = raw.removeprefix(_MINUTE_TAG).partition("|")
    try:
        position = MinutePosition(int(minute), int(index), "")
    except ValueError:
        raise ValueError("not a cursor of this API") from None
    if not sep or position.index < 0 or position.minute < 0:
        raise ValueError("not a cursor of this API")
    return position


def minutes_page(
    conn: redis.Redis, top: str, first: int, low: str, want: int
) -> tuple[list[MinutePosition], bool]:
    """At most `want` ids of the minute lists, newest first, in one call, and whether the
    minutes ran out. `top` is the newest minute read ("+inf", or "(m" for those before m),
    `first` the index to start at in minute `top`'s list (-1: its last), `low` the oldest."""
    reply = cast(
        "list[Any]",
        conn.eval(
            scripts.MINUTES,
            1,
            keys.EVENTS_MINUTES,
            keys.EVENTS_BUCKET_PREFIX,
            top,
            first,
            low,
            want,
        ),
    )
    flat = reply[1:]
    entries = [
        MinutePosition(int(flat[i]), int(flat[i + 1]), id_from_bytes(bytes(flat[i + 2])))
        for i in range(0, len(flat), 3)
    ]
    return entries, bool(reply[0])


def _after(position: MinutePosition) -> tuple[str, int]:
    """The `top` and `first` of the read that goes on just after `position`."""
    if position.index:
        return str(position.minute), position.index - 1
    return f"({position.minute}", -1


def _bounds(
    start: MinutePosition | None, low: float | None, high: float | None
) -> tuple[str, int, str]:
    """The first call's `top`, `first` and `low` for a walk of received times [low, high]."""
    bottom = "-inf" if low is None else str(events_index.minute_of(low))
    top, first = ("+inf" if high is None else str(events_index.minute_of(high))), -1
    if start is not None and (high is None or start.minute <= events_index.minute_of(high)):
        top, first = _after(start)
    return top, first, bottom


@dataclass
class EventsWalk:
    """One walk of the events index newest first: received times in [low, high] (the minute
    lists are read by whole minutes: callers filter the received time exactly), after `start`."""

    conn: redis.Redis
    low: float | None = None
    high: float | None = None
    start: EventPosition | None = None  # exclusive
    page_size: int = 200  # the first page; each next one is twice the last, to `max_page`
    max_scan: int | None = 10_000
    max_page: int = 1000
    deadline: float | None = None  # time.monotonic() after which no further page is read
    scanned: int = 0
    exhausted: bool = False
    last: EventPosition | None = None

    def pages(self) -> Iterator[list[EventPosition]]:
        """Pages of entries in walk order: the minute lists, then the sorted set."""
        if not isinstance(self.start, Position):
            done = yield from self._minute_pages()
            if not done:
                return
        yield from self._sorted_set_pages()

    def _room(self, size: int) -> int:
        """How many entries the next page may read (0: stop here)."""
        if self.deadline is not None and self.scanned and time.monotonic() > self.deadline:
            return 0
        if self.max_scan is None:
            return size
        return max(0, min(size, self.max_scan - self.scanned))

    def _minute_pages(self) -> Generator[list[EventPosition], None, bool]:
        """Pages of the minute lists; returns whether they ran out (else a bound stopped it)."""
        start = self.start if isinstance(self.start, MinutePosition) else None
        top, first, bottom = _bounds(start, self.low, self.high)
        size = self.page_size
        while (want := self._room(size)) > 0:
            size = min(size * 2, max(self.max_page, self.page_size))
            page, done = minutes_page(self.conn, top, first, bottom, want)
            self.scanned += len(page)
            if page:
                self.last = page[-1]
                yield [*page]
                top, first = _after(page[-1])
            if done:
                return True
        return False

    def _sorted_set_pages(self) -> Iterator[list[EventPosition]]:
        if self._room(1) == 0:
            return  # the bound or the deadline came at the end of the minute lists
        start = self.start if isinstance(self.start, Position) else None
        walk = IndexWalk(
            self.conn,
            keys.EVENTS_INDEX,
            low=self.low,
            high=self.high,
            start=start,
            page_size=self.page_size,
            max_scan=None if self.max_scan is None else self.max_scan - self.scanned,
            max_page=self.max_page,
            deadline=self.deadline,
        )
        before = self.scanned
        for page in walk.pages():
            self.scanned = before + walk.scanned
            self.last = walk.last
            yield [*page]
        self.scanned = before + walk.scanned
        self.last = walk.last or self.last
        self.exhausted = walk.exhausted
