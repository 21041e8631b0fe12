"""Event ids: `evt_` and a ULID (time-sortable, 128 bits), safe as RQ job ids and in URLs."""

from __future__ import annotations

import base64
import random
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: RFC 4648 base32 to Crockford's alphabet: the stdlib's C encoder does the work (the receiver
#: makes an id per request, and a Python loop over 26 digits cost 2% of its time).
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD.encode())


def new_event_id(now: float | None = None) -> str:
    """A new id: 48 bits of milliseconds then 80 random bits, base32 (Crockford's letters).

    Most significant bits first, so ids sort by creation time (to the millisecond).
    """
    millis = int((time.time() if now is None else now) * 1000)
    # `random`, not os.urandom: ids must be unique, not secret, and a getrandom system call per
    # request showed up at ~5% of the receiver's time. The module's generator is seeded from
    # os.urandom and re-seeded in every forked child, so processes never share a sequence.
    raw = millis.to_bytes(6, "big") + random.getrandbits(80).to_bytes(10, "big")
    return "evt_" + base64.b32encode(raw)[:26].translate(_TO_CROCKFORD).decode()


def derived_event_id(parent: str, index: int) -> str:
    """The id of the index-th event split out of one request (ASP.NET notifications)."""
    return f"{parent}-{index}"


def is_event_id(value: str) -> bool:
    """Whether a string has the shape of an event id (for operator input)."""
    head, _, rest = value.partition("-")
    return (
        len(head) == 30
        and head.startswith("evt_")
        and all(ch in _CROCKFORD for ch in head[4:])
        and (rest == "" or rest.isdigit())
    )
