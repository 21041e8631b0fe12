"""`RELAY_ACK_REPLICAS=all` against a real Sentinel topology with two replicas: a confirmed
commit is on every replica online, with one replica gone (killed, even while a batch waits for
it) or frozen past RELAY_ACK_MAX_LAG the other confirms alone, and a healthy batch is one round
trip. Then the WAIT slicing of the committer against a scripted link."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from redis import asyncio as aioredis
from structlog.testing import capture_logs

from relay.core.acks import EVERY_ONLINE, AckReplicas
from relay.core.errors import Unavailable
from relay.receiver.batch import Pending
from relay.receiver.committer import WAIT_MARGIN, BatchCommitter
from relay.receiver.intake import IntakeWriter
from relay.receiver.spool.drain import SpoolDrainer, redis_commit
from relay.receiver.spool.spool import Spool
from relay.store import clients, keys
from relay.store.records import Event
from relay.store.replication import (
    WAIT_SLICE,
    ReplicasUnconfirmed,
    confirm_replicas,
    fresh_from_info,
    read_facts,
)
from tests.support.redis_nodes import DataNode, wait_for
from tests.support.seed_events import make_event
from tests.support.sentinel import MakeTopology, SentinelTopology, Timings

#: Generous for a loaded machine; the tests check how long the commits really took.
DEADLINE = 3.0


def two_replicas(make_topology: MakeTopology) -> SentinelTopology:
    # min-replicas-to-write off: with no replica left the primary still takes the write, and
    # the WAIT alone must keep it from being acknowledged.
    return make_topology(replicas=2, timings=Timings(min_replicas_to_write=0))


async def every_online_writer(
    url: str, ack: AckReplicas = EVERY_ONLINE, deadline: float = DEADLINE
) -> IntakeWriter:
    bounds = clients.intake(deadline)  # the receiver's: RELAY_INTAKE_TIMEOUT bounds its socket
    writer = IntakeWriter(
        clients.async_client(url, bounds),
        queue_connection=clients.sync_client(url, bounds),
        ack_replicas=ack,
    )
    writer.start()
    return writer


def on(node_client: redis.Redis, event: Event) -> bool:
    return bool(node_client.exists(keys.event_key(event.id)))


async def each_202_on_both(
    writer: IntakeWriter, first: DataNode, second: DataNode, count: int
) -> None:
    """Submit `count` events one by one; each, once answered, is on both replicas already
    (no sleep: the WAIT saw both take it before the commit returned)."""
    for _ in range(count):
        event = make_event(["crm"])
        await writer.submit([event], max_wait=DEADLINE)
        with first.client() as one, second.client() as other:
            assert on(one, event)
            assert on(other, event)


def wait_online(topology: SentinelTopology, count: int) -> None:
    """Until the primary counts `count` replicas online (a killed one is dropped at once)."""

    def reached() -> bool:
        with clients.sync_client(topology.url, clients.OPERATOR) as client:
            return read_facts(client).online_replicas == count

    wait_for(reached, 10.0, f"the primary does not count {count} replicas online")


def wait_fresh(primary: DataNode, count: int, ack: AckReplicas = EVERY_ONLINE) -> None:
    """Until the primary lists `count` replicas online with a lag within `ack.max_lag`."""

    def reached() -> bool:
        with primary.client() as client:
            return fresh_from_info(client.info("replication"), ack.max_lag) == count

    wait_for(reached, 20.0, f"the primary does not list {count} fresh replicas")


async def until_a_wait_blocks(primary: DataNode) -> None:
    """Until a client of the primary is blocked in WAIT (polled without blocking the loop,
    which the commit runs on)."""

    def blocked() -> bool:
        with primary.client() as client:
            return any(c["cmd"] == "wait" and "b" in c["flags"] for c in client.client_list())

    for _ in range(500):
        if await asyncio.to_thread(blocked):
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("no client of the primary is blocked in WAIT")


async def test_a_202_under_all_means_both_replicas_have_the_event(
    make_topology: MakeTopology,
) -> None:
    topology = two_replicas(make_topology)
    _, first, second = topology.data
    writer = await every_online_writer(topology.url)
    try:
        await each_202_on_both(writer, first, second, 30)
    finally:
        await writer.close()


async def test_with_one_of_two_replicas_gone_the_other_confirms_alone(
    make_topology: MakeTopology,
) -> None:
    topology = two_replicas(make_topology)
    _, first, second = topology.data
    writer = await every_online_writer(topology.url)
    try:
        await writer.submit([make_event(["crm"])], max_wait=DEADLINE)  # two online, noted
        second.kill()
        wait_online(topology, 1)
        # The first commit after the kill may still WAIT for two (the count it noted last, if
        # fresh): its first slice is confirmed by one, and the INFO after it lists one; from
        # then on each commit asks for the one replica online and returns at once.
        await writer.submit([make_event(["crm"])], max_wait=DEADLINE)
        started = time.monotonic()
        for _ in range(20):
            event = make_event(["crm"])
            await writer.submit([event], max_wait=DEADLINE)
            with first.client() as one:
                assert on(one, event)
        assert time.monotonic() - started < DEADLINE  # not one WAIT ran to its timeout
        # And with no replica at all, nothing is acknowledged on the primary alone.
        first.kill()
        wait_online(topology, 0)
        with pytest.raises(Unavailable, match="0 of the 1 replica"):
            await writer.submit([make_event(["crm"])], max_wait=DEADLINE)
    finally:
        await writer.close()


async def test_a_replica_back_online_is_waited_for_again(make_topology: MakeTopology) -> None:
    topology = two_replicas(make_topology)
    primary, _, second = topology.data
    writer = await every_online_writer(topology.url)
    try:
        second.kill()
        wait_online(topology, 1)
        await writer.submit([make_event(["crm"])], max_wait=DEADLINE)
        second.replicaof = primary.address
        second.start()
        wait_online(topology, 2)
        for _ in range(10):
            event = make_event(["crm"])
            await writer.submit([event], max_wait=DEADLINE)
            with second.client() as back:
                assert on(back, event)
    finally:
        await writer.close()


def test_the_drain_under_all_confirms_on_every_replica_online(
    make_topology: MakeTopology, tmp_path: Path
) -> None:
    topology = two_replicas(make_topology)
    _, first, second = topology.data
    client = clients.sync_client(topology.url, clients.intake(1.0))
    spool = Spool(tmp_path)
    drainer = SpoolDrainer(spool, redis_commit(client, ack_replicas=EVERY_ONLINE, ack_timeout=0.3))
    try:
        event = make_event(["crm"])
        spool.append(event)
        drainer.drain_pass()
        with first.client() as one, second.client() as other:
            assert on(one, event)
            assert on(other, event)
        second.kill()
        wait_online(topology, 1)
        alone = make_event(["crm"])
        spool.append(alone)
        drainer.drain_pass()
        with first.client() as one:
            assert on(one, alone)
        first.kill()
        wait_online(topology, 0)
        spool.append(make_event(["crm"]))
        with pytest.raises(ReplicasUnconfirmed, match="0 of the 1"):
            drainer.drain_pass()
        [directory] = spool.directories()
        assert directory.pending()  # the cursor waits for a replica's word
    finally:
        spool.close()
        client.close()


class CountingLink:
    """Wraps a committer's link: records each group of commands sent (one per round trip)."""

    def __init__(self, committer: BatchCommitter) -> None:
        link = committer._link
        assert link is not None
        self.groups: list[list[str]] = []
        send = link.send

        async def counted(commands: Sequence[Sequence[Any]]) -> None:
            self.groups.append([str(c[0]).upper() for c in commands])
            await send(commands)

        link.send = counted  # type: ignore[method-assign]


async def test_a_healthy_batch_under_all_is_one_round_trip(make_topology: MakeTopology) -> None:
    topology = two_replicas(make_topology)
    writer = await every_online_writer(topology.url)
    sent = CountingLink(writer._committer)
    try:
        for _ in range(30):
            await writer.submit([make_event(["crm"])], max_wait=DEADLINE)
    finally:
        await writer.close()
    # A count read alone happens only first and after a pause (ONLINE_FRESH); every batch is
    # one group: the script, its kick, one WAIT, and the INFO that counts the replicas. A second
    # slice would show as a group of its own starting with WAIT.
    commits = [group for group in sent.groups if group != ["INFO"]]
    assert len(commits) == 30
    for group in commits:
        assert group[0] == "EVAL"  # the commit script
        assert group[-2:] == ["WAIT", "INFO"]
        assert group.count("WAIT") == 1


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_frozen_replica_is_given_up_once_its_lag_passes_the_limit(
    make_topology: MakeTopology,
) -> None:
    """Issue 16: a replica cut off from a primary that stays primary (here SIGSTOP: its TCP
    connection stays open) is listed online by the primary until repl-timeout (60 s). Once its
    lag passes RELAY_ACK_MAX_LAG it is not waited for: intake goes on, confirmed by the other."""
    topology = two_replicas(make_topology)
    primary, first, second = topology.data
    ack = EVERY_ONLINE
    writer = await every_online_writer(topology.url, ack)
    try:
        with capture_logs() as logs:
            await writer.submit([make_event(["crm"])], max_wait=DEADLINE)  # two fresh, noted
            second.freeze()
            frozen_at = time.monotonic()
            # Silent for less than the limit, it is still waited for: not confirmed by one alone.
            with pytest.raises(Unavailable, match="1 of the 2 replica"):
                await writer.submit([make_event(["crm"])], max_wait=1.0)
            # Then batches are refused until its lag passes the limit (whole seconds, so up to a
            # second more), and then confirmed by the first replica alone. Bounded far below the
            # 60 s repl-timeout after which the primary would drop it by itself.
            give_up = frozen_at + ack.max_lag + 1 + 2 * DEADLINE
            in_a_row: list[float] = []
            while len(in_a_row) < 20:
                assert time.monotonic() < give_up, "intake did not go on without the frozen replica"
                event = make_event(["crm"])
                try:
                    await writer.submit([event], max_wait=DEADLINE)
                except Unavailable:
                    in_a_row.clear()
                    continue
                in_a_row.append(time.monotonic())
                # No sleep: the replica that confirmed it has it.
                with first.client() as one:
                    assert on(one, event)
            # Once given up, each batch asks for the one fresh replica: none waited to its deadline.
            assert in_a_row[-1] - in_a_row[0] < DEADLINE
            # The drain's (sync) confirmation gives it up as well, at once.
            with clients.sync_client(topology.url, clients.intake(DEADLINE)) as client:
                assert confirm_replicas(client, ack, DEADLINE) == 1
        skipped = [e for e in logs if e["event"] == "replicas_skipped_stale"]
        assert len(skipped) == 1, logs  # once, not per batch
        assert (skipped[0]["stale"], skipped[0]["waiting_for"]) == (1, 1)
    finally:
        second.thaw()
    try:
        # Back, it catches up and acknowledges: waited for again, it has every event confirmed.
        wait_fresh(primary, 2, ack)
        with capture_logs() as logs:
            await each_202_on_both(writer, first, second, 10)
        assert [e["waiting_for"] for e in logs if e["event"] == "replicas_fresh_again"] == [2]
    finally:
        await writer.close()


@pytest.mark.timeout(90)
async def test_a_replica_killed_while_a_batch_waits_for_it_leaves_it_to_the_other(
    make_topology: MakeTopology,
) -> None:
    """Issue 16: the primary drops a killed replica at once, but a WAIT already asked for it
    would block until its timeout. The next slice asks for the replica left."""
    topology = two_replicas(make_topology)
    primary, first, second = topology.data
    # A lag limit the test never reaches, so that the kill alone can release the batch; and a
    # long deadline, so that waiting it out and not are far apart.
    ack = replace(EVERY_ONLINE, max_lag=600.0)
    deadline = 10.0
    writer = await every_online_writer(topology.url, ack, deadline)
    try:
        await writer.submit([make_event(["crm"])], max_wait=deadline)  # two fresh, noted
        second.freeze()  # so that the next batch's WAIT for two blocks
        event = make_event(["crm"])
        submitted = time.monotonic()
        batch = writer.submit([event], max_wait=deadline)  # a future: the commit runs now
        await until_a_wait_blocks(primary)
        second.kill()
        await asyncio.wait_for(batch, deadline + 5)  # a 202: no Unavailable
        took = time.monotonic() - submitted
        with first.client() as one:
            assert on(one, event)
        # Not held until its WAIT's timeout (the deadline less WAIT_MARGIN): a slice or so
        # after the kill. Half the deadline leaves a loaded machine plenty of room.
        assert took < (deadline - WAIT_MARGIN) / 2, f"the batch took {took:.2f} s"
    finally:
        await writer.close()
    # The same for the spool drain's (sync) confirmation, with the replica back and frozen.
    second.replicaof = primary.address
    second.start()
    wait_fresh(primary, 2, ack)
    with clients.sync_client(topology.url, clients.intake(deadline)) as client:
        client.set("before-the-freeze", "1")
        second.freeze()
        answered: list[int] = []
        thread = threading.Thread(
            target=lambda: answered.append(confirm_replicas(client, ack, deadline))
        )
        started = time.monotonic()
        thread.start()
        try:
            await until_a_wait_blocks(primary)
        finally:
            second.kill()
        await asyncio.to_thread(thread.join, deadline + 5)
        took = time.monotonic() - started
    assert answered == [1]
    assert took < deadline / 2, f"the drain's confirmation took {took:.2f} s"


class ScriptedLink:
    """A RedisLink stand-in: records what is sent, answers reads from a script. With
    `blocking`, a WAIT sent takes its whole timeout, as one no replica answers does."""

    def __init__(self, replies: list[object], *, blocking: bool = False) -> None:
        self.replies = replies
        self.blocking = blocking
        self.sent: list[list[tuple[object, ...]]] = []

    async def send(self, commands: list[tuple[object, ...]]) -> None:
        self.sent.append(list(commands))
        if self.blocking and commands[0][0] == "WAIT":
            await asyncio.sleep(int(str(commands[0][2])) / 1000)

    async def read(self) -> object:
        return self.replies.pop(0)


def info(fresh: int, stale: int = 0) -> bytes:
    """Raw INFO replication of a primary with `fresh` replicas acknowledging (lag 0) and
    `stale` ones silent for 30 s, all online."""
    lags = [0] * fresh + [30] * stale
    lines = [b"# Replication", b"role:master", b"connected_slaves:%d" % len(lags)]
    lines += [
        b"slave%d:ip=10.0.0.%d,port=6380,state=online,offset=10,lag=%d" % (i, i, lag)
        for i, lag in enumerate(lags)
    ]
    return b"\r\n".join([*lines, b""])


async def committer_under_all(redis_url: str) -> BatchCommitter:
    return BatchCommitter(
        aioredis.Redis.from_url(redis_url),
        queue_connection=redis.Redis.from_url(redis_url),
        retention=60.0,
        ack_replicas=EVERY_ONLINE,
    )


def a_batch(deadline_in: float) -> list[Pending]:
    loop = asyncio.get_running_loop()
    return [Pending([], 0, loop.create_future(), deadline=loop.time() + deadline_in)]


def slices(link: ScriptedLink) -> list[tuple[object, ...]]:
    """The (WAIT, count) of each slice sent, each checked to be followed by INFO and to
    last no longer than WAIT_SLICE."""
    found = []
    for wait, info_command in link.sent:
        assert info_command == ("INFO", "replication")
        assert wait[0] == "WAIT"
        assert 1 <= int(str(wait[2])) <= WAIT_SLICE * 1000
        found.append(wait[:2])
    return found


async def test_the_committer_slices_its_wait_while_a_replica_it_needs_is_missing(
    redis_url: str,
) -> None:
    committer = await committer_under_all(redis_url)
    batch = a_batch(DEADLINE)
    try:
        # The first slice, for 1, answered 1, but INFO then lists 2 fresh: a slice for 2,
        # answered 2.
        link = ScriptedLink([info(2), 2, info(2)])
        await committer._confirm_online(link, batch, 1, DEADLINE)  # type: ignore[arg-type]
        assert slices(link) == [("WAIT", 2)]
        assert link.replies == []  # every reply read, nothing left for the next batch
        # A replica fresh but slow: slices go on; once it is gone the one left confirms.
        link = ScriptedLink([info(2), 1, info(2), 1, info(1)])
        await committer._confirm_online(link, batch, 1, DEADLINE)  # type: ignore[arg-type]
        assert slices(link) == [("WAIT", 2), ("WAIT", 2)]
        assert link.replies == []
        # Gone stale during the first slice (still online): not waited for, no slice more.
        link = ScriptedLink([info(1, stale=1)])
        await committer._confirm_online(link, batch, 1, DEADLINE)  # type: ignore[arg-type]
        assert link.sent == []
        assert committer._online == 1  # the next batch's first WAIT asks for one
        # None fresh: one is still needed, and none confirms: slices until the deadline.
        link = ScriptedLink([info(0, stale=2), *[0, info(0, stale=2)] * 4], blocking=True)
        with pytest.raises(ReplicasUnconfirmed, match="0 of the 1"):
            await committer._confirm_online(link, a_batch(WAIT_MARGIN + 0.6), 0, 0.6)  # type: ignore[arg-type]
        assert slices(link) == [("WAIT", 1), ("WAIT", 1)]  # 0.5 s, then what was left
        # Out of time after the first slice: no slice more, unconfirmed.
        link = ScriptedLink([info(2)])
        with pytest.raises(ReplicasUnconfirmed, match="1 of the 2"):
            await committer._confirm_online(link, a_batch(WAIT_MARGIN), 1, 0.01)  # type: ignore[arg-type]
        assert link.sent == []
    finally:
        await committer.drop()
