"""Several receivers and several workers, as on several hosts: nothing assumes one of each.

Each `relay serve` and each `relay worker` here is a separate command with its own environment
(its own spool directory, as on its own disk), sharing only Redis, as processes on different
hosts would. Claims are atomic scripts in Redis, the pollers' kicks go through Redis, and each
receiver drains its own spool into whichever Redis primary takes writes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
import redis

from relay.store import keys
from tests.support.processes import post, relay_env, relay_processes, wait_until
from tests.support.redis_server import RedisServer
from tests.support.targets import TargetServer

ROUTES = """
[sources.shop]
kind = "header"
spool = true

[targets.crm]
url = "{url}"
retry = {{ attempts = 5, first = "200ms", max = "500ms" }}

[[routes]]
source = "shop"
targets = ["crm"]
"""
HEADERS = {"content-type": "application/json", "x-event-type": "order.paid"}


def outcomes(log: str) -> Counter[str]:
    """Delivery attempts per outcome, from one worker's JSON log lines."""
    lines = (orjson.loads(line) for line in log.splitlines() if line.startswith("{"))
    return Counter(e["outcome"] for e in lines if e.get("event") == "delivery attempt")


@pytest.mark.timeout(120)
def test_two_worker_hosts_share_the_work_and_take_each_delivery_once(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, targets: TargetServer
) -> None:
    routes = tmp_path / "routes.toml"
    # Every event fails once: its retry is found due by whichever worker's poller looks first.
    routes.write_text(ROUTES.format(url=targets.url("/fail/crm/1")))
    env = relay_env(redis_url, routes)
    count = 200
    with relay_processes(tmp_path, env) as procs:
        _, base = procs.serve()
        first = procs.worker()
        second = procs.worker()  # another host: another command, the same Redis
        ids = []
        for n in range(count):
            status, answer = post(f"{base}/hooks/shop", b'{"n": %d}' % n, HEADERS)
            assert status == 202, answer
            ids.append(orjson.loads(answer)["id"])

        def all_delivered(received: list) -> bool:  # type: ignore[type-arg]
            return sum(1 for r in received if r.status == 200) >= count

        received = targets.wait_for(all_delivered, 60)

        def logged() -> bool:  # a worker logs its attempt once it has recorded it
            return sum(outcomes(p.output())["delivered"] for p in (first, second)) >= count

        wait_until(logged, 10)
        logs = [first.output(), second.output()]
    answered = Counter(r.headers["webhook-id"] for r in received if r.status == 200)
    attempts = Counter(r.headers["webhook-id"] for r in received)
    assert set(answered) == set(ids)
    assert set(answered.values()) == {1}  # each delivered once: no two workers took the same one
    assert set(attempts.values()) == {2}  # the failure, then exactly one retry
    per_worker = [outcomes(log) for log in logs]
    assert all(o["delivered"] > 0 for o in per_worker), per_worker  # both hosts did work
    assert sum(o["delivered"] for o in per_worker) == count
    assert sum(o["retry"] for o in per_worker) == count


@pytest.mark.timeout(120)
def test_every_receiver_drains_its_own_spool_into_redis(
    tmp_path: Path, make_redis: type[RedisServer], targets: TargetServer
) -> None:
    server = make_redis(appendonly=True)
    server.start()
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES.format(url=targets.url("/ok/crm")))
    hosts = []
    with relay_processes(tmp_path, relay_env(server.url, routes)) as procs:
        for name in ("host-a", "host-b"):
            spool = tmp_path / name / "spool"
            procs.env = relay_env(
                server.url, routes, RELAY_SPOOL_DIR=str(spool), RELAY_INTAKE_TIMEOUT="300ms"
            )
            _, base = procs.serve()
            hosts.append((base, spool))
        procs.env = relay_env(server.url, routes)
        worker = procs.worker()
        server.kill()
        spooled: dict[str, list[str]] = {base: [] for base, _ in hosts}
        for n in range(40):
            base, _ = hosts[n % 2]
            status, answer = post(f"{base}/hooks/shop", b'{"n": %d}' % n, HEADERS)
            reply = orjson.loads(answer)
            assert status == 202, answer
            assert reply["spooled"] is True
            spooled[base].append(reply["id"])
        for _, spool in hosts:
            assert any(spool.glob("*/seg-*")), "each receiver spooled on its own disk"
        server.start()

        def delivered(received: list) -> bool:  # type: ignore[type-arg]
            return len(received) >= 40

        received = targets.wait_for(delivered, 60)
        output = worker.output()[-4000:]
    with redis.Redis.from_url(server.url) as conn:
        for ids in spooled.values():
            assert all(conn.exists(keys.event_key(i)) for i in ids)
    got = Counter(r.headers["webhook-id"] for r in received)
    assert set(got) == {i for ids in spooled.values() for i in ids}, output
    assert set(got.values()) == {1}
