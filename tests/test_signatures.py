"""Signatures: the providers' known answers, and sign-then-verify round trips (Hypothesis)."""

from __future__ import annotations

import base64
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from relay.core.errors import BadRequest, Unauthorized
from relay.core.secrets import Secret
from relay.core.signatures import (
    ms_signature,
    sign_standard,
    standard_signature,
    verify_ms_signature,
    verify_standard,
)

# Standard Webhooks known answer (PROVIDERS.md, from the spec's reference libraries).
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TS = 1614265330
SW_BODY = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

# ASP.NET WebHooks known answer (Microsoft's own unit test, PROVIDERS.md).
MS_SECRET = "123456789012345678901234567890123456789012345678"
MS_BODY = (
    b'{\r\n  "Id": "1234567890",\r\n  "Attempt": 1,\r\n  "Properties": {\r\n    "p1": "pv1"\r\n'
    b'  },\r\n  "Notifications": [\r\n    {\r\n      "Action": "a1",\r\n      "d1": "dv1"\r\n'
    b'    },\r\n    {\r\n      "Action": "a1",\r\n      "d2": "http://localhost"\r\n    }\r\n'
    b"  ]\r\n}"
)
MS_SIGNATURE = "sha256=DCDEB62502988CDEDE464AF6A97566D61288C446CFC46F74F341E11173FF30A1"


def sw_key() -> bytes:
    return Secret(SW_SECRET).key_bytes()


class TestStandardWebhooksKnownAnswer:
    def test_signature(self) -> None:
        assert standard_signature(sw_key(), SW_ID, SW_TS, SW_BODY) == SW_SIGNATURE

    def test_header_with_one_key(self) -> None:
        assert sign_standard([sw_key()], SW_ID, SW_TS, SW_BODY) == SW_SIGNATURE

    def test_verify(self) -> None:
        assert verify_standard(sw_key(), SW_ID, SW_TS, SW_BODY, SW_SIGNATURE)

    def test_rotation_header_lists_every_key_and_each_verifies(self) -> None:
        other = b"another key of 24 bytes!"
        header = sign_standard([other, sw_key()], SW_ID, SW_TS, SW_BODY)
        parts = header.split(" ")
        assert len(parts) == 2
        assert parts[1] == SW_SIGNATURE
        assert verify_standard(sw_key(), SW_ID, SW_TS, SW_BODY, header)
        assert verify_standard(other, SW_ID, SW_TS, SW_BODY, header)

    def test_the_reference_library_accepts_ours(self) -> None:
        now = int(time.time())
        header = sign_standard([sw_key()], SW_ID, now, SW_BODY)
        headers = {"webhook-id": SW_ID, "webhook-timestamp": str(now), "webhook-signature": header}
        assert Webhook(SW_SECRET).verify(SW_BODY, headers) == {"test": 2432232314}


class TestMsSignatureKnownAnswer:
    def test_signature(self) -> None:
        assert ms_signature(MS_SECRET, MS_BODY) == MS_SIGNATURE

    @pytest.mark.parametrize(
        "header", [MS_SIGNATURE, MS_SIGNATURE.lower(), "SHA256=" + MS_SIGNATURE[7:].lower()]
    )
    def test_verify_accepts_either_case(self, header: str) -> None:
        verify_ms_signature(MS_SECRET, MS_BODY, header)

    def test_wrong_body_is_401(self) -> None:
        with pytest.raises(Unauthorized):
            verify_ms_signature(MS_SECRET, MS_BODY + b" ", MS_SIGNATURE)

    @pytest.mark.parametrize("header", [None, "", "sha256=xyz", "md5=" + "0" * 64])
    def test_malformed_header_is_400(self, header: str | None) -> None:
        with pytest.raises(BadRequest):
            verify_ms_signature(MS_SECRET, MS_BODY, header)


keys_st = st.binary(min_size=16, max_size=64)
ids_st = st.from_regex(r"evt_[0-9A-Z]{26}", fullmatch=True)
ts_st = st.integers(min_value=0, max_value=2**40)


@given(keys_st, ids_st, ts_st, st.binary(max_size=512))
def test_sign_then_verify_round_trips(key: bytes, msg_id: str, ts: int, body: bytes) -> None:
    header = sign_standard([key], msg_id, ts, body)
    assert verify_standard(key, msg_id, ts, body, header)


@given(keys_st, ids_st, ts_st, st.binary(min_size=1, max_size=256), st.data())
def test_any_one_byte_change_of_the_body_fails(
    key: bytes, msg_id: str, ts: int, body: bytes, data: st.DataObject
) -> None:
    header = sign_standard([key], msg_id, ts, body)
    index = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    delta = data.draw(st.integers(min_value=1, max_value=255))
    changed = bytearray(body)
    changed[index] = (changed[index] + delta) % 256
    assert not verify_standard(key, msg_id, ts, bytes(changed), header)


@given(keys_st, ids_st, ts_st, st.binary(max_size=128), st.data())
def test_any_one_byte_change_of_the_signature_fails(
    key: bytes, msg_id: str, ts: int, body: bytes, data: st.DataObject
) -> None:
    header = sign_standard([key], msg_id, ts, body)
    raw = bytearray(base64.b64decode(header[3:]))
    index = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    forged = "v1," + base64.b64encode(bytes(raw)).decode()
    assert not verify_standard(key, msg_id, ts, body, forged)


@given(keys_st, keys_st, ids_st, ts_st, st.binary(max_size=128))
def test_another_key_fails(key: bytes, other: bytes, msg_id: str, ts: int, body: bytes) -> None:
    header = sign_standard([key], msg_id, ts, body)
    assert verify_standard(other, msg_id, ts, body, header) == (key == other)


@given(keys_st, ids_st, ts_st, st.binary(max_size=128))
def test_id_and_timestamp_are_covered(key: bytes, msg_id: str, ts: int, body: bytes) -> None:
    header = sign_standard([key], msg_id, ts, body)
    assert not verify_standard(key, msg_id + "x", ts, body, header)
    assert not verify_standard(key, msg_id, ts + 1, body, header)


@given(st.text(min_size=32, max_size=64), st.binary(max_size=256))
def test_ms_signature_round_trips(secret: str, body: bytes) -> None:
    verify_ms_signature(secret, body, ms_signature(secret, body))


@given(st.text(min_size=32, max_size=64), st.binary(min_size=1, max_size=128), st.data())
def test_ms_signature_one_byte_change_fails(secret: str, body: bytes, data: st.DataObject) -> None:
    header = ms_signature(secret, body)
    index = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    changed = bytearray(body)
    changed[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    with pytest.raises(Unauthorized):
        verify_ms_signature(secret, bytes(changed), header)


def test_reference_library_rejects_a_tampered_body() -> None:
    now = int(time.time())
    header = sign_standard([sw_key()], SW_ID, now, SW_BODY)
    headers = {"webhook-id": SW_ID, "webhook-timestamp": str(now), "webhook-signature": header}
    with pytest.raises(WebhookVerificationError):
        Webhook(SW_SECRET).verify(SW_BODY.replace(b"3", b"4"), headers)
