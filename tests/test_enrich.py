"""Enrichment (`enrich = "fellow"` on a target): Fellow completions delivered with their API
record, fetched once per event. Real redis-server, the fake Fellow API on loopback
(tests/support/fellow_api.py), real HTTP targets, the real delivery job (worker.jobs)."""

from __future__ import annotations

import argparse
import concurrent.futures
import time
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from standardwebhooks.webhooks import Webhook
from structlog.testing import capture_logs

from relay.cli import check
from relay.config.loading import parse_routes
from relay.config.model import RouteTable
from relay.core.errors import ConfigError
from relay.core.states import DeliveryState
from relay.ops.deliveries import replay_delivery
from relay.store import keys
from relay.store.deliveries import attempt_records
from relay.store.reconcile import Kind
from relay.store.records import Event
from tests.support.fellow_api import KEY, FellowApiServer
from tests.support.processes import wait_until
from tests.support.seed_events import make_event, store_events
from tests.support.stored import due, field
from tests.support.targets import TargetServer, refused_url
from worker import jobs, recording
from worker.fellow.enrich import LOCK_MARGIN, EnrichError, Wanted, lease_allowance
from worker.outcome import next_step
from worker.runtime import Runtime

pytestmark = pytest.mark.needs_redis_server

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ENV = {"FELLOW_TOKEN": "fellow-token-0123456789abcdef", "FELLOW_API_KEY": KEY, "WHSEC": SECRET}
FORM = "application/x-www-form-urlencoded"
ROUTES = """
[sources.fellow]
kind = "form"
token_env = "FELLOW_TOKEN"
call_once = true

[sources.fellow.reconcile]
api = "{api}"
api_key_env = "FELLOW_API_KEY"
timeout = "1s"

[targets.crm]
url = "{targets}/{crm}"
enrich = "fellow"
signing_secret_env = "WHSEC"
retry = {{ attempts = {attempts}, first = "30s", max = "30s" }}

[targets.lms]
url = "{targets}/ok/lms"
enrich = "fellow"
signing_secret_env = "WHSEC"

[targets.plain]
url = "{targets}/ok/plain"

[[routes]]
source = "fellow"
events = ["*"]
targets = ["crm", "lms", "plain"]
"""


@pytest.fixture(autouse=True)
def full_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every retry waits its whole backoff cap: one attempt per kick (as in test_jobs.py)."""
    monkeypatch.setattr(recording, "next_step", partial(next_step, uniform=lambda low, high: high))


def routes(
    fellow_api: FellowApiServer,
    targets: TargetServer,
    *,
    crm: str = "ok/crm",
    attempts: int = 3,
    api: str | None = None,
) -> RouteTable:
    text = ROUTES.format(
        api=api or fellow_api.url,
        targets=targets.url("").rstrip("/"),
        crm=crm,
        attempts=attempts,
    )
    return parse_routes(text, "routes.toml", ENV)


def completion(
    event: str = "COURSEMEMBER_COMPLETED", body: bytes | None = None, targets: tuple[str, ...] = ()
) -> Event:
    """A Fellow webhook as the receiver stores it (a form, no provider headers kept)."""
    if body is None:
        container = "programId=p1" if event.startswith("PROGRAM") else "courseId=7"
        body = f"{container}&memberId=m1&event={event}".encode()
    return make_event(
        targets or ("crm", "lms", "plain"),
        body=body,
        content_type=FORM,
        source="fellow",
        event_type=event,
        headers=(),
    )


def member_requests(api: FellowApiServer) -> list[str]:
    return [p for p in api.paths if p.endswith("member")]


def come_due(conn: redis.Redis, target: str, event_id: str) -> None:
    """Time passes: a delivery waiting for its retry is due now."""
    assert due(conn, target)[event_id] > time.time(), "the delivery was not waiting"
    conn.zadd(keys.due_key(target), {event_id: time.time()}, xx=True)


def last_record(conn: redis.Redis, event_id: str, target: str) -> dict[str, Any]:
    return [r for r in attempt_records(conn, event_id) if r["target"] == target][-1]


# --- what an enriching target receives ------------------------------------------------------


def test_a_completion_is_delivered_as_json_with_its_record_signed_over_that_body(
    redis_client: redis.Redis,
    fellow_api: FellowApiServer,
    targets: TargetServer,
    use_routes: Any,
) -> None:
    fellow_api.enrol("course", "7", "m1", completed=True)
    use_routes(routes(fellow_api, targets))
    event = completion()
    store_events(redis_client, [event], enqueue=False)

    jobs.deliver_due()

    for name in ("crm", "lms"):
        [got] = targets.by_name(name)
        assert got.headers["content-type"] == "application/json"
        assert orjson.loads(got.body) == {
            "courseId": "7",
            "memberId": "m1",
            "event": "COURSEMEMBER_COMPLETED",
            "coursemember": {"completed": True, "score": 80, "success": True},
        }
        # The signature is over the body sent, not over Fellow's form.
        Webhook(SECRET).verify(got.body, dict(got.headers), json_parse=False)
        assert got.headers["webhook-id"] == event.id
        assert got.headers["x-relay-event"] == "COURSEMEMBER_COMPLETED"
        assert field(redis_client, event.id, f"s:{name}") == DeliveryState.DELIVERED
    # Both targets carry the very same bytes; a target without `enrich` gets Fellow's form.
    assert targets.by_name("crm")[0].body == targets.by_name("lms")[0].body
    [plain] = targets.by_name("plain")
    assert plain.body == event.body
    assert plain.headers["content-type"] == FORM
    # Fetched once for the two enriching targets, with the API key, and kept with the event.
    assert member_requests(fellow_api) == ["/api/v1/courses/7/members/m1/coursemember"]
    kept = redis_client.get(keys.enrichment_key(event.id))
    assert orjson.loads(kept or b"") == {"completed": True, "score": 80, "success": True}
    assert 0 < redis_client.ttl(keys.enrichment_key(event.id)) <= 7 * 86400
    assert not redis_client.exists(keys.enrichment_lock_key(event.id))


def test_a_program_completion_carries_its_programmember(
    redis_client: redis.Redis,
    fellow_api: FellowApiServer,
    targets: TargetServer,
    use_routes: Any,
) -> None:
    fellow_api.enrol("program", "p1", "m1", completed=True)
    use_routes(routes(fellow_api, targets))
    event = completion("PROGRAMMEMBER_COMPLETED", targets=("crm",))
    store_events(redis_client, [event], enqueue=False)

    jobs.deliver_due()

    [got] = targets.by_name("crm")
    body = orjson.loads(got.body)
    assert body["programId"] == "p1"
    assert body["programmember"] == {"completed": True, "score": 80, "success": True}
    assert "coursemember" not in body
    assert member_requests(fellow_api) == ["/api/v1/programs/p1/members/m1/programmember"]


@pytest.mark.parametrize(
    "event", ["COURSEMEMBER_CREATED", "COURSEMEMBER_DELETED", "PROGRAMMEMBER_CREATED"]
)
def test_other_events_go_to_an_enriching_target_unchanged(
    redis_client: redis.Redis,
    fellow_api: FellowApiServer,
    targets: TargetServer,
    use_routes: Any,
    event: str,
) -> None:
    use_routes(routes(fellow_api, targets))
    stored = completion(event)
    store_events(redis_client, [stored], enqueue=False)

    jobs.deliver_due()

    for name in ("crm", "lms", "plain"):
        [got] = targets.by_name(name)
        assert got.body == stored.body
        assert got.headers["content-type"] == FORM
    crm = targets.by_name("crm")[0]
    Webhook(SECRET).verify(crm.body, dict(crm.headers), json_parse=False)
    assert fellow_api.requests == 0
    assert not redis_client.exists(keys.enrichment_key(stored.id))


# --- once per event --------------------------------------------------------------------------


def test_the_record_is_fetched_once_across_a_retry_and_a_replay(
    redis_client: redis.Redis,
    fellow_api: FellowApiServer,
    targets: TargetServer,
    use_routes: Any,
) -> None:
    fellow_api.enrol("course", "7", "m1", completed=True)
    use_routes(routes(fellow_api, targets, crm="fail/crm/1", attempts=2))
    event = completion(targets=("crm",))
    store_events(redis_client, [event], enqueue=False)

    jobs.deliver_due()  # the target answers 500: the attempt fails after the fetch
    assert field(redis_client, event.id, "s:crm") == DeliveryState.RETRYING
    fellow_api.enrol("course", "7", "m1", completed=False)  # the API changes meanwhile
    come_due(redis_client, "crm", event.id)
    jobs.deliver_due()

    first, second = targets.by_name("crm")
    assert (first.status, second.status) == (500, 200)
    assert first.body == second.body  # the kept record, not a second read
    assert orjson.loads(second.body)["coursemember"]["completed"] is True
    assert len(member_requests(fellow_api)) == 1

    # A replay of the delivered event lengthens the record's life with the event's.
    redis_client.expire(keys.enrichment_key(event.id), 60)
    redis_client.hset(keys.event_key(event.id), "s:crm", DeliveryState.DEAD)
    result = replay_delivery(redis_client, event.id, "crm", retention=86400)
    assert result.outcome == "replayed"
    assert redis_client.ttl(keys.enrichment_key(event.id)) > 60
    jobs.deliver_due()
    assert len(targets.by_name("crm")) == 3
    assert targets.by_name("crm")[2].body == first.body
    assert len(member_requests(fellow_api)) == 1


def race(redis_client: redis.Redis, api: FellowApiServer) -> list[bytes | Exception]:
    """Two runtimes (two worker processes, each its own loop and enricher) need the record of one
    event at once, the first of them twice; every API answer takes 0.3 s."""
    api.enrol("course", "7", "m1", completed=True)
    api.fault, api.hang = "timeout", 0.3
    text = ROUTES.format(api=api.url, targets="http://127.0.0.1:9", crm="x", attempts=1)
    config = parse_routes(text, "routes.toml", ENV).sources["fellow"].reconcile
    assert config is not None
    event, want = completion(), Wanted(Kind.COURSE, "7", "m1")
    one, two = Runtime(), Runtime()
    futures: list[concurrent.futures.Future[bytes]] = []
    try:
        for rt in (one, two, one):
            future = rt.submit(rt.enricher.record(redis_client, event, want, config, 3600), 1.0)
            assert future is not None
            futures.append(future)
        concurrent.futures.wait(futures, timeout=5)
    finally:
        one.close(1.0)
        two.close(1.0)
    return [f.exception() or f.result() for f in futures]  # type: ignore[misc]


def test_two_processes_needing_the_record_at_once_fetch_it_once(
    redis_client: redis.Redis, fellow_api: FellowApiServer
) -> None:
    """The Redis lock lets one fetch while the other waits for the record it keeps."""
    records = race(redis_client, fellow_api)
    assert len(set(records)) == 1
    assert isinstance(records[0], bytes)
    assert orjson.loads(records[0]) == {"completed": True, "score": 80, "success": True}
    assert len(member_requests(fellow_api)) == 1


def test_when_the_one_fetch_fails_the_waiting_process_fails_without_asking_again(
    redis_client: redis.Redis, fellow_api: FellowApiServer
) -> None:
    fellow_api.member_answer = [1]  # an unexpected shape, after 0.3 s
    errors = {str(e) for e in race(redis_client, fellow_api)}
    assert errors == {
        "cannot fetch the coursemember record: /api/v1/courses/7/members/m1/coursemember: "
        "expected a JSON object with fields, got list",
        "cannot fetch the coursemember record: another worker's fetch of it failed just now "
        "(its log says why)",
    }
    assert len(member_requests(fellow_api)) == 1


# --- a fetch that fails is a failed attempt ------------------------------------------------


def test_a_failed_fetch_is_a_failed_attempt_then_delivered_once_the_api_recovers(
    redis_client: redis.Redis,
    fellow_api: FellowApiServer,
    targets: TargetServer,
    use_routes: Any,
) -> None:
    fellow_api.enrol("course", "7", "m1", completed=True)
    use_routes(routes(fellow_api, targets))
    event = completion()
    store_events(redis_client, [event], enqueue=False)
    fellow_api.fault = "500"

    with capture_logs() as logs:
        jobs.deliver_due()

    # Nothing sent without the record; the target without `enrich` is delivered as usual.
    assert targets.by_name("crm") == targets.by_name("lms") == []
    assert len(targets.by_name("plain")) == 1
    error = "cannot fetch the coursemember record: /api/v1/courses/7/members/m1/coursemember: "
    for name in ("crm", "lms"):
        assert field(redis_client, event.id, f"s:{name}") == DeliveryState.RETRYING
        record = last_record(redis_client, event.id, name)
        assert record["error"] == error + "answered 500"
        assert record["status"] is None
        assert record["outcome"] == "retry"
    # Each retried on its target's own backoff (crm: 30 s; lms: the default, 5 s at first).
    assert 29 < due(redis_client, "crm")[event.id] - time.time() <= 30
    assert 4 < due(redis_client, "lms")[event.id] - time.time() <= 5
    # One fetch for the two targets, and one warning for it.
    assert len(member_requests(fellow_api)) == 1
    warnings = [e for e in logs if e["event"] == "enrichment: fetch failed"]
    assert [w["error"] for w in warnings] == [error + "answered 500"]
    assert not redis_client.exists(keys.enrichment_key(event.id))

    fellow_api.fault = None
    for name in ("crm", "lms"):
        come_due(redis_client, name, event.id)
    jobs.deliver_due()

    for name in ("crm", "lms"):
        [got] = targets.by_name(name)
        assert orjson.loads(got.body)["coursemember"]["completed"] is True
        assert got.headers["x-relay-attempt"] == "2"
        assert field(redis_client, event.id, f"s:{name}") == DeliveryState.DELIVERED
    assert len(member_requests(fellow_api)) == 2


@pytest.mark.parametrize(
    ("setup", "words"),
    [
        ("404", "/api/v1/courses/7/members/m1/coursemember: answered 404"),
        ("401", "/api/v1/courses/7/members/m1/coursemember: 401: the API key is refused"),
        ("array", "expected a JSON object with fields, got list"),
        ("string", "expected a JSON object with fields, got str"),
        ("empty", "expected a JSON object with fields, got {}"),
        ("timeout", "no answer within 1s"),
    ],
)
def test_api_errors_and_unexpected_shapes_fail_the_attempt_with_a_clear_error(
    redis_client: redis.Redis,
    fellow_api: FellowApiServer,
    targets: TargetServer,
    use_routes: Any,
    setup: str,
    words: str,
) -> None:
    if setup != "404":  # 404: nobody m1 in course 7
        fellow_api.enrol("course", "7", "m1", completed=True)
    if setup in ("401", "timeout"):
        fellow_api.fault, fellow_api.hang = setup, 3.0
    fellow_api.member_answer = {"array": [1, 2], "string": "x", "empty": {}}.get(setup)
    use_routes(routes(fellow_api, targets))
    event = completion(targets=("crm",))
    store_events(redis_client, [event], enqueue=False)

    jobs.deliver_due()

    # The timeout case's attempt ends after the API's 1 s, when a kick stops waiting for it
    # (jobs.INLINE_BUDGET): on a busy machine it records its outcome in the background, a moment
    # after deliver_due returned.
    assert wait_until(lambda: attempt_records(redis_client, event.id), 10)
    assert targets.by_name("crm") == []
    record = last_record(redis_client, event.id, "crm")
    assert record["error"].startswith("cannot fetch the coursemember record: ")
    assert words in record["error"]
    assert field(redis_client, event.id, "s:crm") == DeliveryState.RETRYING
    assert not redis_client.exists(keys.enrichment_key(event.id))


def test_a_429_waits_for_its_retry_after_on_the_deliverys_own_schedule(
    redis_client: redis.Redis,
    fellow_api: FellowApiServer,
    targets: TargetServer,
    use_routes: Any,
) -> None:
    fellow_api.enrol("course", "7", "m1", completed=True)
    fellow_api.fault, fellow_api.retry_after = "429", "120"
    use_routes(routes(fellow_api, targets))
    event = completion(targets=("crm",))
    store_events(redis_client, [event], enqueue=False)

    started = time.monotonic()
    jobs.deliver_due()

    assert time.monotonic() - started < 2  # not waited out inside the attempt
    assert fellow_api.requests == 1
    record = last_record(redis_client, event.id, "crm")
    assert record["error"] == (
        "cannot fetch the coursemember record: /api/v1/courses/7/members/m1/coursemember: "
        "429 with Retry-After 120s (too long)"
    )
    assert 118 < due(redis_client, "crm")[event.id] - time.time() <= 120  # not the 30 s backoff


def test_an_unreachable_api_fails_the_attempt_and_the_last_one_dead_letters(
    redis_client: redis.Redis,
    fellow_api: FellowApiServer,
    targets: TargetServer,
    use_routes: Any,
) -> None:
    api = refused_url().removesuffix("/refused")
    use_routes(routes(fellow_api, targets, attempts=1, api=api))
    event = completion(targets=("crm",))
    store_events(redis_client, [event], enqueue=False)

    jobs.deliver_due()

    assert targets.by_name("crm") == []
    assert field(redis_client, event.id, "s:crm") == DeliveryState.DEAD
    reason = field(redis_client, event.id, "r:crm") or ""
    assert reason.startswith("out of attempts (1); last: cannot fetch the coursemember record: ")
    assert "request failed: ClientConnectorError" in reason
    assert redis_client.zscore(keys.DEAD, keys.dead_member(event.id, "crm")) is not None


def test_a_completion_without_its_ids_cannot_be_enriched(
    redis_client: redis.Redis,
    fellow_api: FellowApiServer,
    targets: TargetServer,
    use_routes: Any,
) -> None:
    use_routes(routes(fellow_api, targets))
    event = completion(body=b"memberId=m1&event=COURSEMEMBER_COMPLETED", targets=("crm",))
    store_events(redis_client, [event], enqueue=False)

    jobs.deliver_due()

    assert targets.by_name("crm") == []
    record = last_record(redis_client, event.id, "crm")
    assert record["error"] == "cannot enrich: the form has no usable courseId field"
    assert fellow_api.requests == 0


def test_an_enriching_targets_lease_covers_a_fetch(
    fellow_api: FellowApiServer, targets: TargetServer
) -> None:
    table = routes(fellow_api, targets)
    assert lease_allowance(table, table.targets["crm"]) == 1.0 + LOCK_MARGIN  # timeout = "1s"
    assert lease_allowance(table, table.targets["plain"]) == 0.0


def test_ids_are_quoted_as_one_path_segment() -> None:
    want = Wanted(Kind.COURSE, "7/../../x", "a b?c")
    assert want.path == "/api/v1/courses/7%2F..%2F..%2Fx/members/a%20b%3Fc/coursemember"
    assert str(EnrichError("x", 3.0)) == "x"


# --- configuration ---------------------------------------------------------------------------

CONFIG = """
[sources.fellow]
kind = "form"
{reconcile}
[sources.shop]
kind = "json"

[targets.crm]
url = "https://crm.example.com/hooks"
enrich = {enrich}

[[routes]]
source = "fellow"
targets = ["crm"]

[[routes]]
source = "shop"
events = [{shop_events}]
targets = ["crm"]
"""
RECONCILE = '[sources.fellow.reconcile]\napi = "https://academy.example.com"\n'
RECONCILE += 'api_key_env = "FELLOW_API_KEY"\n'


def config(
    enrich: str = '"fellow"', reconcile: str = RECONCILE, shop_events: str = '"order.*"'
) -> str:
    return CONFIG.format(enrich=enrich, reconcile=reconcile, shop_events=shop_events)


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_routes(text, "routes.toml", ENV if env is None else env)
    return [str(p) for p in info.value.problems]


def test_enrich_is_read() -> None:
    table = parse_routes(config(), "routes.toml", ENV)
    assert table.targets["crm"].enrich == "fellow"
    plain = parse_routes(config().replace('enrich = "fellow"\n', ""), "routes.toml", ENV)
    assert plain.targets["crm"].enrich is None


@pytest.mark.parametrize("value", ['"Fellow"', '"elucidat"', "true", '""'])
def test_enrich_names_a_provider(value: str) -> None:
    assert problems(config(enrich=value)) == [
        'routes.toml: [targets.crm.enrich] must be "fellow" (the provider whose events are '
        "enriched)"
    ]


def test_an_enriching_target_fed_completions_by_a_source_without_api_settings_is_refused() -> None:
    assert problems(config(reconcile="")) == [
        "routes.toml: [targets.crm.enrich] routes[0] sends COURSEMEMBER_COMPLETED and "
        "PROGRAMMEMBER_COMPLETED of source 'fellow' to this target, but 'fellow' has no "
        "[sources.fellow.reconcile] table: the record is fetched with that table's API "
        "settings. Add one, or route only other events of 'fellow' here"
    ]
    # Another source whose route can bring a completion is refused too; one that cannot is fine.
    [problem] = problems(config(shop_events='"*"'))
    both = "COURSEMEMBER_COMPLETED and PROGRAMMEMBER_COMPLETED"
    assert f"routes[1] sends {both} of source 'shop'" in problem
    [problem] = problems(config(shop_events='"PROGRAMMEMBER_*"'))
    assert "routes[1] sends PROGRAMMEMBER_COMPLETED of source 'shop'" in problem
    assert parse_routes(config(shop_events='"COURSEMEMBER_CREATED"'), "routes.toml", ENV)


def test_a_reconcile_table_without_its_key_in_the_environment_still_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`relay check --allow-missing-env` (CI without secrets) takes the table as given."""
    path = tmp_path / "routes.toml"
    path.write_text(config())
    monkeypatch.delenv("FELLOW_API_KEY", raising=False)
    parser = argparse.ArgumentParser(prog="relay check")
    check.add_arguments(parser)
    assert check.run(parser.parse_args([str(path), "--allow-missing-env"])) == 0
    out = capsys.readouterr().out
    assert "enrich   fellow: course and program completions as JSON with their API record" in out

    path.write_text(config(reconcile=""))
    assert check.run(parser.parse_args([str(path), "--allow-missing-env"])) != 0
    captured = capsys.readouterr()
    assert f"{path}: [targets.crm.enrich] routes[0] sends" in captured.out + captured.err
