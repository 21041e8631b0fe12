"""Elucidat, end to end: JSON as documented, or a form as their sample receiver reads it.

Seed 000's payloads lost their braces in the page capture; the bodies below are its field lines
exactly as shown (4-space indent, strings for numbers, `null`s, `YYYY-MM-DD HH:MM:SS` times) with
the braces put back. The form variants are what PHP's `http_build_query` makes of the same
payload (nested objects as `project[name]`, nulls left out). Elucidat signs nothing (the path
token is the only protection). A `json_or_form` source picks the parser by Content-Type: a body
that is not JSON sent as JSON is a 400; a body that is not a form sent as a form has no `event`
field, so it is acknowledged and recorded as unrouted.
"""

from __future__ import annotations

from urllib.parse import urlencode

import orjson
import pytest

from tests.providers.conftest import SIGNING, Relay, assert_delivery, assert_error

# Modelled on the shipped routes.toml; lms-archive is signed here so signatures are checked.
ROUTES = """
[sources.elucidat]
kind = "json_or_form"
event = "event"
token_env = "ELUCIDAT_TOKEN"

[targets.analytics]
url = "{targets}/ok/analytics"
timeout = "5s"
body = "json"
headers = { "x-tenant" = "example" }

[targets.lms-archive]
url = "{targets}/ok/lms-archive"
signing_secret_env = "ARCHIVE_WHSEC"

[[routes]]
source = "elucidat"
events = ["release_*"]
targets = ["lms-archive", "analytics"]

[[routes]]
source = "elucidat"
events = ["project_*"]
targets = ["analytics"]
"""

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
ARCHIVE_SECRET = SIGNING["ARCHIVE_WHSEC"]

PROJECT_DELETED = b"""{
    "name": "Webhooks",
    "project_code": "620cc5c653c5c",
    "created": "2022-02-16 09:37:10",
    "event": "project_deleted"
}"""

RELEASE_DELETED = b"""{
    "release_code": "620cd45a833d9",
    "created": "2022-02-16 10:39:06",
    "modified": "2022-02-16 10:39:23",
    "status": "complete",
    "description": "February release",
    "release_views": "0",
    "release_views_this_month": "0",
    "release_passes": "0",
    "release_fails": "0",
    "release_last_view": null,
    "version_number": "1",
    "release_mode": "online-public",
    "lrs_endpoint": "",
    "lrs_endpoint_username": "",
    "learner_access": "any",
    "release_type": "standard",
    "project": {
        "name": "Webhooks",
        "project_code": "620cc5c654c5e"
    },
    "timezone": "UTC",
    "user": {
        "name": "Joe Bloggs",
        "email": "joe.bloggs@elucidat.com"
    },
    "download_url": null,
    "launch_url": "https://elucidat.com/course/620cc5c653c5f-620gd44a833f4",
    "edit_url": "https://elucidat.com/projects/edit/620cc5c653c5f",
    "event": "release_deleted"
}"""


def php_form(document: dict[str, object]) -> list[tuple[str, str]]:
    """The fields PHP's http_build_query makes of a document: `a[b]` for nesting, no nulls."""
    fields: list[tuple[str, str]] = []
    for key, value in document.items():
        if isinstance(value, dict):
            fields.extend((f"{key}[{k}]", str(v)) for k, v in value.items() if v is not None)
        elif value is not None:
            fields.append((key, str(value)))
    return fields


RELEASE_FIELDS = php_form(orjson.loads(RELEASE_DELETED))
RELEASE_FORM = urlencode(RELEASE_FIELDS).encode()


def test_the_rebuilt_payloads_keep_the_documented_quirks() -> None:
    release = orjson.loads(RELEASE_DELETED)
    assert release["release_views"] == "0"  # numbers as strings
    assert release["release_last_view"] is None
    assert release["timezone"] == "UTC"
    assert orjson.loads(PROJECT_DELETED)["event"] == "project_deleted"
    assert b"project%5Bname%5D=Webhooks" in RELEASE_FORM
    assert b"release_last_view" not in RELEASE_FORM


def test_project_deleted_as_json_reaches_analytics_only(relay: Relay) -> None:
    answer = relay.accept("elucidat", PROJECT_DELETED, {"Content-Type": JSON})
    [event_id] = answer.event_ids()
    assert answer.json()["events"] == [
        {"id": event_id, "type": "project_deleted", "targets": ["analytics"]}
    ]
    relay.settle(event_id)
    got = relay.deliveries(event_id)
    assert list(got) == ["analytics"]  # not a release: the archive never hears of it
    [received] = got["analytics"]
    assert_delivery(
        received,
        event_id=event_id,
        source="elucidat",
        event_type="project_deleted",
        body=PROJECT_DELETED,  # body = "json" leaves JSON bodies as they came
        content_type=JSON,
        secret=None,
    )
    assert received.headers["x-tenant"] == "example"


def test_release_deleted_as_json_reaches_the_archive_signed_and_analytics(relay: Relay) -> None:
    answer = relay.accept("elucidat", RELEASE_DELETED, {"Content-Type": JSON})
    [event_id] = answer.event_ids()
    assert answer.json()["events"][0]["targets"] == ["lms-archive", "analytics"]
    relay.settle(event_id)
    got = relay.deliveries(event_id)
    for name, secret in (("lms-archive", ARCHIVE_SECRET), ("analytics", None)):
        [received] = got[name]
        assert_delivery(
            received,
            event_id=event_id,
            source="elucidat",
            event_type="release_deleted",
            body=RELEASE_DELETED,
            content_type=JSON,
            secret=secret,
        )


def test_release_deleted_as_a_form_reaches_the_archive_as_a_form_and_analytics_as_json(
    relay: Relay,
) -> None:
    answer = relay.accept("elucidat", RELEASE_FORM, {"Content-Type": FORM})
    [event_id] = answer.event_ids()
    assert answer.json()["events"][0]["type"] == "release_deleted"
    relay.settle(event_id)
    got = relay.deliveries(event_id)
    [archive], [analytics] = got["lms-archive"], got["analytics"]
    assert_delivery(
        archive,
        event_id=event_id,
        source="elucidat",
        event_type="release_deleted",
        body=RELEASE_FORM,
        content_type=FORM,
        secret=ARCHIVE_SECRET,
    )
    assert_delivery(
        analytics,
        event_id=event_id,
        source="elucidat",
        event_type="release_deleted",
        body=orjson.dumps(dict(RELEASE_FIELDS)),  # flat: field names as the form has them
        content_type="application/json",
        secret=None,
    )


@pytest.mark.parametrize(
    ("body", "content_type", "event_type", "targets"),
    [
        # The README's "Try it" examples.
        (b"event=release_course&release_code=620cd45a833d9", FORM, "release_course", 2),
        (
            b'{"name": "Webhooks", "project_code": "620cc5c653c5c", '
            b'"created": "2022-02-16 09:37:10", "event": "project_deleted"}',
            JSON,
            "project_deleted",
            1,
        ),
        (
            b"name=New+course&project_code=620cc5c653c60&event=project_created",
            FORM,
            "project_created",
            1,
        ),
    ],
    ids=["release_course form", "project_deleted one-line JSON", "project_created form"],
)
def test_other_documented_events_are_routed_by_their_event_field(
    relay: Relay, body: bytes, content_type: str, event_type: str, targets: int
) -> None:
    answer = relay.accept("elucidat", body, {"Content-Type": content_type})
    [event_id] = answer.event_ids()
    expected = ["lms-archive", "analytics"][-targets:]
    assert answer.json()["events"][0] == {"id": event_id, "type": event_type, "targets": expected}
    relay.settle(event_id)
    got = relay.deliveries(event_id)
    assert sorted(got) == sorted(expected)
    if "lms-archive" in got:
        assert got["lms-archive"][0].body == body


@pytest.mark.parametrize(
    ("body", "content_type", "event_type"),
    [
        (b'{"name": "Webhooks", "project_code": "620cc5c653c5c"}', JSON, None),
        (b"name=Webhooks&project_code=620cc5c653c5c", FORM, None),
        (b"", FORM, None),  # an empty form has no event field
        (PROJECT_DELETED, FORM, None),  # JSON labelled as a form: no `event` field in it
        (b'{"event": "course_launched"}', JSON, "course_launched"),  # no route names it
    ],
    ids=["JSON without event", "form without event", "empty form", "JSON as a form", "unknown"],
)
def test_unroutable_requests_are_acknowledged_and_recorded_as_unrouted(
    relay: Relay, body: bytes, content_type: str, event_type: str | None
) -> None:
    answer = relay.accept("elucidat", body, {"Content-Type": content_type})
    [event_id] = answer.event_ids()
    assert answer.json()["events"] == [{"id": event_id, "type": event_type, "targets": []}]
    assert relay.is_unrouted(event_id)
    assert relay.stored(event_id).body == body


@pytest.mark.parametrize(
    ("body", "headers", "token", "status", "message"),
    [
        (
            PROJECT_DELETED,
            {"Content-Type": "text/plain"},
            "",
            415,
            "takes application/json or application/x-www-form-urlencoded, not 'text/plain'",
        ),
        (PROJECT_DELETED, {}, "", 415, "not ''"),
        (
            b"event=project_deleted",
            {"Content-Type": "multipart/form-data; boundary=x"},
            "",
            415,
            "not 'multipart/form-data'",
        ),
        (b"event=project_deleted&name=Webhooks", {"Content-Type": JSON}, "", 400, "not valid JSON"),
        (b"", {"Content-Type": JSON}, "", 400, "the body is empty"),
        (b"event=project_\xc3(deleted", {"Content-Type": FORM}, "", 400, "not valid UTF-8"),
        (
            b"event=release_course&release_code=" + b"a" * 1048576,
            {"Content-Type": FORM},
            "",
            413,
            "at most 1048576",
        ),
        (PROJECT_DELETED, {"Content-Type": JSON}, None, 401, "needs its token"),
        (PROJECT_DELETED, {"Content-Type": JSON}, "elucidat-wrong-token", 401, "is wrong"),
    ],
    ids=[
        "text/plain",
        "no content type",
        "multipart",
        "form sent as JSON",
        "empty JSON",
        "form not UTF-8",
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
    assert_error(relay.send("elucidat", body, headers, token=token), status, message)
    assert relay.recorded() == before
    sentinel = b"event=project_created&project_code=sentinel"
    relay.settle(*relay.accept("elucidat", sentinel, {"Content-Type": FORM}).event_ids())
    relay.assert_only_accepted_delivered()
