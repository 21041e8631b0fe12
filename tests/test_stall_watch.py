"""relay.receiver.stall: a commit stalled on a primary the Sentinels replaced is given up.

The watch on its own (fake Sentinels, commits that sleep), then the intake against a real
topology whose primary is frozen (SIGSTOP: its kernel still acknowledges every packet, so no
TCP timeout ever ends the commit; only the watch does).
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from structlog.testing import capture_logs

from relay.core.errors import Unavailable
from relay.receiver.intake import IntakeWriter
from relay.receiver.stall import PrimaryReplaced, StallWatch, replaced
from relay.store import clients, keys
from tests.support.seed_events import make_event
from tests.support.sentinel import MakeTopology

OLD = ("10.0.0.1", 6379)
NEW = ("10.0.0.2", 6379)


def test_only_a_named_primary_other_than_the_one_waited_on_is_a_change() -> None:
    assert replaced(OLD, NEW)
    assert not replaced(OLD, OLD)
    assert not replaced(None, NEW)  # no connection open: nothing waits on the old one
    assert not replaced(OLD, None)  # no Sentinel answered: nothing to go by


class Sentinels:
    """Names `named` (a list, changed by the test) and counts the questions."""

    def __init__(self, named: tuple[str, int] | None) -> None:
        self.named = named
        self.asked = 0

    async def ask(self) -> tuple[str, int] | None:
        self.asked += 1
        return self.named


async def hanging(cancelled: asyncio.Event) -> str:
    """A commit that never answers, and sets `cancelled` when it is given up."""
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        cancelled.set()
        raise
    return "never"


def watch(sentinels: Sentinels) -> StallWatch:
    return StallWatch(sentinels.ask, lambda: OLD, stall_after=0.05, poll_every=0.02)


async def test_a_quick_commit_asks_nobody() -> None:
    sentinels = Sentinels(NEW)

    async def commit() -> str:
        return "done"

    assert await watch(sentinels).run(commit()) == "done"
    assert sentinels.asked == 0


async def test_a_slow_commit_on_the_named_primary_is_left_to_finish() -> None:
    sentinels = Sentinels(OLD)

    async def commit() -> str:
        await asyncio.sleep(0.3)
        return "done"

    assert await watch(sentinels).run(commit()) == "done"
    assert sentinels.asked >= 2  # asked while it was stalled, and it kept its primary


async def test_a_stalled_commit_is_given_up_once_another_primary_is_named() -> None:
    sentinels = Sentinels(None)  # nobody answers at first: the commit keeps waiting
    cancelled = asyncio.Event()

    async def elect() -> None:
        await asyncio.sleep(0.2)
        sentinels.named = NEW

    election = asyncio.create_task(elect())
    with capture_logs() as logs, pytest.raises(PrimaryReplaced, match=r"10\.0\.0\.2:6379"):
        await watch(sentinels).run(hanging(cancelled))
    await election
    assert cancelled.is_set()  # its connection was dropped with it
    given_up = [e for e in logs if e["event"] == "intake_commit_given_up"]
    assert given_up
    assert given_up[0]["primary"] == "10.0.0.2:6379"


async def test_a_commit_failing_while_the_sentinels_are_asked_fails_as_itself() -> None:
    async def slow_ask() -> tuple[str, int] | None:
        await asyncio.sleep(60)
        return NEW

    async def commit() -> str:
        await asyncio.sleep(0.1)
        raise ConnectionResetError("reset")

    stall = StallWatch(slow_ask, lambda: OLD, stall_after=0.05, poll_every=0.02)
    with pytest.raises(ConnectionResetError):
        await stall.run(commit())


async def test_stopping_the_writer_cancels_the_commit_it_watches() -> None:
    cancelled = asyncio.Event()
    running = asyncio.create_task(watch(Sentinels(OLD)).run(hanging(cancelled)))
    await asyncio.sleep(0.1)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await asyncio.sleep(0)
    assert cancelled.is_set()


@pytest.mark.needs_redis_server
@pytest.mark.timeout(90)
async def test_a_commit_stalled_on_a_frozen_primary_gives_way_to_the_new_one(
    make_topology: MakeTopology,
) -> None:
    topology = make_topology()
    # Deadlines far beyond the failover: without the watch the stalled commit would hold every
    # request behind it for all of this.
    long = 40.0
    bounds = clients.intake(long)
    writer = IntakeWriter(
        clients.async_client(topology.url, bounds),
        queue_connection=clients.sync_client(topology.url, clients.OPERATOR),
    )
    writer.start()
    old = topology.primary()
    assert old.process is not None
    try:
        first, stalled_event, after = (make_event(["crm"]) for _ in range(3))
        await writer.submit([first], max_wait=long)  # the link is open to the old primary
        os.killpg(old.process.pid, signal.SIGSTOP)
        with capture_logs() as logs:
            stalled = writer.submit([stalled_event], max_wait=long)
            with pytest.raises(Unavailable, match="cannot take the event right now"):
                await stalled
            new, _ = await asyncio.to_thread(topology.wait_new_primary, old)
            await writer.submit([after], max_wait=long)  # straight to the new primary
        given_up = [e for e in logs if e["event"] == "intake_commit_given_up"]
        assert given_up, logs
        assert given_up[0]["waiting_on"] == f"{old.address[0]}:{old.address[1]}"
        assert given_up[0]["primary"] == f"{new.address[0]}:{new.address[1]}"
        with new.client() as direct:
            assert direct.exists(keys.event_key(first.id))  # replicated before the freeze
            assert direct.exists(keys.event_key(after.id))
    finally:
        if old.process is not None:
            os.killpg(old.process.pid, signal.SIGCONT)
        await writer.close()
