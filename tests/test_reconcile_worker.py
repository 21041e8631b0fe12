"""The workers' reconciliation loop end to end: real `relay worker` processes, the fake Fellow API.

Two worker processes look for a due pass every 0.2 s (RELAY_RECONCILE_TICK). The first pass
(a baseline) happens on its own; while it is not due again neither process runs another, and
when `every` has passed (the pass record is moved back in time, rather than waiting a minute)
exactly one of them runs the next one.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from relay.store import keys
from relay.store.reconcile import PassOutcome, read_pass, read_stats
from tests.support.fellow_api import KEY, FellowApiServer
from tests.support.processes import relay_env, relay_processes, wait_until

pytestmark = pytest.mark.needs_redis_server

ROUTES = """
[sources.fellow]
kind = "form"
token_env = "FELLOW_TOKEN"

[sources.fellow.reconcile]
api = "{api}"
api_key_env = "FELLOW_API_KEY"
every = "1m"

[targets.crm]
url = "http://127.0.0.1:9/crm"

[[routes]]
source = "fellow"
events = ["*"]
targets = ["crm"]
"""
TICK = 0.2
#: Ticks of each worker given to a mistaken second pass, once one has run.
QUIET_TICKS = 10


def course_listings(api: FellowApiServer) -> int:
    """Passes the fake API saw: each lists the courses once from offset 0."""
    return sum(p.startswith("/api/v1/courses?offset=0&") for p in list(api.paths))


def passes(conn: redis.Redis) -> dict[PassOutcome, int]:
    return {o: n for o, n in read_stats(conn, "fellow").passes.items() if n}


def worker_lines(logs: list[str], event: str) -> int:
    return sum(text.count(f'"event":"{event}"') for text in logs)


@pytest.mark.timeout(90)
def test_two_workers_run_each_due_pass_once(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, fellow_api: FellowApiServer
) -> None:
    fellow_api.enrol("course", "7", "m1")
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES.format(api=fellow_api.url))
    env = relay_env(
        redis_url,
        routes,
        FELLOW_TOKEN="fellow-token-0123456789abcdef",
        FELLOW_API_KEY=KEY,
        RELAY_RECONCILE_TICK=str(TICK),
    )
    with relay_processes(tmp_path, env) as procs:
        workers = [procs.worker(), procs.worker()]

        # The first pass happens on schedule, by one of the two.
        assert wait_until(lambda: passes(redis_client), 20, 0.05), workers[0].output()
        time.sleep(QUIET_TICKS * TICK)
        assert passes(redis_client) == {PassOutcome.BASELINE: 1}
        assert course_listings(fellow_api) == 1
        first = read_pass(redis_client, "fellow")

        # `every` later (the record moved back a minute): the next pass, again exactly once.
        fellow_api.enrol("course", "7", "m2")
        redis_client.hset(keys.reconcile_pass_key("fellow"), "at", repr(first.at - 61))
        assert wait_until(lambda: PassOutcome.OK in passes(redis_client), 20, 0.05)
        time.sleep(QUIET_TICKS * TICK)
        assert passes(redis_client) == {PassOutcome.BASELINE: 1, PassOutcome.OK: 1}
        assert course_listings(fellow_api) == 2
        second = read_pass(redis_client, "fellow")
        assert second.outcome == PassOutcome.OK
        assert second.at > first.at
        # The new enrolment waits inside grace (5m by default): seen, not synthesized yet.
        assert redis_client.hlen(keys.reconcile_pending_key("fellow")) == 1
        assert all(w.alive() for w in workers)

        # Each pass logs its summary just after recording it: wait for the line, not a sleep.
        def done() -> int:
            return worker_lines([w.output() for w in workers], "reconcile: pass done")

        assert wait_until(lambda: done() >= 2, 20)
        assert done() == 2
        # The passes released the lock. Checked while the workers run: every tick of each
        # worker takes it for a moment (its due check under the lock), so seen free once is
        # enough; a pass's lock left behind would stay taken (its TTL is a minute). Not after
        # the with block: that SIGKILLs the workers, maybe in the middle of a due check, and a
        # killed holder leaves the lock until its TTL, as designed (worker/fellow/lock.py).
        lock = keys.reconcile_lock_key("fellow")
        assert wait_until(lambda: not redis_client.exists(lock), 10, 0.01)
