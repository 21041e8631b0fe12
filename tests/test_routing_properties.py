"""Properties of routing and of the units routes.toml uses (Hypothesis).

Routing: `RouteTable.match` is deterministic, returns each target at most once in first-mention
order, and its globs mean exactly `fnmatch.fnmatchcase`. At the model level, the targets stored
with an event are `match`'s result, and the receiver's commit (`write_batch`) makes the event due
exactly once for every matched target and for no other.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass

import fakeredis
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.config.loading import parse_routes
from relay.config.model import Route, RouteTable
from relay.core.units import format_duration, format_size, parse_duration, parse_size
from relay.receiver.batch import write_batch
from relay.receiver.extract import parse_request
from relay.store import keys
from relay.store.commit import commit_arguments
from relay.store.queue import make_queue
from relay.store.records import Event

SOURCES = ("alpha", "beta", "gamma")
TARGETS = ("t1", "t2", "t3", "t4", "t5")

#: Characters that make globs interesting: wildcards, sets, negation, and the dots and
#: underscores real event names use.
GLOB_CHARS = "ab.*?[]!_-"
EVENT_CHARS = "ab._-"

patterns = st.text(alphabet=GLOB_CHARS, min_size=1, max_size=6).filter(lambda p: p == p.strip())
event_types = st.text(alphabet=EVENT_CHARS + "*?[]", min_size=1, max_size=8)


@dataclass(frozen=True)
class RouteSpec:
    source: str
    events: tuple[str, ...]
    targets: tuple[str, ...]


route_specs = st.builds(
    RouteSpec,
    source=st.sampled_from(SOURCES),
    events=st.lists(patterns, min_size=1, max_size=3, unique=True).map(tuple),
    targets=st.lists(st.sampled_from(TARGETS), min_size=1, max_size=4, unique=True).map(tuple),
)


def toml_text(specs: list[RouteSpec]) -> str:
    """A routes.toml with every source (JSON kind) and target, and the given routes."""
    lines = []
    for name in SOURCES:
        lines += [f"[sources.{name}]", 'kind = "json"', ""]
    for name in TARGETS:
        lines += [f"[targets.{name}]", f'url = "https://{name}.example/hook"', ""]
    for spec in specs:
        # JSON string syntax is valid TOML basic-string syntax for these characters.
        lines += [
            "[[routes]]",
            f"source = {json.dumps(spec.source)}",
            f"events = {json.dumps(list(spec.events))}",
            f"targets = {json.dumps(list(spec.targets))}",
            "",
        ]
    return "\n".join(lines)


def build(specs: list[RouteSpec]) -> RouteTable:
    return parse_routes(toml_text(specs), "routes.toml", {})


def reference_match(specs: list[RouteSpec], source: str, event_type: str) -> tuple[str, ...]:
    """What routing means, written the obvious way."""
    found: list[str] = []
    for spec in specs:
        if spec.source == source and any(fnmatch.fnmatchcase(event_type, p) for p in spec.events):
            found += [t for t in spec.targets if t not in found]
    return tuple(found)


# --- globs ---------------------------------------------------------------------------------------


@given(pattern=patterns, event_type=event_types)
def test_glob_semantics_equal_fnmatchcase(pattern: str, event_type: str) -> None:
    route = Route(source="s", events=(pattern,), targets=("t",))
    assert route.matches(event_type) == fnmatch.fnmatchcase(event_type, pattern)


@given(name=st.text(alphabet="ab._", min_size=1, max_size=8).filter(lambda s: "a" in s or "b" in s))
def test_globs_are_case_sensitive(name: str) -> None:
    route = Route(source="s", events=(name,), targets=("t",))
    assert route.matches(name)
    assert not route.matches(name.upper())


# --- match ---------------------------------------------------------------------------------------


@given(specs=st.lists(route_specs, max_size=6), source=st.sampled_from(SOURCES), etype=event_types)
@settings(max_examples=200)
def test_match_is_the_reference_and_deterministic(
    specs: list[RouteSpec], source: str, etype: str
) -> None:
    table = build(specs)
    result = table.match(source, etype)
    assert result == reference_match(specs, source, etype)
    assert len(result) == len(set(result))  # each target at most once
    assert table.match(source, etype) == result  # same table, same answer
    assert build(specs).match(source, etype) == result  # same file, same answer


@given(specs=st.lists(route_specs, max_size=6), source=st.sampled_from(SOURCES), etype=event_types)
def test_match_is_in_first_mention_order(specs: list[RouteSpec], source: str, etype: str) -> None:
    result = build(specs).match(source, etype)
    mentions = [
        t
        for s in specs
        if s.source == source and any(fnmatch.fnmatchcase(etype, p) for p in s.events)
        for t in s.targets
    ]
    assert list(result) == list(dict.fromkeys(mentions))
    assert set(result) <= set(TARGETS)


@given(
    specs=st.lists(route_specs, max_size=5),
    targets=st.lists(st.sampled_from(TARGETS), min_size=1, max_size=3, unique=True),
    source=st.sampled_from(SOURCES),
    etype=event_types,
)
def test_star_route_matches_every_type_of_its_source_only(
    specs: list[RouteSpec], targets: list[str], source: str, etype: str
) -> None:
    star = RouteSpec(source, ("*",), tuple(targets))
    table = build([*specs, star])
    reached = table.match(source, etype)
    assert set(targets) <= set(reached)
    for other in SOURCES:
        if other != source:
            # The star route adds nothing to another source's answer.
            assert table.match(other, etype) == build(specs).match(other, etype)


@given(specs=st.lists(route_specs, max_size=5), source=st.sampled_from(SOURCES))
def test_no_event_type_reaches_nothing(specs: list[RouteSpec], source: str) -> None:
    assert build(specs).match(source, None) == ()


@given(specs=st.lists(route_specs, max_size=5), etype=event_types)
def test_unknown_source_reaches_nothing(specs: list[RouteSpec], etype: str) -> None:
    assert build(specs).match("no-such-source", etype) == ()


# --- one due entry per matched target (model level) ----------------------------------------------


@dataclass(frozen=True)
class Group:
    """What write_batch reads of one request."""

    events: tuple[Event, ...]
    dedupe_window: int = 0


@given(
    specs=st.lists(route_specs, max_size=6),
    source=st.sampled_from(SOURCES),
    etype=st.text(alphabet=EVENT_CHARS, min_size=1, max_size=8),
)
@settings(max_examples=150)
def test_each_matched_target_gets_exactly_one_due_entry(
    specs: list[RouteSpec], source: str, etype: str
) -> None:
    table = build(specs)
    # The receiver's path: parse the request, then store targets = routes.match(...).
    body = orjson.dumps({"event": etype})
    [parsed] = parse_request(table.sources[source], "application/json", {}, body)
    assert parsed.type == etype.strip() or parsed.type is None
    targets = table.match(source, parsed.type)
    event = Event(
        id="evt_01JD0000000000000000000000",
        source=source,
        type=parsed.type,
        received_at=0.0,
        content_type="application/json",
        method="POST",
        headers=(),
        body=body,
        targets=targets,
    )
    stored = Event.from_redis(
        "evt_01JD0000000000000000000000",
        {
            k.encode(): v if isinstance(v, bytes) else v.encode()
            for k, v in event.to_redis().items()
        },
    )
    assert stored.targets == targets
    # The receiver's commit of the stored event, on an in-memory Redis.
    conn = fakeredis.FakeRedis()
    queue = make_queue(conn)
    call = commit_arguments([Group((stored,))], 3600, 0.0, queue.key)
    due_adds = [k for k in call.keys if k.startswith(keys.due_key(""))]
    pipe = conn.pipeline(transaction=True)
    write_batch(pipe, queue, [Group((stored,))], 3600, 0.0)  # type: ignore[list-item]
    pipe.execute()
    expected = sorted(reference_match(specs, source, parsed.type or ""))
    # Exactly one due entry per matched target: no target twice, none left out, no other.
    assert sorted(due_adds) == sorted(keys.due_key(t) for t in expected)
    for name in TARGETS:
        score = conn.zscore(keys.due_key(name), stored.id)
        assert (score is not None) == (name in expected)
    assert sorted(t.decode() for t in conn.smembers(keys.DUE_TARGETS)) == expected


# --- units ---------------------------------------------------------------------------------------

DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
SIZE_UNITS = {"": 1, "b": 1, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2, "GiB": 1024**3}


@given(n=st.integers(min_value=0, max_value=10**6), unit=st.sampled_from(sorted(DURATION_UNITS)))
def test_parse_duration_units(n: int, unit: str) -> None:
    assert parse_duration(f"{n}{unit}") == pytest.approx(n * DURATION_UNITS[unit])
    assert parse_duration(f" {n} {unit} ") == parse_duration(f"{n}{unit}")


@given(value=st.floats(min_value=0, max_value=1e9, allow_nan=False) | st.integers(0, 10**9))
def test_parse_duration_numbers_are_seconds(value: float) -> None:
    assert parse_duration(value) == float(value)


@given(
    value=st.floats(max_value=-1e-9)
    | st.integers(max_value=-1)
    | st.just(math.inf)
    | st.just(math.nan)
)
def test_parse_duration_refuses_negative_and_non_finite(value: float) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@given(text=st.text(max_size=8))
def test_parse_duration_never_crashes(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert seconds >= 0
    assert math.isfinite(seconds)


@given(millis=st.integers(min_value=0, max_value=10**10))
def test_format_duration_round_trips(millis: int) -> None:
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@given(n=st.integers(min_value=1, max_value=10**6), unit=st.sampled_from(sorted(SIZE_UNITS)))
def test_parse_size_units(n: int, unit: str) -> None:
    assert parse_size(f"{n}{unit}") == n * SIZE_UNITS[unit]
    assert parse_size(f"{n}{unit.lower()}") == n * SIZE_UNITS[unit]  # units ignore case


@given(n=st.integers(max_value=0) | st.booleans() | st.floats())
def test_parse_size_refuses_non_positive_and_non_integers(n: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(n)


@given(size=st.integers(min_value=1, max_value=2**40))
def test_format_size_round_trips(size: int) -> None:
    assert parse_size(format_size(size)) == size
