"""The Lua scripts of relay.store, read once from the .lua files beside this module.

The codec's names (field prefixes, state words, counters) reach a script either as arguments
(the commit script, whose caller packs them) or through a preamble of Lua `local`s rendered here
from relay.store.records, so no name is spelled both in Python and in Lua.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib.resources import files

from relay.core.states import DEAD_LETTER_STATES, DONE_STATES
from relay.store import events_index
from relay.store.control import WAITING_FIELD, Held
from relay.store.keys import EVENTS_BUCKET_PREFIX
from relay.store.records import (
    ATTEMPT_PREFIX,
    ATTEMPTS_PREFIX,
    BEFORE_REPLAY_PREFIX,
    BODY_FIELD,
    ORDER_PREFIX,
    PART,
    PARTS_MAX,
    REASON_PREFIX,
    RECEIVED_FIELD,
    SPLIT_FIELDS,
    STATE_PREFIX,
    DeliveryState,
    SourceStat,
    TargetStat,
)

#: What a name rendered into Lua may hold: quoting is then never needed.
_SAFE = re.compile(r"^[A-Za-z0-9_:.#-]*$")


def read(name: str) -> str:
    """The text of relay/store/lua/{name}.lua."""
    return files("relay.store").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def _string(value: str) -> str:
    if not _SAFE.match(value):
        raise ValueError(f"{value!r} cannot be rendered into a Lua script as it is")
    return f"'{value}'"


def _set(values: Iterable[str]) -> str:
    return "{" + ", ".join(f"[{_string(v)}] = true" for v in sorted(values)) + "}"


def _locals(names: dict[str, str]) -> str:
    return "".join(f"local {name} = {value}\n" for name, value in names.items())


def commit_preamble() -> str:
    """Lua locals holding the codec's names that the intake commit writes."""
    return _locals(
        {
            "RECEIVED_FIELD": _string(RECEIVED_FIELD),
            "BODY_FIELD": _string(BODY_FIELD),
            "RECEIVED": _string(SourceStat.RECEIVED),
            "UNROUTED": _string(SourceStat.UNROUTED),
            "DUPLICATES": _string(SourceStat.DUPLICATES),
            "ORDER": _string(ORDER_PREFIX),
            "EVENTS_BUCKET": _string(EVENTS_BUCKET_PREFIX),
            "MINUTE": str(events_index.SECONDS),
            "PART": str(PART),
            "PARTS_MAX": str(PARTS_MAX),
            "SPLIT": _set(SPLIT_FIELDS),
        }
    )


def order_preamble() -> str:
    """Lua locals holding the names FIFO per key writes (lua/order.lua)."""
    return _locals({"WAITING": _string(WAITING_FIELD)})


def claim_preamble() -> str:
    """Lua locals holding the codes a claim answers for a target it held back."""
    return _locals(
        {"HELD_RATE": str(Held.RATE.value), "HELD_CONCURRENCY": str(Held.CONCURRENCY.value)}
    )


def record_preamble() -> str:
    """Lua locals holding the codec's names that recording a delivery's state writes."""
    return _locals(
        {
            "STATE": _string(STATE_PREFIX),
            "ATTEMPTS": _string(ATTEMPTS_PREFIX),
            "REASON": _string(REASON_PREFIX),
            "ORDER": _string(ORDER_PREFIX),
            "ATTEMPT": _string(ATTEMPT_PREFIX),
            "PART": str(PART),
            "PARTS_MAX": str(PARTS_MAX),
            "DONE": _set(DONE_STATES),
            "DEAD_LETTER": _set(DEAD_LETTER_STATES),
            "ATTEMPTS_STAT": _string(TargetStat.ATTEMPTS),
            "FAILURES_STAT": _string(TargetStat.FAILURES),
        }
    )


def replay_preamble() -> str:
    """Lua locals holding the codec's names that a bulk replay writes."""
    return _locals(
        {
            "STATE": _string(STATE_PREFIX),
            "ATTEMPTS": _string(ATTEMPTS_PREFIX),
            "REASON": _string(REASON_PREFIX),
            "BEFORE_REPLAY": _string(BEFORE_REPLAY_PREFIX),
            "PENDING": _string(DeliveryState.PENDING),
            "REPLAYED_STAT": _string(TargetStat.REPLAYED),
        }
    )


def rows_preamble() -> str:
    """Lua locals holding the codec's names that the events listing reads."""
    return _locals(
        {
            "RECEIVED_FIELD": _string(RECEIVED_FIELD),
            "STATE": _string(STATE_PREFIX),
            "ATTEMPTS": _string(ATTEMPTS_PREFIX),
            "STATE_PENDING": _string(DeliveryState.PENDING),
        }
    )


#: FIFO per key's functions, put before every script that moves a key's queue on.
ORDER = order_preamble() + read("order")
CLAIM = claim_preamble() + read("claim")
PROBE = read("probe")
RECORD = record_preamble() + ORDER + read("record")
RELEASE = ORDER + read("release")
REQUEUE = ORDER + read("requeue")
REPLAY = replay_preamble() + ORDER + read("replay")
ITEMS = read("items")
COMMIT = ITEMS + commit_preamble() + ORDER + read("commit")
ROWS = rows_preamble() + read("rows")
MINUTES = read("minutes")
