"""`rediss+sentinel://` against a real TLS topology: relay's own clients and processes.

The topology is tests/support/sentinel.py's with `tls=True`: a primary, a replica and three
Sentinels, every one listening on a TLS port only (`port 0`), replication and Sentinel's own
links over TLS (`tls-replication yes`), and clients asked for a certificate (Redis's default
`tls-auth-clients yes`), so the URL's ssl_ca_certs, ssl_certfile and ssl_keyfile all matter.
The certificates come from a throwaway CA made per topology (tests/support/tls.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import orjson
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from relay.store import clients, keys
from tests.support.processes import post, relay_env, relay_processes, wait_until
from tests.support.sentinel import MakeTopology, SentinelTopology
from tests.support.targets import TargetServer
from tests.support.tls import TlsSet, make_tls
from tests.test_sentinel import E2E_ROUTES  # the same one-source, one-target routes

pytestmark = pytest.mark.needs_redis_server

JSON = {"content-type": "application/json", "x-event-type": "thing"}


@pytest.fixture
def topology(make_topology: MakeTopology) -> SentinelTopology:
    """A started TLS-only Sentinel topology, killed after the test."""
    return make_topology(tls=True)


def tls_of(topology: SentinelTopology) -> TlsSet:
    assert topology.tls is not None
    return topology.tls


def untrusting_url(topology: SentinelTopology, directory: Path) -> str:
    """The topology's URL trusting another throwaway CA instead of the topology's own."""
    other = make_tls(directory)
    return topology.url_with(dataclasses.replace(tls_of(topology).client, ca=other.client.ca))


def relay_command(
    args: list[str], env: Mapping[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- the client factory ---------------------------------------------------------------------


async def test_sync_and_async_clients_write_to_the_primary_over_tls(
    topology: SentinelTopology,
) -> None:
    assert topology.url.startswith("rediss+sentinel://")
    for n, bounds in enumerate((clients.OPERATOR, clients.WORKER, clients.intake(1.0))):
        with clients.sync_client(topology.url, bounds) as client:
            assert client.set(f"sync-{n}", "1")
            assert client.get(f"sync-{n}") == b"1"
    aclient = clients.async_client(topology.url, clients.intake(1.0))
    try:
        assert await aclient.set("async", "1")
        assert await aclient.get("async") == b"1"
        assert await aclient.wait(1, 2000) == 1  # replicated, over TLS too
    finally:
        await aclient.aclose()
    primary, replica = topology.data
    assert topology.primary() is primary
    with primary.client() as direct:
        assert direct.exists("sync-0", "sync-1", "sync-2", "async") == 4
    with replica.client() as direct:
        assert direct.get("async") == b"1"
    # Nothing listens in plain text: whatever answered above answered over TLS.
    for node in [*topology.data, *topology.sentinels]:
        host, port = node.address
        plain = redis.Redis(
            host, port, socket_connect_timeout=1, socket_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        with plain, pytest.raises(redis.RedisError):
            plain.ping()


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_both_clients_find_the_new_primary_over_tls_after_a_kill(
    topology: SentinelTopology,
) -> None:
    sync = clients.sync_client(topology.url, clients.WORKER)
    aclient = clients.async_client(topology.url, clients.OPERATOR)
    old = topology.primary()
    try:
        assert sync.set("before", "1")
        assert await aclient.set("async-before", "1")
        assert sync.wait(1, 2000) == 1  # on the replica before the primary dies
        old.kill()
        started = time.monotonic()
        # One call each, re-sent with backoff (WORKER: about 30 s, OPERATOR: about 5 s) until the
        # Sentinels, asked over TLS, name the promoted replica; both connections had the old one.
        assert await asyncio.to_thread(sync.set, "after", "1")
        assert await asyncio.wait_for(aclient.set("async-after", "1"), 30)
        took = time.monotonic() - started
        new, _ = topology.wait_new_primary(old, timeout=30)
        with new.client() as direct:
            assert direct.exists("before", "async-before", "after", "async-after") == 4
    finally:
        sync.close()
        await aclient.aclose()
    assert new is not old
    print(f"\nwrites went through {took:.1f} s after the TLS primary was killed")


async def test_a_wrong_ca_fails_with_the_reason(topology: SentinelTopology, tmp_path: Path) -> None:
    url = untrusting_url(topology, tmp_path / "other-ca")
    sync = clients.sync_client(url, clients.OPERATOR)
    aclient = clients.async_client(url, clients.OPERATOR)
    try:
        sync_error, async_error = await asyncio.gather(
            asyncio.to_thread(sync.set, "untrusted", "1"),
            aclient.set("async-untrusted", "1"),
            return_exceptions=True,
        )
    finally:
        sync.close()
        await aclient.aclose()
    sentinels = [f"{host}:{port}" for host, port in (s.address for s in topology.sentinels)]
    for error in (sync_error, async_error):
        assert isinstance(error, redis.ConnectionError), error
        message = str(error)
        # Each Sentinel by address with Python's ssl reason, and a hint at the option to check;
        # not redis-py's repr of every client (`network:ConnectionError` and no reason).
        assert all(address in message for address in sentinels), message
        assert message.count("certificate verify failed") == len(sentinels), message
        assert "ssl_ca_certs" in message
        assert "ConnectionPool" not in message
    with topology.primary().client() as direct:
        assert direct.exists("untrusted", "async-untrusted") == 0


# --- real processes: serve, worker and status over TLS ---------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_serve_worker_and_status_over_tls(
    topology: SentinelTopology, targets: TargetServer, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(E2E_ROUTES.format(url=targets.url("/ok/crm")))
    env = relay_env(topology.url, routes, RELAY_SPOOL_DIR=str(tmp_path / "spool"))
    with relay_processes(tmp_path, env) as procs:
        serve, base = procs.serve()
        worker = procs.worker(wait=False)
        status, body = post(f"{base}/hooks/chalk", b'{"n": 1}', JSON)
        assert status == 202, body
        event_id = orjson.loads(body)["id"]
        with topology.primary().client() as direct:
            assert direct.exists(keys.event_key(event_id)) == 1
        delivered = wait_until(lambda: len(targets.by_name("crm")) >= 1, 30)
        assert delivered, worker.output()[-3000:]
        done = relay_command(["status"], env, tmp_path)
        assert done.returncode == 0, done.stderr
        assert "crm" in done.stdout
        assert serve.alive()
        assert worker.alive()
    refused = relay_command(
        ["status"], {**env, "REDIS_URL": untrusting_url(topology, tmp_path / "other-ca")}, tmp_path
    )
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("relay: cannot reach Redis at rediss+sentinel://"), line
    assert "certificate verify failed" in line
    assert "ssl_ca_certs" in line
