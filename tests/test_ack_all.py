"""`RELAY_ACK_REPLICAS=all` against a real Sentinel topology with two replicas: a confirmed
commit is on every replica online, and with one replica gone the other confirms alone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis
from redis import asyncio as aioredis

from relay.core.acks import EVERY_ONLINE
from relay.core.errors import Unavailable
from relay.receiver.batch import Pending
from relay.receiver.committer import BatchCommitter
from relay.receiver.intake import IntakeWriter
from relay.receiver.spool.drain import SpoolDrainer, redis_commit
from relay.receiver.spool.spool import Spool
from relay.store import clients, keys
from relay.store.records import Event
from relay.store.replication import ReplicasUnconfirmed, read_facts
from tests.support.redis_nodes import wait_for
from tests.support.seed_events import make_event
from tests.support.sentinel import MakeTopology, SentinelTopology, Timings

#: Generous for a loaded machine; the tests check how long the commits really took.
DEADLINE = 3.0


def two_replicas(make_topology: MakeTopology) -> SentinelTopology:
    # min-replicas-to-write off: with no replica left the primary still takes the write, and
    # the WAIT alone must keep it from being acknowledged.
    return make_topology(replicas=2, timings=Timings(min_replicas_to_write=0))


async def every_online_writer(url: str) -> IntakeWriter:
    bounds = clients.intake(DEADLINE)
    writer = IntakeWriter(
        clients.async_client(url, bounds),
        queue_connection=clients.sync_client(url, bounds),
        ack_replicas=EVERY_ONLINE,
    )
    writer.start()
    return writer


def on(node_client: redis.Redis, event: Event) -> bool:
    return bool(node_client.exists(keys.event_key(event.id)))


def wait_online(topology: SentinelTopology, count: int) -> None:
    """Until the primary counts `count` replicas online (a killed one is dropped at once)."""

    def reached() -> bool:
        with clients.sync_client(topology.url, clients.OPERATOR) as client:
            return read_facts(client).online_replicas == count

    wait_for(reached, 10.0, f"the primary does not count {count} replicas online")


async def test_a_202_under_all_means_both_replicas_have_the_event(
    make_topology: MakeTopology,
) -> None:
    topology = two_replicas(make_topology)
    _, first, second = topology.data
    writer = await every_online_writer(topology.url)
    try:
        for _ in range(30):
            event = make_event(["crm"])
            await writer.submit([event], max_wait=DEADLINE)
            # No sleep: the WAIT saw both replicas take it before the commit returned.
            with first.client() as one, second.client() as other:
                assert on(one, event)
                assert on(other, event)
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
        # fresh): it waits until its deadline's margin and is confirmed by the one left; from
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


class ScriptedLink:
    """A RedisLink stand-in: records what is sent, answers reads from a script."""

    def __init__(self, replies: list[object]) -> None:
        self.replies = replies
        self.sent: list[list[tuple[object, ...]]] = []

    async def send(self, commands: list[tuple[object, ...]]) -> None:
        self.sent.append(list(commands))

    async def read(self) -> object:
        return self.replies.pop(0)


def role(online: int) -> list[object]:
    return [b"master", 10, [[b"10.0.0.9", b"6380", b"10"]] * online]


async def committer_under_all(redis_url: str) -> BatchCommitter:
    return BatchCommitter(
        aioredis.Redis.from_url(redis_url),
        queue_connection=redis.Redis.from_url(redis_url),
        retention=60.0,
        ack_replicas=EVERY_ONLINE,
    )


async def test_a_replica_that_came_online_during_the_wait_gets_a_second_wait(
    redis_url: str,
) -> None:
    committer = await committer_under_all(redis_url)
    loop = asyncio.get_running_loop()
    batch = [Pending([], 0, loop.create_future(), deadline=loop.time() + DEADLINE)]
    # WAIT 1 answered 1, but ROLE then lists 2 online: a second WAIT 2, answered 2.
    link = ScriptedLink([role(2), 2, role(2)])
    await committer._confirm_online(link, batch, 1, wanted=1, wait=1.0)  # type: ignore[arg-type]
    [(wait, replicas, _ms), rolled] = link.sent[0]
    assert (wait, replicas, rolled) == ("WAIT", 2, ("ROLE",))
    assert link.replies == []  # both WAITs' answers read, nothing left for the next batch
    # The same, but the second WAIT too falls short: unconfirmed.
    link = ScriptedLink([role(2), 1, role(2)])
    with pytest.raises(ReplicasUnconfirmed, match="1 of the 2"):
        await committer._confirm_online(link, batch, 1, wanted=1, wait=1.0)  # type: ignore[arg-type]
    # A replica lost during the WAIT is not waited for: 1 of 2 asked, 1 online after, confirmed.
    link = ScriptedLink([role(1)])
    await committer._confirm_online(link, batch, 1, wanted=2, wait=1.0)  # type: ignore[arg-type]
    assert link.sent == []
    # None online after the WAIT: one is still needed.
    link = ScriptedLink([role(0)])
    with pytest.raises(ReplicasUnconfirmed, match="0 of the 1"):
        await committer._confirm_online(link, batch, 0, wanted=1, wait=1.0)  # type: ignore[arg-type]
    await committer.drop()
