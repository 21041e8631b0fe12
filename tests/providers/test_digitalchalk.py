"""DigitalChalk, end to end: JSON by POST or PUT (the customer picks), typed by the `event` field.

The element_published payload is seed 001's, byte for byte (its ` : ` spacing, 2-space indent and
LF line ends). Other events' payloads are not in the seeds: the ones below are built from the
documented fields (`event`, ISO-8601 UTC `date`). DigitalChalk signs nothing (the path token is
the only protection) and retries an attempt that gets no 2xx within 5 s.

The source `digitalchalk` is the shipped one (no dedupe: a retry of the same body is a new event
with its own webhook-id). `digitalchalk-dd` is the same plus a configured dedupe key; a request
that lacks a part of the key (an event without `element.id`) is not deduplicated at all.
A PUT is recorded as a PUT and delivered as a POST, as every delivery is.
"""

from __future__ import annotations

import json

import pytest

from tests.providers.conftest import SIGNING, Relay, assert_delivery, assert_error

# Modelled on the shipped routes.toml, plus the same source with a dedupe key.
ROUTES = """
[sources.digitalchalk]
kind = "json"
event = "event"
methods = ["POST", "PUT"]
token_env = "DIGITALCHALK_TOKEN"
max_body = "1MiB"

[sources.digitalchalk-dd]
kind = "json"
event = "event"
methods = ["POST", "PUT"]
token_env = "DIGITALCHALK_TOKEN"
dedupe = { key = ["body:event", "body:element.id", "body:date"], window = "1h" }

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
source = "digitalchalk"
events = ["offering_*", "user_created"]
targets = ["crm"]

[[routes]]
source = "digitalchalk"
events = ["*"]
targets = ["analytics"]

[[routes]]
source = "digitalchalk-dd"
targets = ["analytics"]
"""

JSON = "application/json"
CRM_SECRET = SIGNING["CRM_WHSEC"]

# Seed 001, verbatim.
ELEMENT_PUBLISHED = b"""{
  "event" : "element_published",
  "date" : "2014-04-18T00:54:54Z",
  "element" : {
    "type" : "assignment",
    "id" : "06813b9f273349de9af81fd735384450",
    "title" : "Module 23",
    "question" : "Lorem ipsum dolor sit amet, consectetur adipisicing elit, sed do eiusmod \
tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud \
exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in \
reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. Excepteur sint \
occaecat cupidatat non proident, sunt in culpa qui officia deserunt mollit anim id est laborum."
  },
  "course" : {
    "id" : "2ea91e147dd345c7aaf1cb17291fb629",
    "title" : "Sample Course",
    "instructor" : "Manik Brammer",
    "passingGrade" : 90.0
  }
}"""


def learner_event(event: str, user: str) -> bytes:
    """A learner event in DigitalChalk's style (undocumented payload: the documented fields)."""
    return (
        b'{\n  "event" : "%s",\n  "date" : "2024-03-01T10:15:00Z",\n'
        b'  "offering" : {\n    "id" : "4c1f0e6a9b2d4f7e8a3b5c6d7e8f9a0b",\n'
        b'    "title" : "Sample Course"\n  },\n'
        b'  "user" : {\n    "id" : "%s",\n    "email" : "%s@example.com"\n  }\n}'
    ) % (event.encode(), user.encode(), user.encode())


def test_the_seed_payload_is_the_documented_json() -> None:
    document = json.loads(ELEMENT_PUBLISHED)
    assert document["event"] == "element_published"
    assert document["course"]["passingGrade"] == 90.0
    question = document["element"]["question"]
    assert question.startswith("Lorem ipsum dolor sit amet")
    assert question.endswith("id est laborum.")


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_element_published_reaches_analytics_only_by_post_or_put(relay: Relay, method: str) -> None:
    answer = relay.accept("digitalchalk", ELEMENT_PUBLISHED, {"Content-Type": JSON}, method=method)
    [event_id] = answer.event_ids()
    assert answer.json()["events"] == [
        {"id": event_id, "type": "element_published", "targets": ["analytics"]}
    ]
    assert relay.stored(event_id).method == method
    relay.settle(event_id)
    got = relay.deliveries(event_id)
    assert list(got) == ["analytics"]  # not a learner event: the crm never hears of it
    [received] = got["analytics"]
    # The target server only routes POST: arriving at all means it was delivered as a POST.
    assert_delivery(
        received,
        event_id=event_id,
        source="digitalchalk",
        event_type="element_published",
        body=ELEMENT_PUBLISHED,  # byte for byte: ` : ` spacing, `90.0`, LF line ends
        content_type=JSON,
        secret=None,
    )
    assert received.headers["x-tenant"] == "example"


@pytest.mark.parametrize(
    ("event", "method"),
    [("offering_completed", "PUT"), ("offering_registered", "POST"), ("user_created", "POST")],
)
def test_learner_events_reach_crm_signed_and_analytics(
    relay: Relay, event: str, method: str
) -> None:
    body = learner_event(event, f"user-{event}-{method}")
    answer = relay.accept("digitalchalk", body, {"Content-Type": JSON}, method=method)
    [event_id] = answer.event_ids()
    # Matched by two routes: each target once, in first-mention order.
    assert answer.json()["events"][0]["targets"] == ["crm", "analytics"]
    relay.settle(event_id)
    got = relay.deliveries(event_id)
    assert sorted(got) == ["analytics", "crm"]
    for name, secret in (("crm", CRM_SECRET), ("analytics", None)):
        [received] = got[name]
        assert_delivery(
            received,
            event_id=event_id,
            source="digitalchalk",
            event_type=event,
            body=body,
            content_type=JSON,
            secret=secret,
        )


def test_without_dedupe_a_retry_is_a_new_event(relay: Relay) -> None:
    body = learner_event("offering_completed", "user-retried")
    first = relay.accept("digitalchalk", body, {"Content-Type": JSON}, method="PUT")
    retry = relay.accept("digitalchalk", body, {"Content-Type": JSON}, method="PUT")
    assert retry.json()["duplicate"] is False
    ids = [*first.event_ids(), *retry.event_ids()]
    assert ids[0] != ids[1]
    relay.settle(*ids)
    for event_id in ids:
        assert sorted(relay.deliveries(event_id)) == ["analytics", "crm"]


def test_configured_dedupe_delivers_a_retry_once(relay: Relay) -> None:
    first = relay.accept("digitalchalk-dd", ELEMENT_PUBLISHED, {"Content-Type": JSON}, method="PUT")
    retry = relay.accept("digitalchalk-dd", ELEMENT_PUBLISHED, {"Content-Type": JSON}, method="PUT")
    [first_id], [retry_id] = first.event_ids(), retry.event_ids()
    assert first.json()["duplicate"] is False
    assert retry.json()["duplicate"] is True
    assert retry.json()["events"][0]["duplicate_of"] == first_id
    relay.settle(first_id, retry_id)
    assert relay.states(retry_id) == {"analytics": "duplicate"}
    assert [r.body for r in relay.deliveries(first_id)["analytics"]] == [ELEMENT_PUBLISHED]
    assert relay.deliveries(retry_id) == {}


def test_configured_dedupe_skips_requests_lacking_a_key_part(relay: Relay) -> None:
    body = learner_event("offering_completed", "user-no-element")  # no element.id
    first = relay.accept("digitalchalk-dd", body, {"Content-Type": JSON})
    again = relay.accept("digitalchalk-dd", body, {"Content-Type": JSON})
    assert again.json()["duplicate"] is False
    ids = [*first.event_ids(), *again.event_ids()]
    relay.settle(*ids)
    assert all(relay.states(i) == {"analytics": "delivered"} for i in ids)


@pytest.mark.parametrize(
    "body",
    [
        b'{"date" : "2024-03-01T10:15:00Z", "user" : {"id" : "u1"}}',
        b'{"event" : null, "date" : "2024-03-01T10:15:00Z"}',
        b'{"event" : {"name" : "user_created"}}',
        b'[{"event" : "user_created"}]',
    ],
    ids=["no event field", "null event", "object event", "array body"],
)
def test_no_event_type_is_acknowledged_and_recorded_as_unrouted(relay: Relay, body: bytes) -> None:
    # Even the catch-all "*" route does not take an event without a type.
    answer = relay.accept("digitalchalk", body, {"Content-Type": JSON})
    [event_id] = answer.event_ids()
    assert answer.json()["events"] == [{"id": event_id, "type": None, "targets": []}]
    assert relay.is_unrouted(event_id)
    assert relay.stored(event_id).body == body


@pytest.mark.parametrize(
    ("body", "headers", "token", "status", "message"),
    [
        (ELEMENT_PUBLISHED, {"Content-Type": "text/plain"}, "", 415, "takes application/json"),
        (
            b"event=element_published&date=2014-04-18T00%3A54%3A54Z",
            {"Content-Type": "application/x-www-form-urlencoded"},
            "",
            415,
            "takes application/json, not 'application/x-www-form-urlencoded'",
        ),
        (ELEMENT_PUBLISHED, {}, "", 415, "takes application/json, not ''"),
        (b'{"event" : "element_published",', {"Content-Type": JSON}, "", 400, "not valid JSON"),
        (b"event=element_published", {"Content-Type": JSON}, "", 400, "not valid JSON"),
        (b"", {"Content-Type": JSON}, "", 400, "the body is empty"),
        (b"  \r\n", {"Content-Type": JSON}, "", 400, "the body is empty"),
        (
            b'{"event" : "element_published", "x" : "' + b"y" * 1048576 + b'"}',
            {"Content-Type": JSON},
            "",
            413,
            "at most 1048576",
        ),
        (ELEMENT_PUBLISHED, {"Content-Type": JSON}, None, 401, "needs its token"),
        (ELEMENT_PUBLISHED, {"Content-Type": JSON}, "digitalchalk-wrong", 401, "is wrong"),
    ],
    ids=[
        "text/plain",
        "form",
        "no content type",
        "truncated JSON",
        "not JSON",
        "empty body",
        "blank body",
        "oversized",
        "no token",
        "wrong token",
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_bad_input_is_rejected_and_nothing_is_delivered(
    relay: Relay,
    method: str,
    body: bytes,
    headers: dict[str, str],
    token: str | None,
    status: int,
    message: str,
) -> None:
    before = relay.recorded()
    answer = relay.send("digitalchalk", body, headers, method=method, token=token)
    assert_error(answer, status, message)
    assert relay.recorded() == before
    sentinel = learner_event("user_created", f"sentinel-{method}-{status}")
    relay.settle(*relay.accept("digitalchalk", sentinel, {"Content-Type": JSON}).event_ids())
    relay.assert_only_accepted_delivered()


def test_other_methods_are_405_with_allow(relay: Relay) -> None:
    answer = relay.send("digitalchalk", ELEMENT_PUBLISHED, {"Content-Type": JSON}, method="PATCH")
    assert_error(answer, 405, "not PATCH")
    assert answer.headers["allow"] == "POST, PUT"
