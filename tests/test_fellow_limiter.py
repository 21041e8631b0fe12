"""The adaptive bound on Fellow API requests (worker.fellow.limiter): the AIMD arithmetic with
the time given, and the slots it hands to asyncio tasks (no timing: events and a fixed clock)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.fellow.limiter import MAX_WINDOW, MIN_WINDOW, Aimd, Cut, Limiter


def test_starts_at_the_ceiling_which_must_be_at_least_one() -> None:
    assert Aimd(8).limit == 8
    with pytest.raises(ValueError, match="at least 1"):
        Aimd(0)


def test_a_429_halves_once_per_window_down_to_one() -> None:
    aimd = Aimd(8)
    assert aimd.throttled(0.0, 0.0) == Cut(8, 4)
    # The rest of the burst, answered within the window: one signal, not eight.
    assert [aimd.throttled(t, 0.0) for t in (0.0, 0.1, MIN_WINDOW - 0.01)] == [None] * 3
    assert aimd.limit == 4
    assert aimd.throttled(MIN_WINDOW, 0.0) == Cut(4, 2)
    assert aimd.throttled(2 * MIN_WINDOW, 0.0) == Cut(2, 1)
    assert aimd.throttled(3 * MIN_WINDOW, 0.0) is None  # never below 1
    assert aimd.limit == 1


def test_odd_limits_round_down() -> None:
    aimd = Aimd(7)
    assert aimd.throttled(0.0, 0.0) == Cut(7, 3)
    assert aimd.throttled(10.0, 0.0) == Cut(3, 1)


def test_the_window_is_the_retry_after_within_bounds() -> None:
    aimd = Aimd(32)
    assert aimd.throttled(0.0, 5.0) == Cut(32, 16)
    assert aimd.throttled(4.99, 5.0) is None  # still waiting out the first Retry-After
    assert aimd.throttled(5.0, 3600.0) == Cut(16, 8)
    assert aimd.throttled(5.0 + MAX_WINDOW - 0.01, 0.0) is None
    assert aimd.throttled(5.0 + MAX_WINDOW, 0.0) == Cut(8, 4)


def test_a_run_of_limit_successes_adds_one_up_to_the_ceiling() -> None:
    aimd = Aimd(8)
    aimd.throttled(0.0, 0.0)
    aimd.throttled(1.0, 0.0)
    assert aimd.limit == 2
    raised = [aimd.succeeded(5.0) for _ in range(2 + 3 + 4 + 5 + 6 + 7)]
    assert aimd.limit == 8
    # Raised at the last success of each run: after 2, then 3 more, then 4 more, ...
    assert [n + 1 for n, r in enumerate(raised) if r] == [2, 5, 9, 14, 20, 27]
    assert not any(aimd.succeeded(5.0) for _ in range(100))
    assert aimd.limit == 8


def test_successes_inside_the_window_count_for_nothing() -> None:
    aimd = Aimd(8)
    aimd.throttled(0.0, 10.0)
    # The other requests of the burst that Fellow still answered: no regrowth at once.
    assert not any(aimd.succeeded(9.9) for _ in range(50))
    assert aimd.limit == 4
    assert [aimd.succeeded(10.0) for _ in range(4)] == [False, False, False, True]
    assert aimd.limit == 5


@given(
    st.integers(1, 32),
    st.lists(st.tuples(st.booleans(), st.floats(0, 5), st.floats(0, 120)), max_size=200),
)
def test_the_limit_stays_between_one_and_the_ceiling(
    ceiling: int, events: list[tuple[bool, float, float]]
) -> None:
    aimd, now = Aimd(ceiling), 0.0
    for is_429, step, retry_after in events:
        now += step
        before = aimd.limit
        if is_429:
            cut = aimd.throttled(now, retry_after)
            assert cut is None or (cut.before == before and cut.after == max(1, before // 2))
        else:
            assert aimd.succeeded(now) == (aimd.limit == before + 1)
        assert 1 <= aimd.limit <= ceiling


async def _hold(limiter: Limiter, started: list[int], n: int, done: asyncio.Event) -> None:
    async with limiter.slot():
        started.append(n)
        await done.wait()


async def _settle() -> None:
    for _ in range(5):  # a few loop turns: every task that can run has run
        await asyncio.sleep(0)


async def test_a_limit_lowered_below_in_flight_holds_new_starts_until_enough_finish() -> None:
    limiter = Limiter(4, clock=lambda: 0.0)
    started: list[int] = []
    gates = [asyncio.Event() for _ in range(6)]
    tasks = [asyncio.create_task(_hold(limiter, started, n, gates[n])) for n in range(6)]
    await _settle()
    assert started == [0, 1, 2, 3]
    assert limiter.throttled(0.0) == Cut(4, 2)
    for n in (0, 1):
        gates[n].set()
    await _settle()
    assert limiter.in_flight == 2
    assert started == [0, 1, 2, 3]  # 2 in flight at a limit of 2: 4 and 5 still wait
    gates[2].set()
    await _settle()
    assert started == [0, 1, 2, 3, 4]  # first come, first served
    for gate in gates:
        gate.set()
    await asyncio.gather(*tasks)
    assert (limiter.in_flight, started) == (0, [0, 1, 2, 3, 4, 5])


async def test_a_newcomer_queues_behind_those_waiting() -> None:
    limiter = Limiter(1)
    started: list[int] = []
    gates = [asyncio.Event() for _ in range(3)]
    first = asyncio.create_task(_hold(limiter, started, 0, gates[0]))
    second = asyncio.create_task(_hold(limiter, started, 1, gates[1]))
    await _settle()
    gates[0].set()
    # The slot is handed to the waiter as the holder leaves: a task asking now comes after it.
    await first
    third = asyncio.create_task(_hold(limiter, started, 2, gates[2]))
    await _settle()
    assert started == [0, 1]
    for gate in gates:
        gate.set()
    await asyncio.gather(second, third)
    assert started == [0, 1, 2]


async def test_a_cancelled_waiter_leaves_no_slot_taken() -> None:
    limiter = Limiter(1)
    started: list[int] = []
    gates = [asyncio.Event() for _ in range(3)]
    holder = asyncio.create_task(_hold(limiter, started, 0, gates[0]))
    await _settle()
    waiter = asyncio.create_task(_hold(limiter, started, 1, gates[1]))
    await _settle()
    waiter.cancel()
    gates[0].set()  # the slot is freed as the waiter is cancelled
    await holder
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.in_flight == 0
    gates[2].set()
    await _hold(limiter, started, 2, gates[2])
    assert (started, limiter.in_flight) == ([0, 2], 0)


async def test_a_waiter_handed_the_slot_as_it_is_cancelled_passes_it_on() -> None:
    limiter = Limiter(1)
    started: list[int] = []
    gates = [asyncio.Event() for _ in range(2)]
    async with limiter.slot():
        waiter = asyncio.create_task(_hold(limiter, started, 1, gates[0]))
        last = asyncio.create_task(_hold(limiter, started, 2, gates[1]))
        await _settle()
    # Leaving the block handed the slot to the waiter, which has not run yet: cancelled now,
    # it must pass the slot on rather than keep it.
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gates[1].set()
    await last
    assert (started, limiter.in_flight) == ([2], 0)


async def test_a_raised_limit_starts_a_waiter_at_once() -> None:
    now = 0.0
    limiter = Limiter(2, clock=lambda: now)
    limiter.throttled(0.0)
    assert limiter.limit == 1
    started: list[int] = []
    gates = [asyncio.Event() for _ in range(2)]
    tasks = [asyncio.create_task(_hold(limiter, started, n, gates[n])) for n in range(2)]
    await _settle()
    assert started == [0]
    now = MIN_WINDOW
    limiter.succeeded()  # a success of another client's request: the limit rises to 2
    await _settle()
    assert (limiter.limit, started) == (2, [0, 1])
    for gate in gates:
        gate.set()
    await asyncio.gather(*tasks)
