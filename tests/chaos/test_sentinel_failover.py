"""Sentinel failovers under a paced stream: what is acknowledged is delivered, and how long
intake and delivery stop per failover.

The stack (tests/chaos/failover_stack.py): a primary, a replica, three Sentinels (1 s
down-after, 2 s failover timeout), two `relay serve` and two `relay worker`, each in a network
namespace of its own where the machine allows it (else on loopback, without the partitions,
with the reason printed). Two runs:

- replica-acknowledged (`RELAY_ACK_REPLICAS=1`, `min-replicas-to-write 1`): 5 primary
  SIGKILLs, 2 partitions (the primary and one receiver cut off from the rest), a Sentinel and
  the replica killed, the whole Redis side restarted, during 5,000 events. Nothing
  acknowledged may be lost, and the call-once (`spool = true`) source sees only 202s.
- primary-acknowledged (`RELAY_ACK_REPLICAS=0`, no `min-replicas-to-write`): 2 SIGKILLs and a
  partition during 2,000 events, to measure what a failover loses when nobody waits for the
  replica (the Guarantees page quotes it).
- replica-acknowledged without `min-replicas-to-write` (namespaces only): 2 SIGKILLs and 2
  partitions during 2,000 events. `WAIT` alone keeps the isolated primary from acknowledging
  anything, and the new primary, with no replica to count, still takes the workers' writes:
  nothing acknowledged may be lost, and deliveries must go on through each partition (with
  `min-replicas-to-write 1` they stop until the old primary is back as a replica).
- two replicas with `RELAY_ACK_REPLICAS=1`: a partition and a SIGKILL during 1,500 events; one
  replica stays with the new primary, so intake must be back within the election time plus 2 s
  and deliveries within 2 s of the election. What it loses is measured, not asserted: a write
  one replica confirmed is lost when Sentinel promotes the other.
- two replicas with `RELAY_ACK_REPLICAS=all`: the same faults; every replica online confirms
  each 202, so whichever Sentinel promotes has it: nothing acknowledged may be lost, with the
  same bounds on intake and deliveries (the replica left confirms alone after a failover).

Each run prints its figures and appends them to tests/artifacts/chaos-figures.txt.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from tests.chaos.failover_stack import FailoverStack, failover_stack
from tests.chaos.failover_traffic import Figures, Target, Traffic, figures
from tests.chaos.harness import ARTIFACTS, FIGURES_FILE
from tests.support import netns
from tests.support.sentinel import Timings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

#: Why partitions cannot run here (None: they can).
NO_NETNS = netns.available()
DOWN_AFTER_MS = 1000
TIMINGS = {"down_after_ms": DOWN_AFTER_MS, "failover_timeout_ms": 2000}
DRAIN_LIMIT = 90.0
#: Seconds without a new delivery after which the drain stops waiting for missing events
#: (longer than the longest retry interval, 1 s, and a worker's lease, 2 s + 10 s).
QUIET = 15.0

Chaos = Callable[[FailoverStack], Awaitable[None]]


async def _fault(stack: FailoverStack, fault: Callable[..., object], *args: float) -> None:
    await asyncio.to_thread(fault, *args)
    await asyncio.sleep(2.0)  # the stream runs undisturbed between faults


def run(
    tmp_path: Path,
    name: str,
    ack: int | str,
    timings: Timings,
    chaos: Chaos,
    count: int,
    rate: float,
    replicas: int = 1,
) -> Figures:
    """One run: start the stack, stream `count` events at `rate` with `chaos`, reconcile."""
    if NO_NETNS:
        print(f"\nnetwork namespaces unavailable ({NO_NETNS}): running on loopback, no partition")
    with failover_stack(tmp_path, ack, timings, NO_NETNS is None, replicas) as stack:
        stack.network_up()
        target = Target(stack.gateway)
        with target:
            stack.start(target.url)
            traffic = Traffic(stack)

            async def both() -> None:
                await asyncio.gather(traffic.run(count, rate), chaos(stack))

            started = time.monotonic()
            asyncio.run(both())
            stream_s = time.monotonic() - started
            drain_started = time.monotonic()

            wait_drained(traffic, target)
            drain_s = time.monotonic() - drain_started
            result = figures(name, traffic, target, count, stream_s, drain_s)
            alive = stack.processes_alive()
        _publish(result)
        _keep_logs(tmp_path, name)
        assert all(alive.values()), f"{alive}\n{stack.outputs()}"  # nobody restarted by hand
        return result


def wait_drained(traffic: Traffic, target: Target) -> None:
    """Until every acknowledged event arrived, or nothing arrived for QUIET s (a loss: the
    primary-acknowledged run has them), at most DRAIN_LIMIT s."""
    deadline = time.monotonic() + DRAIN_LIMIT
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        delivered = target.delivered()
        if all(delivered[i] for i in traffic.acked):
            return
        if len(delivered) != seen:
            seen, quiet_since = len(delivered), time.monotonic()
        elif time.monotonic() - quiet_since > QUIET:
            return
        time.sleep(0.25)


def _keep_logs(workdir: Path, name: str) -> None:
    """Copy the run's logs to tests/artifacts/chaos-logs/<run>/ (latest run of each only)."""
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:60]
    kept = ARTIFACTS / "chaos-logs" / f"sentinel-{slug}"
    shutil.rmtree(kept, ignore_errors=True)
    kept.mkdir(parents=True)
    for log in [*workdir.glob("*.log"), *workdir.glob("redis/*/*.log")]:
        shutil.copy2(log, kept / log.name)


def _publish(result: Figures) -> None:
    text = result.table()
    print("\n" + text)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with FIGURES_FILE.open("a") as out:
        out.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}]\n{text}\n\n")


async def replica_acknowledged_chaos(stack: FailoverStack) -> None:
    """5 primary kills, 2 partitions (namespaces only), a Sentinel, the replica, everything."""
    await asyncio.sleep(3.0)
    for i in range(5):
        await _fault(stack, stack.kill_primary)
        if i in (1, 3) and stack.network is not None:
            await _fault(stack, stack.partition_primary, 2.0)
    await _fault(stack, stack.kill_sentinel, 2.0)
    await _fault(stack, stack.kill_replica, 2.0)
    await _fault(stack, stack.restart_redis_side, 1.0)


async def primary_acknowledged_chaos(stack: FailoverStack) -> None:
    """2 primary kills and a partition (namespaces only)."""
    await asyncio.sleep(3.0)
    await _fault(stack, stack.kill_primary)
    if stack.network is not None:
        await _fault(stack, stack.partition_primary, 3.0)
    await _fault(stack, stack.kill_primary)


def test_replica_acknowledged_intake_loses_nothing_across_failovers(tmp_path: Path) -> None:
    timings = Timings(**TIMINGS, min_replicas_to_write=1, min_replicas_max_lag=10)
    name = "RELAY_ACK_REPLICAS=1, min-replicas-to-write 1"
    result = run(tmp_path, name, 1, timings, replica_acknowledged_chaos, count=5000, rate=50.0)
    assert result.lost == 0, result.table()
    assert result.non_202["once"] == 0, result.table()  # the spool took every one
    kills = [f for f in result.faults if f.what.startswith("SIGKILL primary")]
    assert len(kills) == 5
    assert result.acknowledged >= 4500, result.table()
    if NO_NETNS is None:
        assert sum(1 for f in result.faults if f.what.startswith("partition")) == 2


def test_primary_acknowledged_intake_measures_what_a_failover_loses(tmp_path: Path) -> None:
    timings = Timings(**TIMINGS)
    name = "RELAY_ACK_REPLICAS=0, no min-replicas-to-write"
    result = run(tmp_path, name, 0, timings, primary_acknowledged_chaos, count=2000, rate=50.0)
    # No claim on `lost`: this run measures it (docs/guarantees.md quotes the figures).
    assert result.acknowledged > 0
    assert result.non_202["once"] == 0, result.table()


async def two_replica_chaos(stack: FailoverStack) -> None:
    """A partition and a primary kill with two replicas: one stays with the new primary."""
    await asyncio.sleep(3.0)
    if stack.network is not None:
        await _fault(stack, stack.partition_primary, 2.0)
    await _fault(stack, stack.kill_primary)


def assert_kept_going(result: Figures) -> None:
    """Every fault was a failover, after which intake was back within the Sentinels' own time
    to elect plus 2 s, and deliveries within 2 s."""
    for fault in result.faults:
        assert fault.election_s is not None
        assert fault.intake_gap_s <= fault.election_s + 2.0, result.table()
        assert fault.resumed_s is not None, result.table()
        assert fault.resumed_s <= 2.0, result.table()


def test_two_replicas_keep_intake_and_deliveries_going_through_a_failover(tmp_path: Path) -> None:
    timings = Timings(**TIMINGS, min_replicas_to_write=1, min_replicas_max_lag=10)
    name = "RELAY_ACK_REPLICAS=1, min-replicas-to-write 1, two replicas"
    result = run(tmp_path, name, 1, timings, two_replica_chaos, count=1500, rate=50.0, replicas=2)
    # No claim on `lost`: with more replicas than RELAY_ACK_REPLICAS a write one replica
    # confirmed can be lost when Sentinel promotes the other (docs/guarantees.md quotes it).
    assert result.non_202["once"] == 0, result.table()
    assert_kept_going(result)


def test_two_replicas_acknowledged_by_all_lose_nothing_and_keep_going(tmp_path: Path) -> None:
    timings = Timings(**TIMINGS, min_replicas_to_write=1, min_replicas_max_lag=10)
    name = "RELAY_ACK_REPLICAS=all, min-replicas-to-write 1, two replicas"
    result = run(
        tmp_path, name, "all", timings, two_replica_chaos, count=1500, rate=50.0, replicas=2
    )
    assert result.lost == 0, result.table()
    assert result.non_202["once"] == 0, result.table()
    assert_kept_going(result)


async def partition_chaos(stack: FailoverStack) -> None:
    """2 primary kills and 2 partitions."""
    await asyncio.sleep(3.0)
    for _ in range(2):
        await _fault(stack, stack.kill_primary)
        await _fault(stack, stack.partition_primary, 2.0)


@pytest.mark.skipif(NO_NETNS is not None, reason=f"partitions need namespaces: {NO_NETNS}")
def test_replica_acknowledged_intake_without_min_replicas_keeps_delivering(tmp_path: Path) -> None:
    name = "RELAY_ACK_REPLICAS=1, no min-replicas-to-write"
    result = run(tmp_path, name, 1, Timings(**TIMINGS), partition_chaos, count=2000, rate=50.0)
    assert result.lost == 0, result.table()
    assert result.non_202["once"] == 0, result.table()
    partitions = [f for f in result.faults if f.what.startswith("partition")]
    assert len(partitions) == 2
    for fault in partitions:
        # Deliveries go on on the new primary while the old one is cut off: with
        # min-replicas-to-write 1 they waited 12 s or more, for the old primary to come back as
        # a replica. The bound is loose on purpose (a loaded CI machine): the figure is printed.
        assert fault.resumed_s is not None, result.table()
        assert fault.resumed_s < 6.0, result.table()


def test_every_online_replica_acknowledged_through_the_full_schedule(tmp_path: Path) -> None:
    """Issue 16's whole schedule (5 SIGKILLs, 2 partitions, a Sentinel, a replica, the whole
    Redis side) with two replicas and RELAY_ACK_REPLICAS=all: the setting meant to keep both
    nothing lost and intake going, each failover within the bounds of assert_kept_going. Times
    are printed (the Guarantees page quotes them)."""
    name = "RELAY_ACK_REPLICAS=all, two replicas, no min-replicas-to-write"
    result = run(
        tmp_path, name, "all", Timings(**TIMINGS), replica_acknowledged_chaos,
        count=5000, rate=50.0, replicas=2,
    )  # fmt: skip
    assert result.lost == 0, result.table()
    assert result.non_202["once"] == 0, result.table()
    assert len([f for f in result.faults if f.what.startswith("SIGKILL primary")]) == 5
    # Issue 16's goals per failover: intake back within the election + 2 s (the replica left
    # confirms alone; a commit stalled on a replaced primary is given up), deliveries within 2 s.
    assert_kept_going(
        replace(result, faults=tuple(f for f in result.faults if f.election_s is not None))
    )
