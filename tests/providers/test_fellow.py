"""Fellow Digitals, end to end: URL-encoded form POSTs, typed by their `event` field.

The six documented form lines (seed 002) are sent with their placeholders filled in. Fellow calls
once and never retries, and signs nothing: the path token is the only protection. A target with
`body = "json"` receives the form as a JSON object of its fields (first value of each, decoded,
in the form's order), signed over those JSON bytes; any other target gets the form's bytes.

Observed edge cases, by the rules of a `form` source: an empty body, or a body that is no
`key=value` form at all, has no `event` field, so it is acknowledged (202) and recorded as unrouted,
like any form without `event`; a body that is not UTF-8 is a 400.
"""

from __future__ import annotations

import pytest

from tests.providers.conftest import SIGNING, Relay, assert_delivery, assert_error

# Modelled on the shipped routes.toml; analytics is signed here so its JSON body is checked too.
ROUTES = """
[sources.fellow]
kind = "form"
event = "event"
token_env = "FELLOW_TOKEN"
call_once = true

[targets.crm]
url = "{targets}/ok/crm"
timeout = "10s"
signing_secret_env = "CRM_WHSEC"

[targets.analytics]
url = "{targets}/ok/analytics"
timeout = "5s"
body = "json"
headers = { "x-tenant" = "example" }
signing_secret_env = "ANALYTICS_WHSEC"

[[routes]]
source = "fellow"
events = ["COURSEMEMBER_*", "PROGRAMMEMBER_*"]
targets = ["crm", "analytics"]
"""

FORM = "application/x-www-form-urlencoded"
CRM_SECRET = SIGNING["CRM_WHSEC"]
ANALYTICS_SECRET = SIGNING["ANALYTICS_WHSEC"]

# The seed's lines, with {courseId}, {programId} and {memberId} filled in.
DOCUMENTED = [
    ("courseId=8812&memberId=31337&event=COURSEMEMBER_CREATED", "courseId"),
    ("courseId=8812&memberId=31337&event=COURSEMEMBER_COMPLETED", "courseId"),
    ("courseId=8812&memberId=31337&event=COURSEMEMBER_DELETED", "courseId"),
    ("programId=77&memberId=31337&event=PROGRAMMEMBER_CREATED", "programId"),
    ("programId=77&memberId=31337&event=PROGRAMMEMBER_COMPLETED", "programId"),
    ("programId=77&memberId=31337&event=PROGRAMMEMBER_DELETED", "programId"),
]


@pytest.mark.parametrize(("line", "id_field"), DOCUMENTED, ids=[d[0][-22:] for d in DOCUMENTED])
def test_documented_form_reaches_crm_as_a_form_and_analytics_as_json(
    relay: Relay, line: str, id_field: str
) -> None:
    body = line.encode()
    event_type = line.rsplit("=", 1)[1]
    answer = relay.accept("fellow", body, {"Content-Type": FORM})
    [event_id] = answer.event_ids()
    assert answer.json()["events"] == [
        {"id": event_id, "type": event_type, "targets": ["crm", "analytics"]}
    ]
    relay.settle(event_id)
    assert relay.states(event_id) == {"crm": "delivered", "analytics": "delivered"}
    got = relay.deliveries(event_id)
    [crm], [analytics] = got["crm"], got["analytics"]
    assert_delivery(
        crm,
        event_id=event_id,
        source="fellow",
        event_type=event_type,
        body=body,
        content_type=FORM,
        secret=CRM_SECRET,
    )
    id_value = "8812" if id_field == "courseId" else "77"
    as_json = f'{{"{id_field}":"{id_value}","memberId":"31337","event":"{event_type}"}}'.encode()
    assert_delivery(
        analytics,
        event_id=event_id,
        source="fellow",
        event_type=event_type,
        body=as_json,
        content_type="application/json",
        secret=ANALYTICS_SECRET,  # signed over the JSON it receives, not the form
    )
    assert analytics.headers["x-tenant"] == "example"
    assert "x-tenant" not in crm.headers
    assert relay.stored(event_id).method == "POST"


def test_encoded_values_and_a_charset_parameter(relay: Relay) -> None:
    body = b"memberId=jane%40example.com&event=COURSEMEMBER_CREATED&courseId=c+1%2B2"
    content_type = "application/x-www-form-urlencoded; charset=UTF-8"
    answer = relay.accept("fellow", body, {"Content-Type": content_type})
    [event_id] = answer.event_ids()
    relay.settle(event_id)
    got = relay.deliveries(event_id)
    assert got["crm"][0].body == body
    assert got["crm"][0].headers["content-type"] == content_type
    # Decoded as a form decodes: %40 is @, + is a space, %2B is +.
    assert got["analytics"][0].body == (
        b'{"memberId":"jane@example.com","event":"COURSEMEMBER_CREATED","courseId":"c 1+2"}'
    )
    assert got["analytics"][0].headers["content-type"] == "application/json"


def test_an_event_no_route_names_is_acknowledged_as_unrouted(relay: Relay) -> None:
    body = b"courseId=8812&memberId=31337&event=COURSE_ARCHIVED"
    answer = relay.accept("fellow", body, {"Content-Type": FORM})
    [event_id] = answer.event_ids()
    assert answer.json()["events"] == [{"id": event_id, "type": "COURSE_ARCHIVED", "targets": []}]
    assert relay.is_unrouted(event_id)


@pytest.mark.parametrize(
    "body",
    [
        b"courseId=8812&memberId=31337",  # the event field missing
        b"courseId=8812&memberId=31337&event=",  # present but empty
        b"",  # an empty body: an empty form
        b'{"event": "COURSEMEMBER_CREATED"}',  # not a form: one field named by the whole text
    ],
    ids=["no event field", "empty event", "empty body", "JSON labelled as a form"],
)
def test_no_event_type_is_acknowledged_and_recorded_as_unrouted(relay: Relay, body: bytes) -> None:
    before = relay.recorded()
    unrouted_before = relay.source_counter("fellow", "unrouted")
    answer = relay.accept("fellow", body, {"Content-Type": FORM})
    [event_id] = answer.event_ids()
    assert answer.json()["events"] == [{"id": event_id, "type": None, "targets": []}]
    assert relay.is_unrouted(event_id)
    assert relay.stored(event_id).body == body
    after = relay.recorded()
    assert (after.events, after.unrouted) == (before.events + 1, before.unrouted + 1)
    assert relay.source_counter("fellow", "unrouted") == unrouted_before + 1


@pytest.mark.parametrize(
    ("body", "headers", "token", "status", "message"),
    [
        (
            b'{"courseId": "8812", "memberId": "31337", "event": "COURSEMEMBER_CREATED"}',
            {"Content-Type": "application/json"},
            "",
            415,
            "takes application/x-www-form-urlencoded, not 'application/json'",
        ),
        (
            b"courseId=8812&memberId=31337&event=COURSEMEMBER_CREATED",
            {},
            "",
            415,
            "takes application/x-www-form-urlencoded, not ''",
        ),
        (
            b"courseId=8812&memberId=31337&event=COURSEMEMBER_CREATED",
            {"Content-Type": "text/plain"},
            "",
            415,
            "takes application/x-www-form-urlencoded",
        ),
        (
            b"courseId=88\xff12&memberId=31337&event=COURSEMEMBER_CREATED",
            {"Content-Type": FORM},
            "",
            400,
            "not valid UTF-8",
        ),
        (
            b"courseId=8812&event=COURSEMEMBER_CREATED&memberId=" + b"9" * (1024 * 1024),
            {"Content-Type": FORM},
            "",
            413,
            "at most 1048576",
        ),
        (
            b"courseId=8812&memberId=31337&event=COURSEMEMBER_CREATED",
            {"Content-Type": FORM},
            None,
            401,
            "needs its token",
        ),
        (
            b"courseId=8812&memberId=31337&event=COURSEMEMBER_CREATED",
            {"Content-Type": FORM},
            "fellow-wrong-token-000",
            401,
            "token in the path is wrong",
        ),
    ],
    ids=[
        "JSON content type",
        "no content type",
        "text/plain",
        "not UTF-8",
        "oversized",
        "no token",
        "wrong token",
    ],
)
def test_bad_input_is_rejected_and_nothing_is_delivered(
    relay: Relay,
    body: bytes,
    headers: dict[str, str],
    token: str | None,
    status: int,
    message: str,
) -> None:
    before = relay.recorded()
    assert_error(relay.send("fellow", body, headers, token=token), status, message)
    assert relay.recorded() == before
    sentinel = b"courseId=1&memberId=2&event=COURSEMEMBER_CREATED"
    relay.settle(*relay.accept("fellow", sentinel, {"Content-Type": FORM}).event_ids())
    relay.assert_only_accepted_delivered()


def test_get_is_405_with_allow(relay: Relay) -> None:
    answer = relay.send("fellow", b"", {}, method="GET")
    assert_error(answer, 405, "not GET")
    assert answer.headers["allow"] == "POST, PUT"
