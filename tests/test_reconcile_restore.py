"""The issue's headline goal: Fellow sends 1,000 webhooks of all six types while relay is
partly unreachable; the passes restore every missed one, and none that arrived (on time, late
inside grace, or after its event was synthesized) is delivered twice.

Each membership changes at most once between passes (or enrols and completes): a change the API
cannot show (enrolled and removed again between two passes) cannot be restored by any pass.

In-process: the receiver app on a loopback server, the fake Fellow API, the real delivery job.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest
import redis

from relay.config.loading import parse_routes
from relay.config.model import RouteTable
from relay.config.settings import Settings
from relay.receiver.app import create_app
from tests.support.fellow_api import KEY, FellowApiServer
from tests.support.receiver import receiver_server
from tests.support.targets import TargetServer
from worker import jobs
from worker.fellow.reconcile import run_pass

pytestmark = [pytest.mark.needs_redis_server, pytest.mark.slow]

TOKEN = "fellow-token-0123456789abcdef"
ROUTES = """
[sources.fellow]
kind = "form"
token_env = "FELLOW_TOKEN"
[sources.fellow.reconcile]
api = "{api}"
api_key_env = "FELLOW_API_KEY"
grace = "5m"
page_size = 100
concurrency = 8

[targets.crm]
url = "{targets}/ok/crm"

[[routes]]
source = "fellow"
events = ["*"]
targets = ["crm"]
"""
T0 = 1_800_000_000.0


def fellow_line(kind: str, container: str, member: str, action: str) -> str:
    prefix = "COURSEMEMBER" if kind == "course" else "PROGRAMMEMBER"
    return f"{kind}Id={container}&memberId={member}&event={prefix}_{action}"


def stream(fellow_api: FellowApiServer, rng: random.Random, total: int) -> list[str]:
    """Change the API as Fellow would and return the webhooks it sends, `total` of them."""
    sent: list[str] = []
    existing = [(k, c, m) for (k, c), members in fellow_api.state.items() for m in members]
    rng.shuffle(existing)
    fresh = 0
    while len(sent) < total:
        choice = rng.choice(("create", "create_complete", "complete", "delete"))
        if choice in ("complete", "delete") and existing:
            kind, container, member = existing.pop()
            if choice == "complete" and not fellow_api.state[(kind, container)][member]:
                fellow_api.enrol(kind, container, member, completed=True)
                sent.append(fellow_line(kind, container, member, "COMPLETED"))
            elif choice == "delete":
                fellow_api.remove(kind, container, member)
                sent.append(fellow_line(kind, container, member, "DELETED"))
            continue
        kind = rng.choice(("course", "program"))
        container, member = f"{kind[0]}{rng.randrange(8)}", f"new{fresh}"
        fresh += 1
        fellow_api.enrol(kind, container, member)
        sent.append(fellow_line(kind, container, member, "CREATED"))
        if choice == "create_complete" and len(sent) < total:
            fellow_api.enrol(kind, container, member, completed=True)
            sent.append(fellow_line(kind, container, member, "COMPLETED"))
    return sent


@pytest.mark.timeout(240)
async def test_receiver_down_for_1000_webhooks_restores_all_and_doubles_none(
    redis_client: redis.Redis,
    fellow_api: FellowApiServer,
    targets: TargetServer,
    use_routes: Any,
    aiohttp_client: Any,
    redis_url: str,
) -> None:
    rng = random.Random(18)
    text = ROUTES.format(api=fellow_api.url, targets=targets.url("").rstrip("/"))
    table: RouteTable = parse_routes(
        text, "routes.toml", {"FELLOW_TOKEN": TOKEN, "FELLOW_API_KEY": KEY}
    )
    client = await aiohttp_client(
        await receiver_server(create_app(Settings(redis_url=redis_url), table))
    )
    for n in range(400):
        kind = "course" if n % 2 else "program"
        fellow_api.enrol(kind, f"{kind[0]}{n % 8}", f"old{n}", completed=n % 5 == 0)

    def reconcile(now: float) -> Any:
        return run_pass(redis_client, table, table.sources["fellow"], retention=86400, now=now)

    assert (await asyncio.to_thread(reconcile, T0)).baseline
    sent = stream(fellow_api, rng, 1000)
    assert {line.rsplit("_", 1)[1] for line in sent} == {"CREATED", "COMPLETED", "DELETED"}
    assert len({line.split("&event=")[1] for line in sent}) == 6
    # lost: never arrives; late: inside grace; after: once its event was already synthesized.
    fate = [rng.choices(("lost", "on_time", "late", "after"), (4, 4, 1, 1))[0] for _ in sent]
    assert all(fate.count(f) > 50 for f in ("lost", "on_time", "late", "after"))

    async def post(line: str) -> None:
        reply = await client.post(
            f"/hooks/fellow/{TOKEN}",
            data=line.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert reply.status == 202

    for line, f in zip(sent, fate, strict=True):
        if f == "on_time":
            await post(line)
    first = await asyncio.to_thread(reconcile, T0 + 60)
    assert first.synthesized == ()  # everything missing is still inside grace
    for line, f in zip(sent, fate, strict=True):
        if f == "late":
            await post(line)
    second = await asyncio.to_thread(reconcile, T0 + 60 + 300)
    for line, f in zip(sent, fate, strict=True):
        if f == "after":
            await post(line)
    third = await asyncio.to_thread(reconcile, T0 + 60 + 900)
    assert third.synthesized == ()

    use_routes(table)
    await asyncio.to_thread(jobs.deliver_due)
    delivered = Counter(r.body.decode() for r in targets.received)
    lost = [line for line, f in zip(sent, fate, strict=True) if f in ("lost", "after")]
    assert len(second.synthesized) == len(lost)
    assert set(delivered) == set(sent), "100% restored"
    assert max(delivered.values()) == 1, "0 doubles"
    reconciled = {r.body.decode() for r in targets.received if r.headers.get("x-relay-reconciled")}
    assert reconciled == set(lost)  # byte for byte Fellow's lines, field order included
    stats = redis_client.hgetall("relay:stats:source:fellow")
    assert int(stats[b"duplicates"]) == fate.count("after")
