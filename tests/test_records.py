"""relay.store.records: what the writers store reads back equal, in every reader, byte for byte."""

from __future__ import annotations

import dataclasses
import inspect
import time

import orjson
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from relay.ops import deliveries as ops
from relay.ops.events import get_event
from relay.store import keys, scripts
from relay.store.deliveries import Record, Store, parse_stored, read_attempts
from relay.store.records import (
    PART,
    PARTS_MAX,
    AttemptRecord,
    DeliveryRecord,
    DeliveryState,
    Event,
    Outcome,
    TargetStat,
    attempt_field,
    attempt_log,
    attempts_in,
    delivered_reason,
    joined,
    seconds_text,
    split_value,
    stored_reason,
)

#: A record as worker.jobs writes it, and its stored bytes: a change to either is a format change.
KNOWN = AttemptRecord(
    target="crm",
    attempt=3,
    at=1764671100.25,
    duration=0.0123,
    status=503,
    error="",
    outcome=Outcome.RETRY,
    response="busy",
    retry_in=30.0,
)
KNOWN_BYTES = (
    b'{"target":"crm","attempt":3,"at":1764671100.25,"duration_ms":12.3,"status":503,'
    b'"error":null,"outcome":"retry","response":"busy","retry_in_s":30.0}'
)


def test_an_events_written_out_init_takes_the_fields_in_order_with_their_defaults() -> None:
    fields = dataclasses.fields(Event)
    parameters = list(inspect.signature(Event.__init__).parameters.values())[1:]
    assert [p.name for p in parameters] == [f.name for f in fields]
    assert [p.default for p in parameters] == [
        inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default for f in fields
    ]
    values = {f.name: f"v{i}" for i, f in enumerate(fields)}
    event = Event(**values)  # type: ignore[arg-type]
    assert event.__dict__ == values
    assert event == Event(*values.values())  # type: ignore[arg-type]
    assert dataclasses.replace(event, body=b"b").__dict__ == {**values, "body": b"b"}
    required = list(values.values())[:9]
    assert Event(*required).__dict__ == {**values, "dedupe_key": "", "order": ()}  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.body = b"x"  # type: ignore[misc]


def test_a_known_attempt_record_is_stored_as_known_bytes() -> None:
    assert KNOWN.to_redis() == KNOWN_BYTES
    assert AttemptRecord.from_redis(KNOWN_BYTES) == KNOWN


def test_a_known_delivery_state_is_stored_as_known_fields() -> None:
    record = DeliveryRecord(DeliveryState.DEAD, 7, "out of attempts", before_replay=4)
    assert record.to_redis("crm") == {
        "s:crm": "dead",
        "n:crm": "7",
        "r:crm": "out of attempts",
        "b:crm": "4",
    }
    stored = {k.encode(): v.encode() for k, v in record.to_redis("crm").items()}
    assert DeliveryRecord.from_redis("crm", stored) == record
    assert record.round_attempts == 3
    assert record.done


def test_the_enums_are_the_stored_words() -> None:
    assert [str(s) for s in DeliveryState] == [
        "pending", "retrying", "delivered", "dead", "gone", "duplicate", "unknown",
    ]  # fmt: skip
    assert [str(o) for o in Outcome] == ["delivered", "retry", "dead", "gone", ""]
    assert DeliveryState.DEAD is DeliveryState.DEAD
    assert DeliveryState.DEAD == "dead"
    assert {TargetStat.DELIVERED, TargetStat.DEAD, TargetStat.GONE} == {"delivered", "dead", "gone"}


def test_unknown_words_read_as_not_known() -> None:
    assert DeliveryRecord.from_redis("a", {b"s:a": b"paused"}).state is DeliveryState.UNKNOWN
    assert DeliveryRecord.from_redis("a", {}).state is DeliveryState.PENDING
    odd = AttemptRecord.from_redis(b'{"outcome": "maybe", "status": "200"}')
    assert (odd.outcome, odd.status, odd.at) == (Outcome.NONE, None, None)


def test_the_lua_preamble_carries_the_codec_names() -> None:
    assert "local STATE = 's:'" in scripts.RECORD
    assert "['duplicate'] = true" in scripts.RECORD
    assert "'s:'" not in scripts.read("record")
    assert "'delivered'" not in scripts.read("record")


texts = st.text(max_size=40)
seconds = st.floats(min_value=0, max_value=4e9, allow_nan=False)
attempt_records = st.builds(
    AttemptRecord,
    target=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-", min_size=1, max_size=20),
    attempt=st.integers(min_value=1, max_value=10_000),
    at=seconds,
    duration=st.one_of(st.none(), st.floats(min_value=0, max_value=3600, allow_nan=False)),
    status=st.one_of(st.none(), st.integers(min_value=100, max_value=599)),
    error=texts,
    outcome=st.sampled_from([o for o in Outcome if o is not Outcome.NONE]),
    response=texts,
    retry_in=st.one_of(st.none(), st.floats(min_value=0, max_value=86400, allow_nan=False)),
)


@given(attempt_records)
def test_an_attempt_record_round_trips(record: AttemptRecord) -> None:
    stored = record.to_redis()
    assert AttemptRecord.from_redis(stored) == record
    assert AttemptRecord.from_redis(stored).to_redis() == stored


@given(
    st.sampled_from([s for s in DeliveryState if s is not DeliveryState.UNKNOWN]),
    st.integers(min_value=0, max_value=10_000),
    texts,
    st.integers(min_value=0, max_value=10_000),
)
def test_a_delivery_state_round_trips(
    state: DeliveryState, attempts: int, reason: str, before: int
) -> None:
    record = DeliveryRecord(state, attempts, reason, before)
    stored = {k.encode(): v.encode() for k, v in record.to_redis("t").items()}
    assert DeliveryRecord.from_redis("t", stored) == record


def test_what_the_worker_writes_every_reader_reads_back_equal(redis_client: redis.Redis) -> None:
    now = time.time()
    event = Event("evt_1", "fellow", "X", now, "application/json", "POST", (), b"{}", ("crm",))
    fields = {**event.to_redis(), **DeliveryRecord(DeliveryState.PENDING, 2).to_redis("crm")}
    redis_client.hset(keys.event_key(event.id), mapping=fields)  # type: ignore[arg-type]
    attempt = AttemptRecord("crm", 3, now, 0.5, 500, "", Outcome.DEAD, "no", None)
    record = Record(
        event.id, "crm", 3, DeliveryState.DEAD, "out", attempt, TargetStat.DEAD, True, True
    )
    assert Store(redis_client, 3600).record(record, now) == 1

    # The attempt is a field of the event hash (no list of its own), which stays a listpack.
    assert redis_client.exists(keys.attempts_key(event.id)) == 0
    assert redis_client.hget(keys.event_key(event.id), "a:crm:3") == attempt.to_field()
    assert redis_client.object("encoding", keys.event_key(event.id)) == b"listpack"
    assert read_attempts(redis_client, event.id) == [attempt]
    detail = ops.show_event(redis_client, event.id)
    assert detail is not None
    assert detail.attempts == (attempt,)
    view = get_event(redis_client, event.id)
    assert view is not None
    assert view.deliveries[0].attempts == (attempt,)
    written = DeliveryRecord(DeliveryState.DEAD, 3, "out", 0)
    stored = parse_stored(event.id, redis_client.hgetall(keys.event_key(event.id)))  # type: ignore[arg-type]
    assert stored is not None
    assert stored.deliveries == {"crm": written}
    assert stored.event == event
    assert detail.deliveries[0].state == view.deliveries[0].state == DeliveryState.DEAD
    assert orjson.loads(attempt.to_field())[3] == "dead"


def test_a_long_response_is_recorded_in_parts_and_an_old_list_is_still_read(
    redis_client: redis.Redis,
) -> None:
    now = time.time()
    event = Event("evt_3", "fellow", "X", now, "application/json", "POST", (), b"{}", ("crm",))
    fields = {**event.to_redis(), **DeliveryRecord(DeliveryState.PENDING, 1).to_redis("crm")}
    redis_client.hset(keys.event_key(event.id), mapping=fields)  # type: ignore[arg-type]
    # Attempt 1 was recorded by a relay before 2026-12, in the list.
    first = AttemptRecord("crm", 1, now - 60, 0.5, 503, "", Outcome.RETRY, "busy", 30.0)
    redis_client.rpush(keys.attempts_key(event.id), first.to_redis())
    second = AttemptRecord("crm", 2, now, 0.5, 200, "", Outcome.DELIVERED, "é" * 150)
    record = Record(
        event.id, "crm", 2, DeliveryState.DELIVERED, "", second, TargetStat.DELIVERED, False, True
    )
    assert Store(redis_client, 3600).record(record, now) == 1
    key = keys.event_key(event.id)
    assert redis_client.hget(key, "a:crm:2.4") is not None  # 300-odd bytes, parts of 64
    assert redis_client.object("encoding", key) == b"listpack"
    assert read_attempts(redis_client, event.id) == [first, second]
    view = get_event(redis_client, event.id)
    assert view is not None
    assert view.deliveries[0].attempts == (first, second)


@given(st.binary(max_size=PARTS_MAX + 200))
def test_a_value_split_into_parts_reads_back_whole(value: bytes) -> None:
    pairs = split_value("body", value)
    data = {name.encode(): part for name, part in pairs}
    assert joined(data, "body") == value
    if PART < len(value) <= PARTS_MAX:
        assert all(len(part) <= PART for _, part in pairs)
        assert [name for name, _ in pairs][:2] == ["body", "body.1"]
    else:
        assert pairs == [("body", value)]  # short, or too long for a listpack: whole


def test_an_events_own_values_are_its_redis_values() -> None:
    for event in (
        Event(
            "evt_1",
            "shop",
            "a",
            1764769200.5,
            "application/json",
            "POST",
            (("x", "y"),),
            b"{}",
            ("crm",),
        ),
        Event("evt_2", "shop", None, 0.25, "", "PUT", (), b"", ()),
    ):
        _, kind, received, ctype, _, headers, *_ = event.redis_values()
        assert event.own_values() == (kind, received, ctype, headers)


@given(st.floats() | st.floats(min_value=1e9, max_value=4e9))
def test_a_time_is_stored_as_its_repr(seconds: float) -> None:
    # orjson's digits for the usual case (a timestamp), repr's spelling everywhere.
    assert seconds_text(seconds) == repr(seconds).encode()


@pytest.mark.parametrize("seconds", [1764769200.0, 1.0, 1e-5, 1e16, 9999999999999998.0, -1.5])
def test_a_time_at_the_edges_is_stored_as_its_repr(seconds: float) -> None:
    assert seconds_text(seconds) == repr(seconds).encode()
    assert seconds_text(float("inf")) == b"inf"
    assert seconds_text(float("nan")) == b"nan"


def test_an_event_hash_keeps_its_compact_encoding_and_reads_the_old_layout(
    redis_client: redis.Redis,
) -> None:
    body = bytes(range(256)) * 2  # 512 bytes, not UTF-8
    headers = tuple((f"x-header-{i}", "v" * 20) for i in range(4))
    event = Event(
        "evt_2", "digitalchalk", "X", time.time(), "application/json", "POST", headers, body, ("a",)
    )
    stored = {**event.to_redis(), **DeliveryRecord(DeliveryState.PENDING, 0).to_redis("a")}
    redis_client.hset(keys.event_key(event.id), mapping=stored)  # type: ignore[arg-type]
    assert redis_client.object("encoding", keys.event_key(event.id)) == b"listpack"
    assert Event.from_redis(event.id, redis_client.hgetall(keys.event_key(event.id))) == event
    # The layout before 2026-12: the whole body and headers under their own names.
    old = {**stored, "body": body, "headers": orjson.dumps(headers)}
    old = {k: v for k, v in old.items() if "." not in k}
    redis_client.hset(keys.event_key("evt_old"), mapping=old)  # type: ignore[arg-type]
    data = redis_client.hgetall(keys.event_key("evt_old"))
    assert Event.from_redis("evt_old", data) == Event(**{**event.__dict__, "id": "evt_old"})


def test_attempt_fields_read_back_equal_in_parts_and_after_an_old_list() -> None:
    old = AttemptRecord("crm", 1, 100.0, 0.5, 503, "", Outcome.RETRY, "busy", 30.0)
    second = AttemptRecord("crm", 2, 200.0, 0.25, 200, "", Outcome.DELIVERED, "ok " * 100)
    other = AttemptRecord("bi.eu", 1, 150.0, None, None, "timeout after 1s", Outcome.RETRY, "")
    assert len(other.to_field()) <= PART  # the usual record: one listpack entry
    data: dict[bytes, bytes] = {b"s:crm": b"delivered"}
    for record in (second, other):
        raw = record.to_field()
        parts = [raw[at : at + PART] for at in range(0, len(raw), PART)]  # as record.lua writes
        for i, part in enumerate(parts):
            name = attempt_field(record.target, record.attempt) + (f".{i}" if i else "")
            data[name.encode()] = part
    assert attempts_in(data) == [other, second]  # oldest first
    assert attempt_log(data, [old.to_redis()]) == [old, other, second]
    assert AttemptRecord.from_field("crm", 1, b"{}").error.startswith("unreadable")


@given(attempt_records)
def test_an_attempt_field_reads_back_equal(record: AttemptRecord) -> None:
    raw = record.to_field()
    assert AttemptRecord.from_field(record.target, record.attempt, raw) == record


def test_a_delivered_attempt_is_a_short_field() -> None:
    record = AttemptRecord("crm", 1, 1764671100.25, 0.0012, 200, "", Outcome.DELIVERED, "")
    assert record.to_field() == b'[1764671100.25,1.2,200,"delivered"]'


def test_a_delivered_reason_is_not_stored_twice_and_reads_back(redis_client: redis.Redis) -> None:
    now = time.time()
    event = Event("evt_4", "fellow", "X", now, "application/json", "POST", (), b"{}", ("a", "b"))
    fields = {
        **event.to_redis(),
        **DeliveryRecord(DeliveryState.RETRYING, 1, "HTTP 500").to_redis("a"),
    }
    fields.update(DeliveryRecord(DeliveryState.PENDING, 0).to_redis("b"))
    redis_client.hset(keys.event_key(event.id), mapping=fields)  # type: ignore[arg-type]
    store = Store(redis_client, 3600)
    for target, attempt, status in (("a", 2, 204), ("b", 1, 200)):
        entry = AttemptRecord(target, attempt, now, 0.1, status, "", Outcome.DELIVERED, "")
        reason = delivered_reason(status)
        store.record(
            Record(event.id, target, attempt, DeliveryState.DELIVERED, reason, entry,
                   TargetStat.DELIVERED, False, True),
            now,
        )  # fmt: skip
    key = keys.event_key(event.id)
    assert redis_client.hmget(key, ["r:a", "r:b"]) == [b"", b""]  # the retry's reason is gone
    stored = parse_stored(event.id, redis_client.hgetall(key))  # type: ignore[arg-type]
    assert stored is not None
    assert stored.deliveries["a"] == DeliveryRecord(
        DeliveryState.DELIVERED, 2, "delivered: HTTP 204"
    )
    assert stored.deliveries["b"].reason == "delivered: HTTP 200"
    view = get_event(redis_client, event.id)
    assert view is not None
    assert [d.reason for d in view.deliveries] == ["delivered: HTTP 204", "delivered: HTTP 200"]
    # Any other reason is stored as it is.
    other = AttemptRecord("a", 1, now, 0.1, 200, "", Outcome.DELIVERED, "")
    assert stored_reason(DeliveryState.DELIVERED, "delivered late", other) == "delivered late"
    assert stored_reason(DeliveryState.DEAD, "out", other) == "out"
