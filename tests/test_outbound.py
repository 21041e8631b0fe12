"""The outbound request: body bytes, headers, signature, and what targets may not override."""

from __future__ import annotations

import time

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from relay.config.model import Target
from relay.core.errors import ConfigError
from relay.core.headers import is_forwarded, is_reserved
from relay.core.secrets import Secret
from relay.core.signatures import verify_standard
from relay.store.records import Event
from worker.outbound import USER_AGENT, build_request, form_to_json

SECRET_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_B = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"  # base64 of 24 ASCII letters


def event(**overrides: object) -> Event:
    base: dict[str, object] = {
        "id": "evt_01JD0000000000000000000000",
        "source": "learn365",
        "type": "CourseCompleted",
        "received_at": 1_700_000_000.0,
        "content_type": "application/json; charset=utf-8",
        "method": "POST",
        "headers": (
            ("ms-signature", "sha256=ABC"),
            ("x-event-type", "CourseCompleted"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-real-ip", "10.0.0.1"),
            ("x-custom", "kept"),
            ("user-agent", "Learn365/1.0"),
            ("accept", "*/*"),
        ),
        "body": b'{\r\n  "Id": "1",\r\n  "x": [1, 2]\r\n}',
        "targets": ("crm",),
    }
    base.update(overrides)
    return Event(**base)  # type: ignore[arg-type]


def target(**overrides: object) -> Target:
    base: dict[str, object] = {"name": "crm", "url": "https://crm.example.com/hooks"}
    base.update(overrides)
    return Target(**base)  # type: ignore[arg-type]


def test_body_and_content_type_are_the_originals() -> None:
    ev = event()
    req = build_request(ev, target(), 1, 1_700_000_000)
    assert req.body == ev.body
    assert req.header("content-type") == "application/json; charset=utf-8"
    assert req.url == "https://crm.example.com/hooks"


def test_relay_and_standard_webhooks_headers() -> None:
    req = build_request(event(), target(), 3, 1_700_000_123)
    assert req.header("webhook-id") == "evt_01JD0000000000000000000000"
    assert req.header("webhook-timestamp") == "1700000123"
    assert req.header("x-relay-source") == "learn365"
    assert req.header("x-relay-event") == "CourseCompleted"
    assert req.header("x-relay-attempt") == "3"
    assert req.header("user-agent") == USER_AGENT
    assert req.header("webhook-signature") is None  # no signing secret: unsigned


def test_provider_headers_forwarded_selectively() -> None:
    req = build_request(event(), target(), 1, 1_700_000_000)
    names = {name for name, _ in req.headers}
    assert req.header("ms-signature") == "sha256=ABC"
    assert req.header("x-event-type") == "CourseCompleted"
    assert req.header("x-custom") == "kept"
    assert not names & {"x-forwarded-for", "x-real-ip", "accept"}
    assert req.header("user-agent") == USER_AGENT


def test_header_names_are_unique_and_lower_case() -> None:
    req = build_request(event(), target(), 1, 1_700_000_000)
    names = [name for name, _ in req.headers]
    assert len(names) == len(set(names))
    assert all(name == name.lower() for name in names)


def test_signature_with_rotation_verifies_with_each_key_and_the_reference_library() -> None:
    secrets = (Secret(SECRET_A, "A"), Secret(SECRET_B, "B"))
    now = int(time.time())
    ev = event()
    req = build_request(ev, target(signing_secrets=secrets), 1, now)
    header = req.header("webhook-signature")
    assert header is not None
    assert len(header.split(" ")) == 2
    for secret in secrets:
        assert verify_standard(secret.key_bytes(), ev.id, now, req.body, header)
        Webhook(secret.reveal()).verify(req.body, dict(req.headers), json_parse=False)


def test_target_headers_added_but_cannot_override_the_contract() -> None:
    extra = (
        ("authorization", Secret("Bearer s3cr3t", "CRM_TOKEN")),
        ("webhook-id", Secret("forged")),
        ("content-type", Secret("text/plain")),
        ("x-relay-attempt", Secret("99")),
        ("x-custom", Secret("overridden")),
        ("user-agent", Secret("mine/1")),
    )
    req = build_request(event(), target(headers=extra), 2, 1_700_000_000)
    assert req.header("authorization") == "Bearer s3cr3t"
    assert req.header("webhook-id") == "evt_01JD0000000000000000000000"
    assert req.header("content-type") == "application/json; charset=utf-8"
    assert req.header("x-relay-attempt") == "2"
    assert req.header("x-custom") == "overridden"
    assert req.header("user-agent") == "mine/1"


def test_form_body_converted_to_json_for_json_targets() -> None:
    ev = event(
        content_type="application/x-www-form-urlencoded",
        body=b"event=COURSEMEMBER_CREATED&courseId=12&memberId=a%20b&empty=",
        headers=(("ms-signature", "sha256=ABC"), ("x-custom", "kept")),
    )
    secrets = (Secret(SECRET_A, "A"),)
    req = build_request(ev, target(body="json", signing_secrets=secrets), 1, 1_700_000_000)
    assert req.header("content-type") == "application/json"
    assert orjson.loads(req.body) == {
        "event": "COURSEMEMBER_CREATED",
        "courseId": "12",
        "memberId": "a b",
        "empty": "",
    }
    # The provider's signature covered the form bytes: it is not forwarded with the JSON.
    assert req.header("ms-signature") is None
    assert req.header("x-custom") == "kept"
    header = req.header("webhook-signature")
    assert header is not None
    assert verify_standard(secrets[0].key_bytes(), ev.id, 1_700_000_000, req.body, header)


def test_json_target_keeps_json_bodies_unchanged() -> None:
    ev = event()
    req = build_request(ev, target(body="json"), 1, 1_700_000_000)
    assert req.body == ev.body


def test_unrouted_type_header_is_empty_not_none() -> None:
    assert build_request(event(type=None), target(), 1, 0).header("x-relay-event") == ""


@pytest.mark.parametrize(
    ("name", "forwarded"),
    [
        ("ms-signature", True),
        ("x-event-type", True),
        ("X-Hook-Id", True),
        ("x-forwarded-proto", False),
        ("x-real-ip", False),
        ("x-relay-attempt", False),
        ("x-hook-secret", False),
        ("authorization", False),
        ("user-agent", False),
    ],
)
def test_is_forwarded(name: str, forwarded: bool) -> None:
    assert is_forwarded(name) is forwarded


@pytest.mark.parametrize(
    ("name", "reserved"),
    [
        ("webhook-signature", True),
        ("webhook-foo", True),
        ("Content-Type", True),
        ("connection", True),
        ("x-relay-source", True),
        ("x-a", False),
    ],
)
def test_is_reserved(name: str, reserved: bool) -> None:
    assert is_reserved(name) is reserved


def test_config_refuses_exactly_what_delivery_would_strip() -> None:
    # One policy: a header routes.toml accepts in a target's `headers` reaches the target.
    from relay.config.loading import parse_routes

    for name in ("connection", "webhook-foo", "x-relay-x", "host"):
        text = f'[targets.t]\nurl = "http://127.0.0.1:1/"\nheaders = {{ "{name}" = "v" }}\n'
        with pytest.raises(ConfigError, match="set by relay itself"):
            parse_routes(text, "routes.toml", {})


def test_form_to_json_rejects_non_utf8() -> None:
    assert form_to_json(b"\xff\xfe=1") is None


@given(st.binary(max_size=2048), st.integers(min_value=1, max_value=100))
def test_original_body_is_never_altered(body: bytes, attempt: int) -> None:
    ev = event(body=body, content_type="application/octet-stream")
    req = build_request(ev, target(), attempt, 1_700_000_000)
    assert req.body == body
    assert req.header("x-relay-attempt") == str(attempt)
