"""Learn365 (ASP.NET WebHooks), end to end: signed CRLF-indented JSON, the echo handshake, retries.

What the sender does (PROVIDERS.md, seed 003, Microsoft's ASP.NET WebHooks): it POSTs
`application/json; charset=utf-8`, the body serialised indented by 2 spaces with CRLF line ends,
`{"Id", "Attempt", "Properties", "Notifications": [{"Action": ...}]}`, signed with
`ms-signature: sha256=<UPPER HEX>` (HMAC-SHA256 of the exact bytes, keyed with the secret);
retries carry the same `Id` and the next `Attempt` (so another signature); registering sends
`GET <url>?echo=<32 hex>` and wants the echo value back as the whole body.

Signatures here are computed with `hmac` directly, never with relay's own code.

Observed body shape of a split request (several notifications): each event's body is the sender's
own text with the `Notifications` array cut down to that one notification, itself verbatim (same
CRLF indentation, key order and numbers), e.g. `{\r\n  "Id": "…",\r\n  …"Notifications": [{\r\n
"Action": …\r\n    }]\r\n}`, delivered with the original content type and without
`ms-signature` (it would not verify on the new bytes). A single-notification request is delivered
byte for byte with its `ms-signature`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import pytest

from tests.providers.conftest import LEARN365_SECRET, Relay, assert_delivery, assert_error

# Modelled on the shipped routes.toml; the route for "a1" is for Microsoft's known-answer body.
ROUTES = """
[sources.learn365]
kind = "aspnet"
secret_env = "LEARN365_SECRET"
token_env = "LEARN365_TOKEN"
dedupe = { key = ["body:Id"], window = "24h" }

[targets.crm]
url = "{targets}/ok/crm"
timeout = "10s"
signing_secret_env = "CRM_WHSEC"

[targets.lms-archive]
url = "{targets}/ok/lms-archive"

[[routes]]
source = "learn365"
events = ["Course*"]
targets = ["crm", "lms-archive"]

[[routes]]
source = "learn365"
events = ["EnrollmentApprovalRequest"]
targets = ["crm"]

[[routes]]
source = "learn365"
events = ["a1"]
targets = ["lms-archive"]
"""

CRM_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CONTENT_TYPE = "application/json; charset=utf-8"

# Microsoft's own unit test (PROVIDERS.md): this body, this secret, this signature.
MS_BODY = (
    b'{\r\n  "Id": "1234567890",\r\n  "Attempt": 1,\r\n  "Properties": {\r\n    "p1": "pv1"\r\n'
    b'  },\r\n  "Notifications": [\r\n    {\r\n      "Action": "a1",\r\n      "d1": "dv1"\r\n'
    b'    },\r\n    {\r\n      "Action": "a1",\r\n      "d2": "http://localhost"\r\n    }\r\n'
    b"  ]\r\n}"
)
MS_SIGNATURE = "sha256=DCDEB62502988CDEDE464AF6A97566D61288C446CFC46F74F341E11173FF30A1"


def sign(body: bytes, secret: str = LEARN365_SECRET) -> str:
    """`ms-signature` as the sender computes it: upper-case hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().upper()


def indented(document: dict[str, Any]) -> bytes:
    """Serialised as the sender does: indented by 2 spaces, CRLF line ends."""
    return json.dumps(document, indent=2).replace("\n", "\r\n").encode()


def notification_body(
    notifications: list[dict[str, Any]], *, hook_id: str | None = None, attempt: int = 1
) -> tuple[str, bytes]:
    """(Id, body) of a Learn365 POST carrying these notifications."""
    hook_id = hook_id or uuid.uuid4().hex
    document = {
        "Id": hook_id,
        "Attempt": attempt,
        "Properties": {"TenantId": "contoso.sharepoint.com"},
        "Notifications": notifications,
    }
    return hook_id, indented(document)


def split_body(body: bytes, notification: dict[str, Any]) -> bytes:
    """The sender's text with its Notifications array cut to one notification, as it wrote it.

    Independent of relay: the element's text is the sender's own indentation of it at depth 2.
    """
    marker = b'"Notifications": '
    head = body[: body.index(marker) + len(marker)]
    tail = body[body.rindex(b"]") + 1 :]
    element = indented(notification).replace(b"\r\n", b"\r\n    ")
    return head + b"[" + element + b"]" + tail


def signed(body: bytes) -> dict[str, str]:
    """The headers of a signed Learn365 POST."""
    return {"Content-Type": CONTENT_TYPE, "ms-signature": sign(body)}


def course_completed(user: str = "learner@contoso.com") -> dict[str, Any]:
    return {"Action": "CourseCompleted", "CourseId": "42", "UserLoginName": user}


def test_the_known_answer_vector_is_what_the_sender_computes() -> None:
    assert indented(orjson.loads(MS_BODY)) == MS_BODY  # our serialisation is the sender's
    assert sign(MS_BODY) == MS_SIGNATURE


def test_known_answer_request_is_verified_split_and_delivered(relay: Relay) -> None:
    answer = relay.accept(
        "learn365", MS_BODY, {"Content-Type": CONTENT_TYPE, "ms-signature": MS_SIGNATURE}
    )
    reply = answer.json()
    parent = reply["id"]
    assert reply["events"] == [
        {"id": f"{parent}-0", "type": "a1", "targets": ["lms-archive"]},
        {"id": f"{parent}-1", "type": "a1", "targets": ["lms-archive"]},
    ]
    relay.settle(f"{parent}-0", f"{parent}-1")
    head = (
        b'{\r\n  "Id": "1234567890",\r\n  "Attempt": 1,\r\n'
        b'  "Properties": {\r\n    "p1": "pv1"\r\n  },\r\n  "Notifications": '
    )
    expected = [
        head + b'[{\r\n      "Action": "a1",\r\n      "d1": "dv1"\r\n    }]\r\n}',
        head + b'[{\r\n      "Action": "a1",\r\n      "d2": "http://localhost"\r\n    }]\r\n}',
    ]
    for index, body in enumerate(expected):
        event_id = f"{parent}-{index}"
        got = relay.deliveries(event_id)
        assert list(got) == ["lms-archive"]
        [received] = got["lms-archive"]
        assert_delivery(
            received,
            event_id=event_id,
            source="learn365",
            event_type="a1",
            body=body,
            content_type=CONTENT_TYPE,
            secret=None,
        )
        assert "ms-signature" not in received.headers  # it signed the whole original body


def test_single_notification_is_delivered_byte_for_byte_with_its_signature(relay: Relay) -> None:
    _, body = notification_body([course_completed()])
    assert b"\r\n  " in body
    answer = relay.accept("learn365", body, signed(body))
    [event_id] = answer.event_ids()
    assert answer.json()["events"][0]["targets"] == ["crm", "lms-archive"]
    relay.settle(event_id)
    got = relay.deliveries(event_id)
    assert sorted(got) == ["crm", "lms-archive"]
    for name, secret in (("crm", CRM_SECRET), ("lms-archive", None)):
        [received] = got[name]
        assert_delivery(
            received,
            event_id=event_id,
            source="learn365",
            event_type="CourseCompleted",
            body=body,
            content_type=CONTENT_TYPE,
            secret=secret,
        )
        # The provider's own signature still verifies downstream: same bytes.
        assert received.headers["ms-signature"] == sign(body)


def test_several_notifications_each_reach_only_their_own_targets(relay: Relay) -> None:
    notifications = [
        {"Action": "CourseEnrollment", "CourseId": "7", "UserLoginName": "a@contoso.com"},
        {"Action": "EnrollmentApprovalRequest", "CourseId": "7", "UserLoginName": "b@contoso.com"},
        {"Action": "CoursePublished", "CourseId": "8"},
        {"Action": "SomethingNew", "CourseId": "9"},
    ]
    _, body = notification_body(notifications)
    answer = relay.accept("learn365", body, signed(body))
    reply = answer.json()
    parent = reply["id"]
    ids = [f"{parent}-{i}" for i in range(4)]
    assert reply["events"] == [
        {"id": ids[0], "type": "CourseEnrollment", "targets": ["crm", "lms-archive"]},
        {"id": ids[1], "type": "EnrollmentApprovalRequest", "targets": ["crm"]},
        {"id": ids[2], "type": "CoursePublished", "targets": ["crm", "lms-archive"]},
        {"id": ids[3], "type": "SomethingNew", "targets": []},
    ]
    assert relay.is_unrouted(ids[3])
    relay.settle(*ids)
    expected_targets = [["crm", "lms-archive"], ["crm"], ["crm", "lms-archive"], []]
    for event_id, notification, targets in zip(ids, notifications, expected_targets, strict=True):
        got = relay.deliveries(event_id)
        assert sorted(got) == targets
        for name in targets:
            [received] = got[name]
            assert_delivery(
                received,
                event_id=event_id,
                source="learn365",
                event_type=notification["Action"],
                body=split_body(body, notification),  # the sender's own text, cut down
                content_type=CONTENT_TYPE,
                secret=CRM_SECRET if name == "crm" else None,
            )
            assert "ms-signature" not in received.headers


def test_a_split_keeps_every_number_of_its_notification(relay: Relay) -> None:
    # The sender serialises with Newtonsoft.Json, which writes a .NET decimal with all of its
    # digits (100m / 3 is 33.333333333333333333333333333) and a ulong up to 2^64 - 1. A split body
    # is re-serialised by relay, so it must carry the same numbers, not their nearest doubles.
    score = "33.333333333333333333333333333"
    big = "18446744073709551616"  # one past ulong: a .NET decimal or BigInteger
    hook_id = uuid.uuid4().hex
    lines = [
        "{",
        f'  "Id": "{hook_id}",',
        '  "Attempt": 1,',
        '  "Properties": {},',
        '  "Notifications": [',
        "    {",
        '      "Action": "CourseCompleted",',
        f'      "Score": {score},',
        f'      "Ticks": {big}',
        "    },",
        "    {",
        '      "Action": "CourseStarted",',
        '      "Progress": 0.10',
        "    }",
        "  ]",
        "}",
    ]
    body = "\r\n".join(lines).encode()
    original = json.loads(body, parse_float=Decimal)["Notifications"]
    answer = relay.accept("learn365", body, signed(body))
    ids = answer.event_ids()
    relay.settle(*ids)
    for event_id, notification in zip(ids, original, strict=True):
        [received] = relay.deliveries(event_id)["crm"]
        delivered = json.loads(received.body, parse_float=Decimal)["Notifications"]
        assert delivered == [notification]


def test_retries_with_the_same_id_are_delivered_once(relay: Relay) -> None:
    hook_id = uuid.uuid4().hex
    attempts = [
        notification_body([course_completed()], hook_id=hook_id, attempt=n) for n in (1, 2, 3)
    ]
    signatures = [sign(body) for _, body in attempts]
    assert len(set(signatures)) == 3  # Attempt changes the bytes, hence the signature
    answers = [relay.accept("learn365", body, signed(body)) for _, body in attempts]
    first_id = answers[0].event_ids()[0]
    assert [a.json()["duplicate"] for a in answers] == [False, True, True]
    for answer in answers[1:]:
        assert answer.json()["events"][0]["duplicate_of"] == first_id
    all_ids = [a.event_ids()[0] for a in answers]
    relay.settle(*all_ids)
    assert relay.states(first_id) == {"crm": "delivered", "lms-archive": "delivered"}
    for event_id in all_ids[1:]:
        assert relay.states(event_id) == {"crm": "duplicate", "lms-archive": "duplicate"}
        assert relay.deliveries(event_id) == {}
    got = relay.deliveries(first_id)
    assert [len(got["crm"]), len(got["lms-archive"])] == [1, 1]
    assert got["crm"][0].body == attempts[0][1]


def test_a_split_request_retried_is_delivered_once_per_notification(relay: Relay) -> None:
    hook_id = uuid.uuid4().hex
    notifications = [course_completed("c@contoso.com"), course_completed("d@contoso.com")]
    _, first_body = notification_body(notifications, hook_id=hook_id, attempt=1)
    _, retry_body = notification_body(notifications, hook_id=hook_id, attempt=2)
    first = relay.accept("learn365", first_body, signed(first_body))
    retry = relay.accept("learn365", retry_body, signed(retry_body))
    assert retry.json()["duplicate"] is True
    assert [e["duplicate_of"] for e in retry.json()["events"]] == first.event_ids()
    relay.settle(*first.event_ids(), *retry.event_ids())
    for event_id in first.event_ids():
        assert sorted(relay.deliveries(event_id)) == ["crm", "lms-archive"]
    for event_id in retry.event_ids():
        assert relay.deliveries(event_id) == {}


@pytest.mark.parametrize("case", [str.lower, lambda s: "SHA256=" + s[7:].lower()])
def test_either_hex_case_and_prefix_case_are_accepted(
    relay: Relay, case: Callable[[str], str]
) -> None:
    _, body = notification_body([course_completed()])
    headers = {"Content-Type": CONTENT_TYPE, "ms-signature": case(sign(body))}
    answer = relay.accept("learn365", body, headers)
    relay.settle(*answer.event_ids())


def test_registration_handshake_echoes_the_value_as_plain_text(relay: Relay) -> None:
    before = relay.recorded()
    echo = uuid.uuid4().hex
    answer = relay.request("GET", relay.path("learn365", query=f"echo={echo}"))
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert answer.body == echo.encode()  # exactly the value, nothing else
    assert relay.recorded() == before


def test_handshake_needs_the_token_and_an_echo_value(relay: Relay) -> None:
    before = relay.recorded()
    wrong = relay.request(
        "GET", relay.path("learn365", token="learn365-wrong-token", query="echo=x")
    )
    assert_error(wrong, 401, "token in the path is wrong")
    assert_error(relay.request("GET", relay.path("learn365")), 400, "?echo=")
    assert relay.recorded() == before


def test_notification_without_action_is_acknowledged_as_unrouted(relay: Relay) -> None:
    _, body = notification_body([{"CourseId": "42"}])
    answer = relay.accept("learn365", body, signed(body))
    [event_id] = answer.event_ids()
    assert answer.json()["events"] == [{"id": event_id, "type": None, "targets": []}]
    assert relay.is_unrouted(event_id)
    assert relay.stored(event_id).body == body


def _good() -> bytes:
    return notification_body([course_completed()])[1]


# (name, body, headers, token, status, message): each exactly as a broken sender would send it.
BAD: list[tuple[str, bytes, dict[str, str], str | None, int, str]] = [
    ("missing signature", _good(), {"Content-Type": CONTENT_TYPE}, "", 400, "missing"),
    (
        "malformed signature",
        _good(),
        {"Content-Type": CONTENT_TYPE, "ms-signature": "sha256=not-hex"},
        "",
        400,
        "sha256=<64 hex digits>",
    ),
    (
        "signature without prefix",
        (b := _good()),
        {"Content-Type": CONTENT_TYPE, "ms-signature": sign(b)[7:]},
        "",
        400,
        "sha256=<64 hex digits>",
    ),
    (
        "signed with another secret",
        (b := _good()),
        {"Content-Type": CONTENT_TYPE, "ms-signature": sign(b, "another-secret-" + "x" * 20)},
        "",
        401,
        "does not match",
    ),
    (
        "signature of another attempt",
        _good(),
        {"Content-Type": CONTENT_TYPE, "ms-signature": sign(_good())},
        "",
        401,
        "does not match",
    ),
    (
        "text/plain content type",
        (b := _good()),
        {"Content-Type": "text/plain; charset=utf-8", "ms-signature": sign(b)},
        "",
        415,
        "takes application/json",
    ),
    (
        "form content type",
        (b := _good()),
        {"Content-Type": "application/x-www-form-urlencoded", "ms-signature": sign(b)},
        "",
        415,
        "takes application/json",
    ),
    (
        "no content type",
        (b := _good()),
        {"ms-signature": sign(b)},
        "",
        415,
        "takes application/json",
    ),
    (
        "body not JSON",
        (b := b"Id=1&Action=CourseCompleted"),
        signed(b),
        "",
        400,
        "not valid JSON",
    ),
    (
        "no Notifications",
        (b := indented({"Id": uuid.uuid4().hex, "Attempt": 1, "Properties": {}})),
        signed(b),
        "",
        400,
        "'Notifications'",
    ),
    (
        "empty Notifications",
        (b := notification_body([])[1]),
        signed(b),
        "",
        400,
        "'Notifications'",
    ),
    ("empty body, signed", b"", signed(b""), "", 400, "empty"),
    ("empty body, unsigned", b"", {"Content-Type": CONTENT_TYPE}, "", 400, "missing"),
    (
        "oversized body",
        (
            b := indented(
                {"Id": "x", "Notifications": [{"Action": "CourseStarted", "x": "y" * 1048576}]}
            )
        ),
        signed(b),
        "",
        413,
        "at most 1048576",
    ),
    ("no token", (b := _good()), signed(b), None, 401, "needs its token"),
    (
        "wrong token",
        (b := _good()),
        signed(b),
        "learn365-wrong-token",
        401,
        "token in the path is wrong",
    ),
]


@pytest.mark.parametrize(
    ("body", "headers", "token", "status", "message"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
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
    assert_error(relay.send("learn365", body, headers, token=token), status, message)
    assert relay.recorded() == before
    # A good request after it is delivered, and no target ever saw an unacknowledged event.
    _, sentinel = notification_body([course_completed()])
    relay.settle(*relay.accept("learn365", sentinel, signed(sentinel)).event_ids())
    relay.assert_only_accepted_delivered()


def test_wrong_method_is_405_listing_get(relay: Relay) -> None:
    answer = relay.send("learn365", b"", {}, method="DELETE")
    assert_error(answer, 405, "not DELETE")
    assert answer.headers["allow"] == "POST, PUT, GET"
