"""A worker killed with SIGKILL mid-delivery loses nothing: the delivery is attempted again.

The delivery it held stays in its target's due set, leased until timeout + LEASE_MARGIN after
the claim; another worker takes it again once the lease ends, not before.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
import redis

from relay.store import keys
from relay.store.deliveries import LEASE_MARGIN, attempt_records
from tests.support.processes import post, relay_env, relay_processes, wait_until
from tests.support.seed_events import routes_toml
from tests.support.targets import TargetServer
from worker import jobs

#: About 20 s a case (each waits out a kill and a lease).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.mark.parametrize(
    ("kill_after", "path"),
    [
        # Killed inside the kick's inline wait: the kick dies with the worker (kicks are not
        # re-run); the delivery comes back when its lease ends.
        (0.0, "/delay/k/4"),
        # Killed after the kick left the attempt on the background loop and returned: the
        # delivery comes back the same way, when its lease ends.
        (jobs.INLINE_BUDGET + 1.0, "/delay/k/3"),
    ],
    ids=["inside-the-job", "after-the-job"],
)
def test_sigkill_mid_delivery_still_delivers(
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    targets: TargetServer,
    kill_after: float,
    path: str,
) -> None:
    routes = tmp_path / "routes.toml"
    timeout = 5
    routes.write_text(routes_toml({"k": {"url": targets.url(path), "timeout": timeout}}))
    with relay_processes(tmp_path, relay_env(redis_url, routes)) as procs:
        _, base = procs.serve()
        first = procs.worker("--maintenance-interval", "2")
        body = b'{"must": "arrive"}'
        posted = time.time()
        status, answer = post(
            f"{base}/hooks/shop", body, {"content-type": "application/json", "x-event-type": "a.b"}
        )
        assert status == 202
        event_id = orjson.loads(answer)["id"]

        assert wait_until(lambda: len(targets.received) == 1, 20)
        time.sleep(kill_after)
        first.kill()  # mid-delivery: the target has the request, the answer goes nowhere
        state = redis_client.hget(keys.event_key(event_id), "s:k")
        assert state == b"pending"  # nothing was recorded: the outcome was lost with the worker
        # Still in the due set, leased (claimed after the POST): due again when the lease ends.
        lease_end = redis_client.zscore(keys.due_key("k"), event_id)
        assert lease_end is not None
        assert lease_end >= posted + timeout + LEASE_MARGIN

        procs.worker("--maintenance-interval", "2")

        def delivered() -> bool:
            return redis_client.hget(keys.event_key(event_id), "s:k") == b"delivered"

        assert wait_until(delivered, 120, 0.25), redis_client.hgetall(keys.event_key(event_id))

    received = targets.by_name("k")
    assert len(received) >= 2
    assert received[1].at >= lease_end  # not attempted again while the lease held
    assert {r.headers["webhook-id"] for r in received} == {event_id}
    assert all(r.body == body for r in received)
    records = attempt_records(redis_client, event_id)
    assert [r["outcome"] for r in records] == ["delivered"]
    assert redis_client.zscore(keys.due_key("k"), event_id) is None  # over: off the due set
