"""Event ids: `evt_` and a ULID (time-sortable, 128 bits), safe as RQ job ids and in URLs."""

from __future__ import annotations

import random
import re
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: Every pair of digits, by the 10 bits it stands for: an id is 13 lookups. The receiver makes an
#: id per request, and base64.b32encode is Python code in 3.11.
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
#: Crockford's letters to the digits `int(..., 32)` reads, so an id's 26 digits parse in C (a
#: bytes table: str.translate looks each character up in a dict, several times slower).
_TO_BASE32 = bytes.maketrans(_CROCKFORD.encode(), b"0123456789abcdefghijklmnopqrstuv")
#: An id as `new_event_id` or `derived_event_id` makes it: one C match where a parse in Python
#: (partition, lengths, a set of the digits) cost each commit about a microsecond per event.
_EVENT_ID = re.compile(r"evt_[0-9A-HJKMNP-TV-Z]{26}(?:-[0-9]+)?")
#: The raw form's size: the ULID's 128 bits (relay.store.events_index stores ids in it).
RAW_SIZE = 16


def new_event_id(now: float | None = None) -> str:
    """A new id: 48 bits of milliseconds then 80 random bits, base32 (Crockford's letters).

    Most significant bits first, so ids sort by creation time (to the millisecond). The 128 bits
    are shifted left by two to fill 26 digits of 5 bits, as RFC 4648 base32 pads its last digit.
    """
    millis = int((time.time() if now is None else now) * 1000) & 0xFFFF_FFFF_FFFF
    # `random`, not os.urandom: ids must be unique, not secret, and a getrandom system call per
    # request is a cost the receiver need not pay. The module's generator is seeded from
    # os.urandom and re-seeded in every forked child, so processes never share a sequence.
    # The 80 random bits are drawn as digits rather than as one number spelled out digit by
    # digit (13 shifts of a 130-bit integer, about half of what an id cost): digit 9 takes
    # the last 3 bits of the time and 2 random bits, digits 10 to 24 the low 5 bits of a
    # random byte each (256 is a multiple of 32: each digit is uniform), digit 25 3 random bits
    # and the shift's two zeros.
    draw = random.randbytes(16)
    spare = draw[15]
    digits = draw[:15]
    event_id = (
        _TIME_DIGITS(millis >> 3)
        + _CROCKFORD[(millis & 7) << 2 | spare & 3]
        + digits.translate(_DIGIT_OF_BYTE).decode("ascii")
        + _LAST_DIGIT[spare >> 2 & 7]
    )
    # Its compact form, from the same bits (a third of what id_to_bytes costs to read it back
    # out of the text), kept for id_to_bytes: the receiver's commit asks for it.
    ulid = (millis << 2 | spare & 3) << 75 | int(digits.translate(_BASE32_OF_BYTE), 32)
    if len(_COMPACT_OF_NEW) >= COMPACT_MEMO_MAX:
        _COMPACT_OF_NEW.clear()
    _COMPACT_OF_NEW[event_id] = (ulid << 3 | spare >> 2 & 7).to_bytes(RAW_SIZE, "big")
    return event_id


#: The compact form of the ids `new_event_id` made, until `id_to_bytes` asks for it (once: it
#: is taken out). Bounded, since an id may never be asked for (a refused body, another process's
#: use): emptied when full, after which those ids are read back the longer way.
_COMPACT_OF_NEW: dict[str, bytes] = {}
COMPACT_MEMO_MAX = 4096


class _TimeDigits:
    """`evt_` and an id's first nine digits, the top 45 of its 48 bits of milliseconds: the
    same for every id of eight milliseconds, so spelled out once for them."""

    def __init__(self) -> None:
        # (the 45 bits, their text) as one value: one assignment cannot be seen half done.
        self._cached: tuple[int, str] = (-1, "")

    def __call__(self, high: int) -> str:
        cached = self._cached
        if cached[0] != high:
            cached = (high, _text(high << 83)[:13])
            self._cached = cached
        return cached[1]


_TIME_DIGITS = _TimeDigits()
#: A byte to the digit of its low five bits.
_DIGIT_OF_BYTE = bytes.maketrans(
    bytes(range(256)), bytes(_CROCKFORD.encode()[b & 31] for b in range(256))
)
#: A byte to the digit of its low five bits as `int(..., 32)` reads it.
_BASE32_OF_BYTE = bytes.maketrans(
    bytes(range(256)), bytes(b"0123456789abcdefghijklmnopqrstuv"[b & 31] for b in range(256))
)
#: The last digit: 3 random bits, then the two zero bits of the shift.
_LAST_DIGIT = [_CROCKFORD[bits << 2] for bits in range(8)]


def _text(ulid: int) -> str:
    """`evt_` and the 26 digits of a 128-bit ULID (shifted left by two: new_event_id)."""
    v = ulid << 2
    p = _PAIRS
    return (
        f"evt_{p[v >> 120]}{p[(v >> 110) & 1023]}{p[(v >> 100) & 1023]}{p[(v >> 90) & 1023]}"
        f"{p[(v >> 80) & 1023]}{p[(v >> 70) & 1023]}{p[(v >> 60) & 1023]}{p[(v >> 50) & 1023]}"
        f"{p[(v >> 40) & 1023]}{p[(v >> 30) & 1023]}{p[(v >> 20) & 1023]}{p[(v >> 10) & 1023]}"
        f"{p[v & 1023]}"
    )


def derived_event_id(parent: str, index: int) -> str:
    """The id of the index-th event split out of one request (ASP.NET notifications)."""
    return f"{parent}-{index}"


def is_event_id(value: str) -> bool:
    """Whether a string has the shape of an event id (for operator input): `evt_`, 26 of
    Crockford's digits, and for a derived id `-` and its index in ASCII digits."""
    return _EVENT_ID.fullmatch(value) is not None


def id_to_bytes(event_id: str) -> bytes:
    """An event id's compact form for the events index: its ULID's 16 bytes (most significant
    first), then for a derived id its `-index` as ASCII. 18 bytes of list entry instead of 32.

    Raises ValueError for anything `new_event_id` or `derived_event_id` could not have made.
    """
    compact = _COMPACT_OF_NEW.pop(event_id, None)
    if compact is not None:
        return compact
    if _EVENT_ID.fullmatch(event_id) is None:
        raise ValueError(f"not an event id: {event_id!r}")
    v = int(event_id[4:30].encode("ascii").translate(_TO_BASE32), 32)
    if v & 3:
        # 130 bits of digits hold 128 shifted left by two: the last two are always zero. The
        # shape is right (is_event_id), so an operator's hint does not call it malformed.
        raise ValueError(f"not an event id (its last digit has low bits set): {event_id!r}")
    return (v >> 2).to_bytes(RAW_SIZE, "big") + event_id[30:].encode("ascii")


def id_from_bytes(raw: bytes) -> str:
    """The event id whose compact form is `raw` (the inverse of `id_to_bytes`)."""
    tail = raw[RAW_SIZE:]
    if len(raw) < RAW_SIZE or (
        tail and not (tail[:1] == b"-" and tail[1:].isdigit() and tail[1:].isascii())
    ):
        raise ValueError(f"not an event id's compact form: {raw!r}")
    return _text(int.from_bytes(raw[:RAW_SIZE], "big")) + tail.decode("ascii")
