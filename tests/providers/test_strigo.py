"""Strigo (REST Hooks), end to end: the bare entity JSON typed by its `x-event-type` header.

Seed 004 documents the header (`'x-event-type': 'event.create'`), the events, and several targets
per event; its payload link is not in the seed, so the entity is the README's example. The REST
Hooks handshake (`X-Hook-Secret` echoed in a 200) is the resthooks.org convention. Strigo signs
nothing: the path token is the only protection. Bodies are forwarded whatever their content type.
"""

from __future__ import annotations

import pytest

from tests.providers.conftest import Relay, assert_delivery, assert_error

# Modelled on the shipped routes.toml, plus a dedupe key (the entity id per event type).
ROUTES = """
[sources.strigo]
kind = "resthooks"
event = "x-event-type"
token_env = "STRIGO_TOKEN"
dedupe = { key = ["header:x-event-type", "body:id"], window = "1h" }

[targets.crm]
url = "{targets}/ok/crm"
timeout = "10s"
signing_secret_env = "CRM_WHSEC"

[targets.analytics]
url = "{targets}/ok/analytics"
timeout = "5s"
body = "json"
headers = { "x-tenant" = "example" }

[[routes]]
source = "strigo"
events = ["enrollment.*"]
targets = ["crm"]

[[routes]]
source = "strigo"
targets = ["analytics"]
"""

CRM_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
JSON = "application/json"


def entity(entity_id: str) -> bytes:
    """A bare entity as Strigo posts it (the README's example, with its own id)."""
    return (
        b'{"id": "%s", "email": "learner@example.com", "course_id": "crs_456"}' % entity_id.encode()
    )


def test_enrollment_reaches_crm_and_analytics_with_its_header(relay: Relay) -> None:
    body = entity("enr_123")
    answer = relay.accept(
        "strigo", body, {"Content-Type": JSON, "x-event-type": "enrollment.create"}
    )
    reply = answer.json()
    [event_id] = answer.event_ids()
    assert reply["events"] == [
        {"id": event_id, "type": "enrollment.create", "targets": ["crm", "analytics"]}
    ]
    assert reply["duplicate"] is False
    relay.settle(event_id)
    assert relay.states(event_id) == {"crm": "delivered", "analytics": "delivered"}
    got = relay.deliveries(event_id)
    assert sorted(got) == ["analytics", "crm"]
    for name, secret in (("crm", CRM_SECRET), ("analytics", None)):
        [received] = got[name]
        # body = "json" on analytics changes form bodies only: JSON arrives as sent.
        assert_delivery(
            received,
            event_id=event_id,
            source="strigo",
            event_type="enrollment.create",
            body=body,
            content_type=JSON,
            secret=secret,
        )
        assert received.headers["x-event-type"] == "enrollment.create"
    assert got["analytics"][0].headers["x-tenant"] == "example"


def test_other_events_reach_analytics_only(relay: Relay) -> None:
    # The seed's own example header value.
    body = b'{"id": "evt_9", "title": "Kubernetes workshop", "starts_at": "2024-05-01T09:00:00Z"}'
    answer = relay.accept("strigo", body, {"Content-Type": JSON, "x-event-type": "event.create"})
    [event_id] = answer.event_ids()
    assert answer.json()["events"][0]["targets"] == ["analytics"]
    relay.settle(event_id)
    got = relay.deliveries(event_id)
    assert list(got) == ["analytics"]  # routed elsewhere: crm never hears of it
    [received] = got["analytics"]
    assert_delivery(
        received,
        event_id=event_id,
        source="strigo",
        event_type="event.create",
        body=body,
        content_type=JSON,
        secret=None,
    )


def test_header_name_is_case_insensitive_and_body_is_forwarded_whatever_its_type(
    relay: Relay,
) -> None:
    # A resthooks source takes any body: not JSON, not even declared JSON, goes through untouched.
    body = b"id=enr_777; not json at all\r\n"
    headers = {"Content-Type": "text/plain; charset=utf-8", "X-Event-Type": "enrollment.finished"}
    answer = relay.accept("strigo", body, headers)
    [event_id] = answer.event_ids()
    relay.settle(event_id)
    got = relay.deliveries(event_id)
    assert sorted(got) == ["analytics", "crm"]
    assert_delivery(
        got["crm"][0],
        event_id=event_id,
        source="strigo",
        event_type="enrollment.finished",
        body=body,
        content_type="text/plain; charset=utf-8",
        secret=CRM_SECRET,
    )
    assert got["analytics"][0].body == body


def test_invalid_json_declared_as_json_is_forwarded_as_it_is(relay: Relay) -> None:
    body = b'{"id": "enr_8", broken'
    answer = relay.accept("strigo", body, {"Content-Type": JSON, "x-event-type": "learner.join"})
    [event_id] = answer.event_ids()
    relay.settle(event_id)
    [received] = relay.deliveries(event_id)["analytics"]
    assert received.body == body
    assert received.headers["content-type"] == JSON


def test_rest_hooks_handshake_echoes_the_secret_and_records_nothing(relay: Relay) -> None:
    before = relay.recorded()
    answer = relay.send("strigo", b"", {"X-Hook-Secret": "abc123"})
    assert answer.status == 200
    assert answer.headers["x-hook-secret"] == "abc123"
    assert answer.json() == {"status": "subscribed"}
    assert relay.recorded() == before


def test_handshake_needs_the_token_too(relay: Relay) -> None:
    before = relay.recorded()
    answer = relay.send("strigo", b"", {"X-Hook-Secret": "abc123"}, token="not-the-token-at-all")
    assert_error(answer, 401, "token")
    assert "x-hook-secret" not in answer.headers
    assert relay.recorded() == before


def test_empty_hook_secret_is_400(relay: Relay) -> None:
    before = relay.recorded()
    assert_error(relay.send("strigo", b"", {"X-Hook-Secret": ""}), 400, "X-Hook-Secret")
    assert relay.recorded() == before


def test_same_entity_and_event_type_twice_is_delivered_once(relay: Relay) -> None:
    body = entity("enr_dup_1")
    headers = {"Content-Type": JSON, "x-event-type": "enrollment.create"}
    first = relay.accept("strigo", body, headers)
    second = relay.accept("strigo", body, headers)
    [first_id], [second_id] = first.event_ids(), second.event_ids()
    assert second.json()["duplicate"] is True
    assert second.json()["events"][0]["duplicate_of"] == first_id
    # The same entity under another event type is another event: not a duplicate.
    other = relay.accept(
        "strigo", body, {"Content-Type": JSON, "x-event-type": "enrollment.finished"}
    )
    [other_id] = other.event_ids()
    assert other.json()["duplicate"] is False
    relay.settle(first_id, second_id, other_id)
    assert relay.states(second_id) == {"crm": "duplicate", "analytics": "duplicate"}
    assert sorted(relay.deliveries(first_id)) == ["analytics", "crm"]
    assert relay.deliveries(second_id) == {}
    assert sorted(relay.deliveries(other_id)) == ["analytics", "crm"]


def test_one_duplicate_request_counts_once(relay: Relay) -> None:
    # README: a repeat "is stored, but the worker does not deliver it. The source's duplicates
    # counter goes up" -- by one per repeated request, receiver and worker together.
    body = entity("enr_dup_count")
    headers = {"Content-Type": JSON, "x-event-type": "enrollment.create"}
    first = relay.accept("strigo", body, headers)
    before = relay.source_counter("strigo", "duplicates")
    second = relay.accept("strigo", body, headers)
    assert second.json()["duplicate"] is True
    relay.settle(*first.event_ids(), *second.event_ids())
    assert relay.source_counter("strigo", "duplicates") == before + 1


def test_missing_event_type_is_acknowledged_and_recorded_as_unrouted(relay: Relay) -> None:
    body = entity("enr_untyped")
    answer = relay.accept("strigo", body, {"Content-Type": JSON})
    [event_id] = answer.event_ids()
    assert answer.json()["events"] == [{"id": event_id, "type": None, "targets": []}]
    assert relay.is_unrouted(event_id)
    assert relay.stored(event_id).body == body


def test_empty_body_with_an_event_type_is_an_event(relay: Relay) -> None:
    # resthooks takes any body, the empty one included: the header alone makes the event.
    answer = relay.accept("strigo", b"", {"x-event-type": "event.delete"})
    [event_id] = answer.event_ids()
    relay.settle(event_id)
    [received] = relay.deliveries(event_id)["analytics"]
    assert received.body == b""
    assert received.headers["x-relay-event"] == "event.delete"


@pytest.mark.parametrize(
    ("token", "status", "message"),
    [
        (None, 401, "needs its token"),
        ("strigo-tok-wrong-wrong-wrong", 401, "token in the path is wrong"),
    ],
)
def test_missing_or_wrong_token_is_rejected_and_nothing_is_delivered(
    relay: Relay, token: str | None, status: int, message: str
) -> None:
    before = relay.recorded()
    headers = {"Content-Type": JSON, "x-event-type": "enrollment.create"}
    answer = relay.send("strigo", entity("enr_no_token"), headers, token=token)
    assert_error(answer, status, message)
    assert relay.recorded() == before
    sentinel = relay.accept("strigo", entity("enr_sentinel_" + str(token)[:4]), headers)
    relay.settle(*sentinel.event_ids())
    relay.assert_only_accepted_delivered()


def test_oversized_body_is_413_and_nothing_is_delivered(relay: Relay) -> None:
    before = relay.recorded()
    body = b'{"id": "' + b"x" * (1024 * 1024) + b'"}'
    answer = relay.send("strigo", body, {"Content-Type": JSON, "x-event-type": "enrollment.create"})
    assert_error(answer, 413, "at most 1048576")
    assert relay.recorded() == before
    sentinel = relay.accept("strigo", entity("enr_sentinel_413"), {"x-event-type": "event.update"})
    relay.settle(*sentinel.event_ids())
    relay.assert_only_accepted_delivered()


def test_wrong_method_is_405(relay: Relay) -> None:
    before = relay.recorded()
    answer = relay.send("strigo", b"", {}, method="GET")
    assert_error(answer, 405, "not GET")
    assert answer.headers["allow"] == "POST, PUT"
    assert relay.recorded() == before
