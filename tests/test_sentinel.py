"""Sentinel connections and replica-acknowledged intake, against real Sentinels and replicas.

The topology is tests/support/sentinel.py (a primary, a replica, three Sentinels on loopback).
Failovers here are Sentinel's manual `SENTINEL FAILOVER` or a SIGKILL; the whole-system runs
with network partitions are in tests/chaos/test_sentinel_failover.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from relay.config.loading import parse_routes
from relay.config.settings import Settings
from relay.core.acks import AckReplicas
from relay.core.errors import Unavailable
from relay.receiver.app import create_app
from relay.receiver.intake import IntakeWriter
from relay.receiver.spool.drain import SpoolDrainer, redis_commit
from relay.receiver.spool.spool import Spool
from relay.store import clients, keys
from relay.store.failover import NotPrimary, NotSent, is_not_primary, not_written
from relay.store.records import Event
from relay.store.replication import (
    NotOnPrimary,
    ReplicasUnconfirmed,
    confirm_replicas,
    read_facts,
    startup_warnings,
)
from tests.support.processes import post, relay_env, relay_processes, wait_until
from tests.support.receiver import receiver_server
from tests.support.sentinel import MakeTopology, SentinelTopology, Timings
from tests.support.targets import TargetServer

JSON = {"content-type": "application/json", "x-event-type": "thing"}


def event(n: int, source: str = "s") -> Event:
    return Event(
        id=f"evt_{n:025d}0",  # a real id's shape: its last digit's low bits are 0
        source=source,
        type="thing",
        received_at=time.time(),
        content_type="application/json",
        method="POST",
        headers=(),
        body=b'{"n": %d}' % n,
        targets=("crm",),
    )


def on(node_client: redis.Redis, event_id: str) -> bool:
    return bool(node_client.exists(keys.event_key(event_id)))


def manual_failover(topology: SentinelTopology) -> None:
    """Ask one Sentinel to fail over now (no down-detection wait)."""
    with topology.sentinels[0].client() as sentinel:
        sentinel.execute_command("SENTINEL", "FAILOVER", "relay")


# --- the client factory ---------------------------------------------------------------------


async def test_every_client_kind_writes_to_the_primary(make_topology: MakeTopology) -> None:
    topology = make_topology()
    primary, replica = topology.data
    for n, bounds in enumerate((clients.OPERATOR, clients.WORKER, clients.intake(1.0))):
        with clients.sync_client(topology.url, bounds) as client:
            assert client.set(f"sync-{n}", "1")
    aclient = clients.async_client(topology.url, clients.intake(1.0))
    try:
        assert await aclient.set("async", "1")
    finally:
        await aclient.aclose()
    with primary.client() as direct:
        assert direct.exists("sync-0", "sync-1", "sync-2", "async") == 4
    assert replica.role() == "slave"


def test_refusals_as_no_primary_are_told_apart_from_other_errors() -> None:
    assert is_not_primary(redis.exceptions.ReadOnlyError("You can't write against a replica"))
    assert is_not_primary(redis.ResponseError("NOREPLICAS Not enough good replicas to write."))
    assert is_not_primary(redis.exceptions.MasterDownError("Link with MASTER is down"))
    assert not is_not_primary(redis.ResponseError("ERR wrong number of arguments"))
    assert not_written(NotPrimary("x"))
    assert not_written(NotSent("x"))
    assert not_written(redis.exceptions.BusyLoadingError("loading"))
    # Anything that may have happened after the command reached a server is never re-sent.
    assert not not_written(redis.TimeoutError("Timeout reading from socket"))
    assert not not_written(redis.ConnectionError("Connection closed by server."))


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_worker_client_follows_a_failover_without_an_error(make_topology: MakeTopology) -> None:
    topology = make_topology()
    old = topology.primary()
    client = clients.sync_client(topology.url, clients.WORKER)
    errors: list[BaseException] = []
    written = 0
    try:
        manual_failover(topology)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                client.set(f"k{written}", written)
                written += 1
            except redis.RedisError as exc:  # what the failover must not surface
                errors.append(exc)
            if topology.primary_address() not in (None, old.address) and written > 50:
                break
            time.sleep(0.01)
        new = topology.primary()
        # Until Sentinel has demoted it, the old primary still takes writes on the connections
        # it has (lost later: the window RELAY_ACK_REPLICAS closes); once demoted, never again.
        topology.wait_replica_of(old, new)
        client.set("after", "1")
        with new.client() as direct:
            assert direct.get("after") == b"1"
    finally:
        client.close()
    assert new is not old
    assert errors == []


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_dropped_connection_reconnects_to_the_new_primary(
    make_topology: MakeTopology,
) -> None:
    """redis/redis-py#3874: a connection dropped inside the command retry reconnected to the
    address it had (the dead primary) until the retries ran out."""
    topology = make_topology()
    sync = clients.sync_client(topology.url, clients.WORKER)
    aclient = clients.async_client(topology.url, clients.OPERATOR)
    try:
        assert sync.ping()
        assert await aclient.ping()
        old = topology.primary()
        old.kill()
        started = time.monotonic()
        assert sync.set("after", "1")  # one call, retried across the whole failover
        assert await aclient.set("async-after", "1")
        took = time.monotonic() - started
        new = topology.primary()
        with new.client() as direct:
            assert direct.exists("after", "async-after") == 2
    finally:
        sync.close()
        await aclient.aclose()
    print(f"\nwrites went through {took:.1f} s after the primary was killed")


# --- the intake: refused batches are sent again, uncertain ones never ------------------------


async def test_a_batch_refused_as_no_primary_is_sent_again(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = IntakeWriter(redis.asyncio.Redis.from_url(redis_url), queue_connection=redis_client)
    real = writer._commit_once
    refusals = [NotPrimary("READONLY"), NotSent("no primary known")]

    async def flaky(batch: Any) -> Any:
        if refusals:
            raise refusals.pop(0)
        return await real(batch)

    monkeypatch.setattr(writer, "_commit_once", flaky)
    writer.start()
    try:
        committed = await writer.submit([event(1)], max_wait=5.0)
    finally:
        await writer.close()
    assert not committed.duplicate
    assert refusals == []
    assert on(redis_client, event(1).id)
    assert writer.available


async def test_a_batch_that_may_have_landed_is_never_sent_again(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = IntakeWriter(redis.asyncio.Redis.from_url(redis_url), queue_connection=redis_client)
    calls = 0

    async def lost_reply(batch: Any) -> Any:
        nonlocal calls
        calls += 1
        raise redis.TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(writer, "_commit_once", lost_reply)
    writer.start()
    try:
        with pytest.raises(Unavailable):
            await writer.submit([event(2)], max_wait=5.0)
    finally:
        await writer.close()
    assert calls == 1


async def test_a_refused_batch_is_answered_503_at_its_deadline(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = IntakeWriter(redis.asyncio.Redis.from_url(redis_url), queue_connection=redis_client)

    async def never_a_primary(batch: Any) -> Any:
        raise NotPrimary("READONLY")

    monkeypatch.setattr(writer, "_commit_once", never_a_primary)
    writer.start()
    try:
        with pytest.raises(Unavailable, match=r"within 0\.3 s"):
            await writer.submit([event(3)], max_wait=0.3)
    finally:
        await writer.close()
    assert not on(redis_client, event(3).id)


# --- Lua scripts after a SCRIPT FLUSH (a new primary has an empty script cache) -------------


def test_store_scripts_are_loaded_again_after_script_flush(redis_client: redis.Redis) -> None:
    from relay.store.control import NO_LIMITS
    from relay.store.deliveries import Store, Wanted

    store = Store(redis_client, retention=3600)
    redis_client.zadd(keys.due_key("crm"), {"evt_1": 0})
    assert store.anything_due([("crm", NO_LIMITS)], time.time())  # loads the probe script
    redis_client.script_flush()
    assert not redis_client.script_exists(store._probe.sha)[0]
    assert store.anything_due([("crm", NO_LIMITS)], time.time())  # NOSCRIPT: loaded again, run
    claimed = store.claim([Wanted("crm", 10, time.time() + 30)], 10, time.time())
    assert claimed.ids == {"crm": ["evt_1"]}
    redis_client.script_flush()
    again = store.claim([Wanted("crm", 10, time.time() + 30)], 10, time.time() + 60)
    assert again.ids == {"crm": ["evt_1"]}


# --- RELAY_ACK_REPLICAS ---------------------------------------------------------------------


def ack_topology(make_topology: MakeTopology) -> SentinelTopology:
    return make_topology(timings=Timings(min_replicas_to_write=1, min_replicas_max_lag=10))


async def intake_writer(url: str, ack: int, wait: float) -> IntakeWriter:
    bounds = clients.intake(wait)
    writer = IntakeWriter(
        clients.async_client(url, bounds),
        queue_connection=clients.sync_client(url, bounds),
        ack_replicas=AckReplicas(ack),
    )
    writer.start()
    return writer


async def test_a_confirmed_commit_is_on_the_replica_when_it_returns(
    make_topology: MakeTopology,
) -> None:
    topology = ack_topology(make_topology)
    writer = await intake_writer(topology.url, ack=1, wait=3.0)
    try:
        for n in range(20):
            await writer.submit([event(n)], max_wait=3.0)
            with topology.data[1].client() as replica:
                assert on(replica, event(n).id)  # no sleep: WAIT saw the replica take it
    finally:
        await writer.close()


async def test_an_unconfirmed_commit_is_answered_503(make_topology: MakeTopology) -> None:
    topology = make_topology()  # min-replicas-to-write off: the primary takes the write alone
    # 3 s, not 1: on a loaded machine the commit itself can outlast a 1 s deadline, and the
    # answer is then the deadline's, before the WAIT this test is about has run.
    writer = await intake_writer(topology.url, ack=1, wait=3.0)
    topology.data[1].kill()
    try:
        with pytest.raises(Unavailable, match="0 of the 1 replica"):
            await writer.submit([event(7)], max_wait=3.0)
    finally:
        await writer.close()
    with topology.data[0].client() as primary:
        assert on(primary, event(7).id)  # on the primary, but never acknowledged


async def test_a_primary_without_replicas_refuses_and_the_intake_answers_503(
    make_topology: MakeTopology,
) -> None:
    topology = ack_topology(make_topology)  # min-replicas-to-write 1
    writer = await intake_writer(topology.url, ack=1, wait=0.5)
    topology.data[1].kill()
    try:
        with capture_logs() as logs, pytest.raises(Unavailable, match=r"within 0\.5 s"):
            await writer.submit([event(8)], max_wait=0.5)
    finally:
        await writer.close()
    # NOREPLICAS: refused, not written, sent again until the deadline.
    assert any(e.get("error_type") == "NotPrimary" for e in logs)
    with topology.data[0].client() as primary:
        assert not on(primary, event(8).id)


SPOOL_ROUTES = """
[sources.fellow]
kind = "json"
spool = true

[sources.chalk]
kind = "json"

[targets.crm]
url = "http://127.0.0.1:9/crm"

[[routes]]
source = "fellow"
targets = ["crm"]

[[routes]]
source = "chalk"
targets = ["crm"]
"""


async def test_unconfirmed_events_are_spooled_for_spool_sources_and_503_for_others(
    make_topology: MakeTopology, aiohttp_client: Any, tmp_path: Path
) -> None:
    topology = ack_topology(make_topology)
    settings = Settings(
        redis_url=topology.url,
        intake_timeout=0.5,
        ack_replicas=AckReplicas(1),
        spool_dir=str(tmp_path),
    )
    app = create_app(settings, parse_routes(SPOOL_ROUTES, "routes.toml", {}))
    client = await aiohttp_client(await receiver_server(app))
    replica = topology.data[1]
    replica.kill()
    spooled = await client.post("/hooks/fellow", json={"n": 1})
    assert spooled.status == 202
    reply = await spooled.json()
    assert reply["spooled"] is True
    refused = await client.post("/hooks/chalk", json={"n": 2})
    assert refused.status == 503  # NOREPLICAS: refused, sent again until its deadline
    # The replica back: the drain confirms the spooled event on it (WAIT), then lets it go.
    replica.replicaof = topology.data[0].address
    replica.start()
    event_id = reply["id"]

    def drained() -> bool:
        with replica.client() as direct:
            return on(direct, event_id) and not any(tmp_path.glob("*/seg-*"))

    assert await asyncio.to_thread(wait_until, drained, 20)


def test_the_drain_keeps_its_cursor_until_replicas_confirm(
    make_topology: MakeTopology, tmp_path: Path
) -> None:
    topology = make_topology()  # min-replicas-to-write off: the primary takes the write alone
    client = clients.sync_client(topology.url, clients.intake(0.5))
    spool = Spool(tmp_path)
    spool.append(event(11))
    drainer = SpoolDrainer(
        spool, redis_commit(client, ack_replicas=AckReplicas(1), ack_timeout=0.3)
    )
    topology.data[1].kill()
    try:
        with pytest.raises(ReplicasUnconfirmed):
            drainer.drain_pass()
        [directory] = spool.directories()
        assert directory.pending()  # the cursor did not move past the unconfirmed record
        with topology.data[0].client() as primary:
            assert on(primary, event(11).id)  # written, not yet confirmed
        # Found already in Redis on the next pass, it still needs the replicas' word.
        with pytest.raises(ReplicasUnconfirmed):
            drainer.drain_pass()
        assert directory.pending()
    finally:
        spool.close()
        client.close()


def test_a_wait_after_any_write_covers_the_writes_of_other_clients(
    make_topology: MakeTopology,
) -> None:
    topology = make_topology()
    primary, replica = topology.data
    with primary.client() as writer, primary.client() as confirmer:
        for n in range(200):
            writer.set(f"w{n}", n)  # this connection never WAITs
            assert confirm_replicas(confirmer, AckReplicas(1), 2.0) == 1
            with replica.client() as direct:
                assert direct.get(f"w{n}") == str(n).encode()


@pytest.mark.parametrize("ack", [AckReplicas(1), AckReplicas(every_online=True)])
def test_a_confirmation_on_a_primary_without_the_events_confirms_nothing(
    make_topology: MakeTopology, ack: AckReplicas
) -> None:
    """The spool drain writes and confirms through a pooled client: during a failover the two
    can reach two primaries (a chaos run lost 9 spooled events that way: written to the old
    primary, confirmed by the new one's replica). The confirmation checks the events are on
    the server whose replicas it asks."""
    topology = make_topology()
    primary, replica = topology.data
    with primary.client() as other_server:  # stands for the primary the events never reached
        other_server.set("unrelated", 1)
        elsewhere = [keys.event_key(event(n).id) for n in (1, 2)]
        with pytest.raises(NotOnPrimary, match="2 of 2 event"):
            confirm_replicas(other_server, ack, 2.0, present=elsewhere)
        other_server.hset(elsewhere[0], "body", "x")
        with pytest.raises(NotOnPrimary, match="1 of 2 event"):
            confirm_replicas(other_server, ack, 2.0, present=elsewhere)
        other_server.hset(elsewhere[1], "body", "x")
        assert confirm_replicas(other_server, ack, 2.0, present=elsewhere) == 1
        with replica.client() as direct:
            assert direct.exists(*elsewhere) == 2


def test_every_wait_of_a_confirmation_follows_a_write_on_its_own_connection(
    make_topology: MakeTopology,
) -> None:
    """A WAIT on a connection that wrote nothing answers at once with every replica, whatever
    they have: with `all` the slices after the first must carry their own mark too."""
    topology = make_topology()
    primary, _ = topology.data
    with primary.client() as client:
        sent: list[tuple[object, ...]] = []
        real = client.pipeline

        def recording(*args: Any, **kwargs: Any) -> Any:
            pipe = real(*args, **kwargs)
            original = pipe.execute

            def execute(*a: Any, **k: Any) -> Any:
                sent.append(tuple(str(c[0][0]).upper() for c in pipe.command_stack))
                return original(*a, **k)

            pipe.execute = execute  # type: ignore[method-assign]
            return pipe

        client.pipeline = recording  # type: ignore[method-assign]
        confirm_replicas(client, AckReplicas(every_online=True), 2.0)
    assert sent, "no round trip carried a WAIT"
    for commands in sent:
        if "WAIT" in commands:
            assert commands.index("SET") < commands.index("WAIT"), sent


def test_startup_warnings_name_what_weakens_a_202(make_topology: MakeTopology) -> None:
    topology = make_topology(timings=Timings(appendonly=False))
    with clients.sync_client(topology.url, clients.OPERATOR) as client:
        facts = read_facts(client)
    assert (facts.role, facts.connected_replicas, facts.aof_enabled) == ("master", 1, False)
    assert facts.online_replicas == 1
    assert facts.good_replicas is None
    warnings = startup_warnings(facts, AckReplicas(2))
    assert any("RELAY_ACK_REPLICAS=2" in w and "1 connected" in w for w in warnings)
    assert any("min-replicas-to-write is off" in w for w in warnings)
    assert any("AOF is off" in w for w in warnings)
    assert startup_warnings(facts, AckReplicas(0)) == [next(w for w in warnings if "AOF" in w)]


@pytest.mark.slow  # waits for the Sentinels' 10-s INFO period
@pytest.mark.timeout(60)
def test_a_start_under_all_warns_when_replica_priorities_differ(
    make_topology: MakeTopology,
) -> None:
    """With `all`, a replica skipped as stale must not be preferred by Sentinel over one that
    confirmed: the priorities, as the Sentinels list them, are checked at start-up."""
    topology = make_topology(replicas=2)
    every = AckReplicas(every_online=True)
    with clients.sync_client(topology.url, clients.OPERATOR) as client:
        facts = read_facts(client)
        assert facts.replica_priorities == (100, 100)
        assert not any("replica-priority" in w for w in startup_warnings(facts, every))
        with topology.data[2].client() as replica:
            replica.config_set("replica-priority", 10)
        # The Sentinels read a replica's INFO every 10 s.
        changed = lambda: sorted(read_facts(client).replica_priorities) == [10, 100]  # noqa: E731
        assert wait_until(changed, 30, interval=0.5), read_facts(client)
        facts = read_facts(client)
    warnings = [w for w in startup_warnings(facts, every) if "replica-priority" in w]
    assert warnings == [
        "the replicas' replica-priority differ (10, 100): with RELAY_ACK_REPLICAS=all Sentinel "
        "may promote a replica skipped as stale over one that confirmed the latest events; keep "
        "them equal (Deployment page)"
    ]
    # A fixed count never skips a replica; priority 0 (never promoted) is no difference.
    assert not any("replica-priority" in w for w in startup_warnings(facts, AckReplicas(2)))
    never = replace(facts, replica_priorities=(0, 100))
    assert not any("replica-priority" in w for w in startup_warnings(never, every))


async def test_the_receiver_logs_its_startup_warnings(
    make_topology: MakeTopology, aiohttp_client: Any, tmp_path: Path
) -> None:
    topology = make_topology(timings=Timings(min_replicas_to_write=1))
    settings = Settings(
        redis_url=topology.url, ack_replicas=AckReplicas(3), spool_dir=str(tmp_path)
    )
    with capture_logs() as logs:
        app = create_app(settings, parse_routes(SPOOL_ROUTES, "routes.toml", {}))
        client = await aiohttp_client(await receiver_server(app))
        await client.close()
    warnings = [e["warning"] for e in logs if e["event"] == "redis_setup_warning"]
    assert len(warnings) == 1
    assert "RELAY_ACK_REPLICAS=3" in warnings[0]


# --- a failover under load, replica-acknowledged: nothing acknowledged is lost ---------------


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_no_acknowledged_event_is_lost_across_a_failover(
    make_topology: MakeTopology,
) -> None:
    topology = ack_topology(make_topology)
    writer = await intake_writer(topology.url, ack=1, wait=3.0)
    acknowledged: list[str] = []
    refused = 0

    async def one(n: int) -> None:
        nonlocal refused
        try:
            await writer.submit([event(n)], max_wait=3.0)
        except Unavailable:
            refused += 1
        else:
            acknowledged.append(event(n).id)

    try:
        tasks = []
        old = topology.primary()
        for n in range(800):
            if n == 100:
                await asyncio.to_thread(manual_failover, topology)
            tasks.append(asyncio.create_task(one(n)))
            await asyncio.sleep(0.02)
        await asyncio.gather(*tasks)
    finally:
        await writer.close()
    new, _ = await asyncio.to_thread(topology.wait_new_primary, old)
    await asyncio.to_thread(topology.wait_replica_of, old, new)
    with new.client() as direct:
        lost = [i for i in acknowledged if not on(direct, i)]
    print(f"\nacknowledged {len(acknowledged)}, refused {refused}, lost {len(lost)}")
    assert lost == []
    # Acknowledged again once the demoted primary replicates the new one (Sentinel demotes it
    # about 8 s after the switch): until then the new primary has no replica to confirm.
    assert any(int(i.removeprefix("evt_")) > 150 for i in acknowledged)


# --- real processes: serve, worker and an operator command across a SIGKILLed primary --------


E2E_ROUTES = """
[sources.chalk]
kind = "header"

[targets.crm]
url = "{url}"

[[routes]]
source = "chalk"
targets = ["crm"]
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_serve_worker_and_status_ride_out_a_killed_primary(
    make_topology: MakeTopology, targets: TargetServer, tmp_path: Path
) -> None:
    topology = make_topology()
    routes = tmp_path / "routes.toml"
    routes.write_text(E2E_ROUTES.format(url=targets.url("/ok/crm")))
    env = relay_env(topology.url, routes, RELAY_SPOOL_DIR=str(tmp_path / "spool"))
    with relay_processes(tmp_path, env) as procs:
        _, base = procs.serve()
        worker = procs.worker(wait=False)

        def delivered(n: int) -> bool:
            return len(targets.by_name("crm")) >= n

        status, _ = post(f"{base}/hooks/chalk", b'{"n": 1}', JSON)
        assert status == 202
        assert wait_until(lambda: delivered(1), 20), worker.output()[-3000:]
        old = topology.primary()
        old.kill()
        new, took = topology.wait_new_primary(old)
        # Posts go on through the failover; each is 202 or 503, never anything else.
        answers = []
        for n in range(2, 12):
            answers.append(post(f"{base}/hooks/chalk", b'{"n": %d}' % n, JSON)[0])
        assert set(answers) <= {202, 503}
        accepted = answers.count(202)
        assert accepted > 0
        assert wait_until(lambda: delivered(1 + accepted), 20), worker.output()[-3000:]
        assert worker.alive()  # nobody restarted it
        done = subprocess.run(
            [sys.executable, "-m", "relay", "status"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    print(f"\nfailover took {took:.1f} s; {accepted} of 10 posts during it were accepted")
    assert new is not old


def test_relay_devs_probes_work_through_the_sentinels(make_topology: MakeTopology) -> None:
    from relay.cli.dev.own_redis import redis_answers, worker_registered

    topology = make_topology()
    assert redis_answers(topology.url)
    assert not worker_registered(topology.url)  # no worker yet: answered, not an error
