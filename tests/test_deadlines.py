"""Deadlines: many waiting futures, one loop timer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relay.receiver.deadlines import Deadlines


def recorder() -> tuple[list[tuple[Any, float]], Any]:
    expired: list[tuple[Any, float]] = []

    def expire(future: asyncio.Future[Any], max_wait: float) -> None:
        expired.append((future, max_wait))
        future.set_exception(TimeoutError(max_wait))

    return expired, expire


async def test_a_future_left_waiting_expires_at_its_deadline_and_an_answered_one_does_not() -> None:
    expired, expire = recorder()
    deadlines = Deadlines(expire)
    loop = asyncio.get_running_loop()
    waiting, answered = loop.create_future(), loop.create_future()
    deadlines.add(loop, waiting, 0.05)
    deadlines.add(loop, answered, 0.05)
    answered.set_result("ok")
    started = loop.time()
    with pytest.raises(TimeoutError):
        await waiting
    assert loop.time() - started >= 0.04  # not before its deadline (the timer may be 1 ms early)
    assert expired == [(waiting, 0.05)]
    assert len(deadlines) == 0  # the answered one was dropped on the way
    deadlines.close()


async def test_a_shorter_wait_added_later_expires_first() -> None:
    expired, expire = recorder()
    deadlines = Deadlines(expire)
    loop = asyncio.get_running_loop()
    long, short = loop.create_future(), loop.create_future()
    deadlines.add(loop, long, 0.5)
    deadlines.add(loop, short, 0.02)
    await asyncio.sleep(0.1)
    assert expired == [(short, 0.02)]
    assert not long.done()
    await asyncio.sleep(0.5)
    assert [f for f, _ in expired] == [short, long]
    deadlines.close()


async def test_answered_futures_leave_from_the_front_and_close_stops_the_timer() -> None:
    expired, expire = recorder()
    deadlines = Deadlines(expire)
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(5)]
    for future in futures:
        deadlines.add(loop, future, 0.05)
    for future in futures[:3]:
        future.set_result(None)
    deadlines.forget_answered()
    assert len(deadlines) == 2
    futures[3].cancel()  # a request whose client went away
    deadlines.close()
    await asyncio.sleep(0.1)
    assert expired == []  # closed: nothing expires any more
    assert not futures[4].done()
