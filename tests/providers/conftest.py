"""The provider conformance suite's harness: one real relay per test module.

Each test module declares `ROUTES`, a routes.toml for its provider modelled on the shipped one,
with `{targets}` where the loopback target server's address goes. The module-scoped `relay`
fixture starts, once per module, a private redis-server (the session server is flushed before
every test, which would pull the floor from under a worker that lives for a whole module), the
loopback target server (tests/support/targets.py), `relay serve` and `relay worker`
(tests/support/processes.py). Tests of a module share that state, so every test works on the
events it sent itself (by id) and compares counters before and after, never absolute totals.

Requests go out through `http.client`, which adds no Content-Type of its own (urllib would add a
form content type), so each provider's wire form is exactly what the test writes.
"""

from __future__ import annotations

import base64
import http.client
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
import redis
from standardwebhooks.webhooks import Webhook

from relay.core.states import DeliveryState
from relay.store import keys
from relay.store.records import Event
from tests.support.processes import Processes, relay_env, wait_until
from tests.support.redis_server import RedisServer, redis_server_binary
from tests.support.stored import indexed
from tests.support.targets import Received, TargetServer

SOURCES = ("elucidat", "digitalchalk", "fellow", "learn365", "strigo")
#: Path tokens: one URL segment of at least 16 characters, as relay requires.
TOKENS = {name: f"{name}-tok-3f9c2a7e51b8d604" for name in SOURCES}


def whsec(seed: bytes) -> str:
    """A Standard Webhooks secret (`whsec_<base64 key>`) from a fixed key."""
    return "whsec_" + base64.b64encode(seed).decode()


#: Microsoft's known-answer secret for ms-signature (PROVIDERS.md), 48 characters.
LEARN365_SECRET = "123456789012345678901234567890123456789012345678"
#: Signing secrets of the targets; the crm one is the Standard Webhooks known-answer secret.
SIGNING = {
    "CRM_WHSEC": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "ANALYTICS_WHSEC": whsec(b"analytics-signing-key-0123456789"),
    "ARCHIVE_WHSEC": whsec(b"lms-archive-signing-key-01234567"),
}

#: Delivery states after which nothing more happens to a delivery.
SETTLED = frozenset(
    {DeliveryState.DELIVERED, DeliveryState.DEAD, DeliveryState.GONE, DeliveryState.DUPLICATE}
)
#: A bound on waiting for deliveries on a busy machine; not a performance claim.
SETTLE_TIMEOUT = 45.0


@dataclass(frozen=True)
class Answer:
    """What relay answered one request."""

    status: int
    headers: Mapping[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return orjson.loads(self.body)

    def event_ids(self) -> list[str]:
        """The event ids of a 202 answer, in order."""
        return [str(e["id"]) for e in self.json()["events"]]


@dataclass(frozen=True)
class Recorded:
    """What relay recorded so far: rejected requests must leave these unchanged."""

    events: int
    unrouted: int
    received: Mapping[str, int]  # per source


class Relay:
    """A running relay (receiver, worker, Redis) with loopback targets, for one test module."""

    def __init__(self, base: str, conn: redis.Redis, targets: TargetServer) -> None:
        self.host, _, port = base.removeprefix("http://").partition(":")
        self.port = int(port)
        self.redis = conn
        self.targets = targets
        self.tokens = dict(TOKENS)
        self.accepted: set[str] = set()  # every event id a 202 named

    # --- requests ---------------------------------------------------------------------------

    def path(self, source: str, token: str | None = "", query: str = "") -> str:
        """`/hooks/<source>/<token>`: the source's own token by default, none with None.

        A source named after a provider (`digitalchalk-dd`) shares that provider's token.
        """
        token = self.tokens[source.split("-", 1)[0]] if token == "" else token
        path = f"/hooks/{source}" + (f"/{token}" if token is not None else "")
        return path + (f"?{query}" if query else "")

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """One request as given; http.client adds only Host, Content-Length and Accept-Encoding."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            response = conn.getresponse()
            answer = Answer(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            conn.close()
        if answer.status == 202:
            self.accepted.update(answer.event_ids())
        return answer

    def send(
        self,
        source: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        method: str = "POST",
        token: str | None = "",
    ) -> Answer:
        """A provider's request to its hook URL."""
        return self.request(method, self.path(source, token), body, headers)

    def accept(
        self, source: str, body: bytes, headers: Mapping[str, str], *, method: str = "POST"
    ) -> Answer:
        """A request that must be acknowledged with 202 and well-formed JSON."""
        answer = self.send(source, body, headers, method=method)
        assert answer.status == 202, (answer.status, answer.body)
        assert answer.headers["content-type"].startswith("application/json")
        reply = answer.json()
        assert reply["id"].startswith("evt_")
        return answer

    # --- what relay recorded ----------------------------------------------------------------

    def recorded(self) -> Recorded:
        """Counts of events, unrouted events and received requests per source."""
        received = {}
        for source in SOURCES:
            value = self.redis.hget(keys.source_stats_key(source), "received")
            received[source] = int(value or 0)
        return Recorded(
            events=len(indexed(self.redis)),
            unrouted=int(self.redis.zcard(keys.UNROUTED)),
            received=received,
        )

    def stored(self, event_id: str) -> Event:
        """The event as the receiver stored it."""
        data = cast(dict[bytes, bytes], self.redis.hgetall(keys.event_key(event_id)))
        assert data, f"event {event_id} is not in Redis"
        return Event.from_redis(event_id, data)

    def is_unrouted(self, event_id: str) -> bool:
        """Whether the event is in the unrouted index."""
        return self.redis.zscore(keys.UNROUTED, event_id) is not None

    def states(self, event_id: str) -> dict[str, str]:
        """Delivery state per target of one event."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(keys.event_key(event_id)))
        return {k.decode()[2:]: v.decode() for k, v in raw.items() if k.startswith(b"s:")}

    def source_counter(self, source: str, name: str) -> int:
        """One counter of a source (received, duplicates, unrouted)."""
        return int(self.redis.hget(keys.source_stats_key(source), name) or 0)

    # --- deliveries -------------------------------------------------------------------------

    def settle(self, *event_ids: str) -> None:
        """Wait (bounded) until every delivery of these events is over, whatever its outcome."""

        def over() -> bool:
            for event_id in event_ids:
                stored = self.redis.hget(keys.event_key(event_id), "targets")
                targets = orjson.loads(stored) if stored else None
                states = self.states(event_id)
                if targets is None or set(states) != set(targets):
                    return False
                if not set(states.values()) <= SETTLED:
                    return False
            return True

        assert wait_until(over, SETTLE_TIMEOUT, 0.05), {i: self.states(i) for i in event_ids}

    def deliveries(self, event_id: str) -> dict[str, list[Received]]:
        """Requests the targets received for one event, by target name."""
        found: dict[str, list[Received]] = {}
        for received in list(self.targets.received):
            if received.headers.get("webhook-id") == event_id:
                found.setdefault(received.name, []).append(received)
        return found

    def assert_only_accepted_delivered(self) -> None:
        """Every request any target received names an event that some 202 acknowledged."""
        strays = [
            (r.name, r.headers.get("webhook-id"))
            for r in list(self.targets.received)
            if r.headers.get("webhook-id") not in self.accepted
        ]
        assert strays == []


def assert_delivery(
    received: Received,
    *,
    event_id: str,
    source: str,
    event_type: str,
    body: bytes,
    content_type: str,
    secret: str | None,
) -> None:
    """One delivery as README "What a target receives" promises it."""
    headers = received.headers
    assert received.body == body
    assert headers["content-type"] == content_type
    assert headers["webhook-id"] == event_id
    assert headers["x-relay-source"] == source
    assert headers["x-relay-event"] == event_type
    assert headers["x-relay-attempt"] == "1"
    assert headers["webhook-timestamp"].isdigit()
    assert headers["user-agent"].startswith("relay/")
    if secret is None:
        assert "webhook-signature" not in headers
    else:
        # The downstream app's own verifier: raises when the signature does not verify.
        Webhook(secret).verify(received.body, dict(headers), json_parse=False)


def assert_error(answer: Answer, status: int, message: str) -> None:
    """A rejection: the exact status, and relay's JSON error naming the problem."""
    assert answer.status == status, (answer.status, answer.body)
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()
    assert error["status"] == status
    assert message in error["error"], error


@pytest.fixture(scope="module")
def relay(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Relay]:
    """A real relay for the module: redis-server, targets, `relay serve`, `relay worker`."""
    if redis_server_binary() is None:
        pytest.skip("needs redis-server (set RELAY_REQUIRE_REDIS_SERVER=1 to make this fail)")
    routes_template: str = request.module.ROUTES
    workdir: Path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    server = RedisServer(workdir / "redis")
    server.start()
    procs: Processes | None = None
    conn = redis.Redis.from_url(server.url)
    try:
        with TargetServer() as targets:
            routes = workdir / "routes.toml"
            routes.write_text(routes_template.replace("{targets}", targets.url("")))
            env = relay_env(
                server.url,
                routes,
                **{f"{name.upper()}_TOKEN": token for name, token in TOKENS.items()},
                LEARN365_SECRET=LEARN365_SECRET,
                RELAY_SPOOL_DIR=str(workdir / "spool"),
                **SIGNING,
            )
            procs = Processes(workdir, env)
            _, base = procs.serve()
            procs.worker()
            yield Relay(base, conn, targets)
            # Nothing in this suite should make relay log an error: a bug swallowed by a retry
            # or a 202 would otherwise pass unseen.
            trouble = [
                line
                for proc in procs.started
                for line in proc.output().splitlines()
                if '"level":"error"' in line or '"level":"critical"' in line or "Traceback" in line
            ]
            assert trouble == [], "relay logged errors:\n" + "\n".join(trouble[:20])
    finally:
        if procs is not None:
            procs.cleanup()
        conn.close()
        server.stop()
