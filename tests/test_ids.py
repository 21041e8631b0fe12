"""Event ids: shape, uniqueness, and order by creation time."""

from __future__ import annotations

import base64
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.core.ids import (
    _COMPACT_OF_NEW,
    COMPACT_MEMO_MAX,
    derived_event_id,
    id_from_bytes,
    id_to_bytes,
    is_event_id,
    new_event_id,
)


def test_ids_have_the_documented_shape_and_are_unique() -> None:
    ids = [new_event_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for event_id in ids[:100]:
        assert len(event_id) == 30
        assert event_id.startswith("evt_")
        assert is_event_id(event_id)
        # Safe as an RQ job id and in a URL path.
        assert all(ch.isalnum() or ch in "_-" for ch in event_id)


@given(
    st.floats(min_value=0, max_value=2**47 / 1000, allow_nan=False),
    st.floats(min_value=0.001, max_value=10**6),
)
def test_ids_sort_by_creation_time(earlier: float, gap: float) -> None:
    later = earlier + gap
    if int(later * 1000) > int(earlier * 1000):  # ids are precise to the millisecond
        assert new_event_id(earlier) < new_event_id(later)


def test_derived_ids_are_recognised_and_others_are_not() -> None:
    parent = new_event_id()
    assert is_event_id(derived_event_id(parent, 3))
    assert derived_event_id(parent, 3) == f"{parent}-3"
    for bad in (
        "",
        "evt_",
        parent[:-1],
        parent + "-x",
        parent.replace("evt_", "ev_"),
        "evt_" + "U" * 26,
        parent + "-",  # a dash and no index
        parent + "-\u0663",  # a digit, but not an ASCII one
    ):
        assert not is_event_id(bad)
        with pytest.raises(ValueError, match="not an event id"):
            id_to_bytes(bad)  # the index's compact form refuses whatever is_event_id does
    # The right shape, but a last digit with its two low bits set: never made by relay, so the
    # index refuses it, while an operator's hint does not call it malformed.
    low_bits = parent[:-1] + "1"
    assert is_event_id(low_bits)
    with pytest.raises(ValueError, match="low bits"):
        id_to_bytes(low_bits)


@given(st.floats(min_value=0, max_value=2**47 / 1000, allow_nan=False), st.integers(0, 2**32 - 1))
def test_ids_are_the_ulid_of_time_and_random_bits(now: float, seed: int) -> None:
    # Reference: the 16 bytes (48 bits of milliseconds, 80 random bits) in RFC 4648 base32,
    # spelled with Crockford's digits. The random bits are drawn as 16 bytes: 2 bits of the
    # last, then the low 5 bits of each of the first 15, then 3 more bits of the last.
    state = random.getstate()  # the ids of other tests must stay random
    random.seed(seed)
    draw = random.randbytes(16)
    bits = (draw[15] & 3) << 78 | (draw[15] >> 2) & 7
    for i, byte in enumerate(draw[:15]):
        bits |= (byte & 31) << (73 - 5 * i)
    raw = int(now * 1000).to_bytes(6, "big") + bits.to_bytes(10, "big")
    crockford = bytes.maketrans(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    )
    expected = "evt_" + base64.b32encode(raw)[:26].translate(crockford).decode()
    random.seed(seed)
    try:
        event_id = new_event_id(now)
        assert event_id == expected
        # The compact form is those 16 bytes.
        assert id_to_bytes(event_id) == raw
    finally:
        random.setstate(state)


@given(st.binary(min_size=16, max_size=16), st.none() | st.integers(0, 10**9))
def test_compact_form_round_trips(raw: bytes, index: int | None) -> None:
    event_id = id_from_bytes(raw)
    assert is_event_id(event_id)
    assert id_to_bytes(event_id) == raw
    if index is not None:
        derived = derived_event_id(event_id, index)
        compact = id_to_bytes(derived)
        assert compact == raw + f"-{index}".encode()
        assert id_from_bytes(compact) == derived


@given(st.floats(min_value=0, max_value=2**47 / 1000, allow_nan=False))
def test_compact_form_of_new_ids(now: float) -> None:
    event_id = new_event_id(now)
    compact = id_to_bytes(event_id)  # the one new_event_id kept
    assert len(compact) == 16
    assert id_to_bytes(event_id) == compact  # read back out of the text, the second time
    assert id_from_bytes(compact) == event_id


def test_the_compact_forms_kept_are_bounded() -> None:
    made = [new_event_id() for _ in range(COMPACT_MEMO_MAX + 10)]
    assert len(_COMPACT_OF_NEW) <= COMPACT_MEMO_MAX
    # Kept or not, every id's compact form is the same.
    assert [id_from_bytes(id_to_bytes(event_id)) for event_id in made] == made


def test_compact_form_rejects_malformed_input() -> None:
    parent = new_event_id()
    for bad in (
        "",
        "evt_1",
        parent[:-1],
        parent + "0",
        parent + "-x",
        parent + "-",
        parent + "-\u00b2",
        parent.replace("evt_", "ev_"),
        parent.lower(),
        "evt_" + "U" * 26,
        parent[:-1] + "1",  # low bits set: no 128-bit ULID spells it
    ):
        with pytest.raises(ValueError, match="not an event id"):
            id_to_bytes(bad)
    for raw in (b"", b"\x00" * 15, b"\x00" * 16 + b"3", b"\x00" * 16 + b"-", b"\x00" * 16 + b"-a"):
        with pytest.raises(ValueError, match="compact form"):
            id_from_bytes(raw)
