"""relay.receiver.extract: pure request parsing, per kind of source, with Hypothesis for its
invariants."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from relay.config.filters import EventFields
from relay.config.model import Dedupe, Source
from relay.core.constants import MAX_SPLIT_BYTES, MAX_SPLIT_EVENTS
from relay.core.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from relay.core.headers import (
    DROPPED_HEADERS,
    MAX_HEADER_VALUE,
    MAX_KEPT_HEADERS,
    is_form,
    is_json,
    kept_headers,
    media_type,
)
from relay.receiver.extract import (
    MAX_EVENT_TYPE,
    ParsedEvent,
    event_name,
    lookup_path,
    parse_form,
    parse_json,
    parse_request,
    split_array_text,
)

JSON_CT = "application/json; charset=utf-8"
FORM_CT = "application/x-www-form-urlencoded"


def source(kind: str, event: str | None = None, dedupe: tuple[str, ...] | None = None) -> Source:
    defaults = {
        "json": "event",
        "form": "event",
        "json_or_form": "event",
        "header": "x-event-type",
        "resthooks": "x-event-type",
        "aspnet": "Notifications[].Action",
    }
    return Source(
        name="src",
        kind=kind,
        event=event or defaults[kind],
        dedupe=Dedupe(key=dedupe, window=60) if dedupe else None,
    )


def headers(**values: str) -> CIMultiDict[str]:
    return CIMultiDict((k.replace("_", "-"), v) for k, v in values.items())


# --- content types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("application/json", "application/json"),
        ("Application/JSON; charset=utf-8", "application/json"),
        ("  text/plain ;q=1", "text/plain"),
        ("", ""),
    ],
)
def test_media_type(value: str, expected: str) -> None:
    assert media_type(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("text/json", True),
        ("application/vnd.api+json", True),
        ("application/x-www-form-urlencoded", False),
        ("text/plain", False),
        ("", False),
    ],
)
def test_is_json(value: str, expected: bool) -> None:
    assert is_json(value) is expected


_MEDIA = st.sampled_from(["application/json", "Text/JSON ", "a/b+json", "text/plain", "", ";"])


@given(st.lists(st.tuples(_MEDIA, st.sampled_from(["", "; charset=utf-8", "x"])), max_size=400))
def test_is_json_remembers_the_same_answers_as_it_gives_first(
    values: list[tuple[str, str]],
) -> None:
    # Its memo of values seen is bounded: past it, the answers are computed each time.
    for media, rest in values:
        value = media + rest
        mt = value.split(";", 1)[0].strip().lower()
        assert is_json(value) is (mt in ("application/json", "text/json") or mt.endswith("+json"))


def test_is_form() -> None:
    assert is_form("application/x-www-form-urlencoded; charset=UTF-8")
    assert not is_form("multipart/form-data; boundary=x")
    assert not is_form("application/json")


# --- headers ---------------------------------------------------------------------------------


def test_kept_headers_drops_transport_and_credentials_and_lowercases() -> None:
    given_headers = headers(
        Host="relay",
        Authorization="Bearer x",
        Cookie="a=b",
        X_Hook_Secret="s",
        Content_Type="application/json",
        Content_Length="10",
        Content_Encoding="gzip",
        Connection="keep-alive",
        X_Relay_Attempt="3",
        MS_Signature="sha256=AB",
        X_Event_Type="a.b",
        User_Agent="LMS",
    )
    assert kept_headers(given_headers) == (
        ("ms-signature", "sha256=AB"),
        ("x-event-type", "a.b"),
        ("user-agent", "LMS"),
    )


def test_kept_headers_are_bounded() -> None:
    many = CIMultiDict((f"x-h{i}", "v" * (MAX_HEADER_VALUE + 10)) for i in range(100))
    kept = kept_headers(many)
    assert len(kept) == MAX_KEPT_HEADERS
    assert all(len(value) == MAX_HEADER_VALUE for _, value in kept)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Host", "X-Relay-Attempt", "x-relay-x", "X-Tag", "Cookie", "\u00c9"])
            | st.text(min_size=1, max_size=3),
            st.text(max_size=3) | st.just("v" * (MAX_HEADER_VALUE + 1)),
        ),
        max_size=80,
    )
)
def test_kept_headers_as_the_rule_says_however_many_names_were_seen(
    pairs: list[tuple[str, str]],
) -> None:
    # Names are remembered as sent, up to a bound: the answer is the rule's either way.
    expected = []
    for name, value in pairs:
        lname = name.lower()
        if lname not in DROPPED_HEADERS and not lname.startswith("x-relay-"):
            expected.append((lname, value[:MAX_HEADER_VALUE]))
    assert kept_headers(CIMultiDict(pairs)) == tuple(expected[:MAX_KEPT_HEADERS])


def test_kept_headers_keeps_repeated_headers() -> None:
    repeated = CIMultiDict([("X-Tag", "a"), ("X-Tag", "b")])
    assert kept_headers(repeated) == (("x-tag", "a"), ("x-tag", "b"))


# --- field lookup and event names ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("event", "top"),
        ("data.kind", "nested"),
        ("items.1.type", "second"),
        ("items.5.type", None),  # out of range
        ("items.x", None),  # not an index
        ("data.missing", None),
        ("event.deeper", None),  # a string has no fields
        ("", None),
    ],
)
def test_lookup_path(path: str, expected: Any) -> None:
    doc = {
        "event": "top",
        "data": {"kind": "nested"},
        "items": [{"type": "first"}, {"type": "second"}],
    }
    assert lookup_path(doc, path) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("COURSEMEMBER_CREATED", "COURSEMEMBER_CREATED"),
        ("  padded  ", "padded"),
        (12, "12"),
        (1.5, "1.5"),
        (True, None),
        (None, None),
        ("", None),
        ("   ", None),
        ({"a": 1}, None),
        (["a"], None),
        ("x" * MAX_EVENT_TYPE, "x" * MAX_EVENT_TYPE),
        ("x" * (MAX_EVENT_TYPE + 1), None),
    ],
)
def test_event_name(value: Any, expected: str | None) -> None:
    assert event_name(value) == expected


@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()))
def test_event_name_is_none_or_a_trimmed_bounded_string(value: Any) -> None:
    name = event_name(value)
    if name is not None:
        assert 0 < len(name) <= MAX_EVENT_TYPE
        assert name == name.strip()


# --- body parsers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"", b"   ", b"{", b'{"a": 1,}', b"\xff\xfe", b"[" * 2000 + b"]" * 2000, b"NaN"],
)
def test_parse_json_rejects_with_400(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_json(body)


def test_a_byte_order_mark_is_skipped_for_parsing_and_kept_in_the_body() -> None:
    body = b'\xef\xbb\xbf{"event": "element_published"}'
    assert parse_json(body) == {"event": "element_published"}
    fields = EventFields({"event": "element_published"}, False, headers())
    assert parse_request(source("json"), JSON_CT, headers(), body) == [
        ParsedEvent("element_published", body, None, True, fields)
    ]
    for bad in (b"\xef\xbb\xbf", b"\xef\xbb\xbf  ", b"\xef\xbb\xbf\xef\xbb\xbf{}"):
        with pytest.raises(BadRequest):
            parse_json(bad)


def test_parse_form_keeps_first_of_repeated_fields_and_blanks() -> None:
    assert parse_form(b"a=1&a=2&b=&c=caf%C3%A9+x") == {"a": "1", "b": "", "c": "café x"}


@pytest.mark.parametrize(
    "body",
    [b"event=\xff", b"&".join(b"f%d=1" % i for i in range(1001))],
)
def test_parse_form_rejects_with_400(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_form(body)


# --- parse_request per kind ------------------------------------------------------------------


def test_json_source() -> None:
    body = b'{"event": "element_published", "id": 1}'
    fields = EventFields({"event": "element_published", "id": 1}, False, headers())
    assert parse_request(source("json"), JSON_CT, headers(), body) == [
        ParsedEvent("element_published", body, None, True, fields)
    ]


def test_json_source_nested_path() -> None:
    body = b'{"data": {"kind": "k1"}}'
    (parsed,) = parse_request(source("json", "data.kind"), JSON_CT, headers(), body)
    assert parsed.type == "k1"


def test_json_source_without_the_field_has_no_type() -> None:
    (parsed,) = parse_request(source("json"), JSON_CT, headers(), b"[1, 2]")
    assert parsed.type is None


@pytest.mark.parametrize("kind", ["json", "aspnet"])
def test_json_sources_refuse_other_media_types(kind: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        parse_request(source(kind), FORM_CT, headers(), b"event=x")


def test_form_source() -> None:
    body = b"courseId=1&memberId=2&event=COURSEMEMBER_COMPLETED"
    (parsed,) = parse_request(source("form"), FORM_CT, headers(), body)
    form = {"courseId": "1", "memberId": "2", "event": "COURSEMEMBER_COMPLETED"}
    fields = EventFields(form, True, headers())
    assert parsed == ParsedEvent("COURSEMEMBER_COMPLETED", body, None, True, fields)


def test_form_source_refuses_json() -> None:
    with pytest.raises(UnsupportedMediaType):
        parse_request(source("form"), JSON_CT, headers(), b'{"event": "x"}')


def test_json_or_form_takes_both_and_refuses_others() -> None:
    s = source("json_or_form")
    assert parse_request(s, JSON_CT, headers(), b'{"event": "a"}')[0].type == "a"
    assert parse_request(s, FORM_CT, headers(), b"event=b")[0].type == "b"
    with pytest.raises(UnsupportedMediaType):
        parse_request(s, "text/plain", headers(), b"event=c")


@pytest.mark.parametrize("kind", ["header", "resthooks"])
@pytest.mark.parametrize(
    ("content_type", "body"),
    [(JSON_CT, b'{"id": 1}'), (JSON_CT, b"not json"), ("text/xml", b"<a/>"), ("", b"")],
)
def test_header_sources_take_any_body_as_is(kind: str, content_type: str, body: bytes) -> None:
    sent = headers(X_Event_Type="e.x")
    (parsed,) = parse_request(source(kind), content_type, sent, body)
    document = {"id": 1} if body == b'{"id": 1}' else None  # JSON bodies are parsed for filters
    assert parsed == ParsedEvent("e.x", body, None, True, EventFields(document, False, sent))


def test_dedupe_from_body_and_header() -> None:
    s = source("json", dedupe=("body:order.id", "header:x-delivery"))
    body = b'{"event": "e", "order": {"id": 42}}'
    (parsed,) = parse_request(s, JSON_CT, headers(X_Delivery="d-1"), body)
    assert parsed.dedupe_value == "42\x1fd-1"


@pytest.mark.parametrize(
    "body", [b'{"event": "e"}', b'{"event": "e", "id": ""}', b'{"event": "e", "id": {"a": 1}}']
)
def test_dedupe_value_absent_when_a_part_is_missing(body: bytes) -> None:
    (parsed,) = parse_request(source("json", dedupe=("body:id",)), JSON_CT, headers(), body)
    assert parsed.dedupe_value is None


def test_dedupe_from_form_field() -> None:
    s = source("form", dedupe=("body:memberId",))
    (parsed,) = parse_request(s, FORM_CT, headers(), b"event=e&memberId=7")
    assert parsed.dedupe_value == "7"


# --- ASP.NET WebHooks ------------------------------------------------------------------------


def test_aspnet_single_notification_is_the_original_body() -> None:
    body = b'{"Id": "i1", "Attempt": 2, "Notifications": [{"Action": "CourseCompleted"}]}'
    s = source("aspnet", dedupe=("body:Id",))
    (parsed,) = parse_request(s, JSON_CT, headers(), body)
    fields = EventFields(json.loads(body), False, headers())
    assert parsed == ParsedEvent("CourseCompleted", body, "i1", original_body=True, fields=fields)


def test_aspnet_several_notifications_are_split_with_their_envelope() -> None:
    doc = {
        "Id": "i2",
        "Attempt": 1,
        "Properties": {"p": 1},
        "Notifications": [{"Action": "A", "x": 1}, {"Action": "B"}, "junk"],
    }
    s = source("aspnet", dedupe=("body:Id",))
    parts = parse_request(s, JSON_CT, headers(), json.dumps(doc).encode())
    assert [p.type for p in parts] == ["A", "B", None]
    assert [p.dedupe_value for p in parts] == ["i2#0", "i2#1", "i2#2"]
    assert not any(p.original_body for p in parts)
    for part, notification in zip(parts, doc["Notifications"], strict=True):
        assert orjson.loads(part.body) == {
            "Id": "i2",
            "Attempt": 1,
            "Properties": {"p": 1},
            "Notifications": [notification],
        }


def test_aspnet_at_most_max_split_events_notifications() -> None:
    s = source("aspnet")

    def post(count: int) -> bytes:
        return json.dumps({"Id": "i", "Notifications": [{"Action": "A"}] * count}).encode()

    assert len(parse_request(s, JSON_CT, headers(), post(MAX_SPLIT_EVENTS))) == MAX_SPLIT_EVENTS
    with pytest.raises(PayloadTooLarge, match=f"{MAX_SPLIT_EVENTS + 1} notifications"):
        parse_request(s, JSON_CT, headers(), post(MAX_SPLIT_EVENTS + 1))


def test_aspnet_split_bodies_at_most_max_split_bytes_in_all() -> None:
    # Each split body repeats the rest of the post: 20 notifications beside a 500 KB field
    # would store 10 MB.
    s = source("aspnet")
    filler = "x" * (MAX_SPLIT_BYTES // 20 + 1)
    big = json.dumps({"Id": "i", "Pad": filler, "Notifications": [{"Action": "A"}] * 20})
    with pytest.raises(PayloadTooLarge, match="bytes of bodies"):
        parse_request(s, JSON_CT, headers(), big.encode())
    fits = json.dumps({"Id": "i", "Pad": filler, "Notifications": [{"Action": "A"}] * 19})
    assert len(parse_request(s, JSON_CT, headers(), fits.encode())) == 19


@pytest.mark.parametrize(
    "body",
    [b"[1]", b'{"Notifications": []}', b'{"Notifications": {"Action": "a"}}', b'{"Id": 1}'],
)
def test_aspnet_malformed_bodies_are_400(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_request(source("aspnet"), JSON_CT, headers(), body)


# --- invariants (Hypothesis) -----------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@pytest.mark.timeout(60)
@given(
    st.dictionaries(st.text(max_size=10), json_values, max_size=6),
    st.text(min_size=1, max_size=30),
    st.sampled_from([0, 2, None]),
)
@settings(max_examples=150)
def test_single_json_event_forwards_the_exact_bytes(
    doc: dict[str, Any], etype: str, indent: int | None
) -> None:
    doc["event"] = etype
    body = json.dumps(doc, indent=indent, ensure_ascii=False).replace("\n", "\r\n").encode()
    (parsed,) = parse_request(source("json"), JSON_CT, headers(), body)
    assert parsed.body is body
    assert parsed.original_body
    assert parsed.type == event_name(etype)


@given(st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=20), max_size=8))
@settings(max_examples=150)
def test_single_form_event_forwards_the_exact_bytes(fields: dict[str, str]) -> None:
    body = urlencode(fields).encode()
    (parsed,) = parse_request(source("form"), FORM_CT, headers(), body)
    assert parsed.body is body
    assert parsed.type == event_name(fields.get("event"))


@given(st.binary(max_size=200), st.sampled_from([JSON_CT, "text/plain", "", "application/xml"]))
def test_header_source_forwards_any_bytes(body: bytes, content_type: str) -> None:
    (parsed,) = parse_request(source("header"), content_type, headers(X_Event_Type="t"), body)
    assert parsed.body is body


@pytest.mark.timeout(60)
@given(st.lists(st.dictionaries(st.text(max_size=6), json_values, max_size=3), min_size=2))
@settings(max_examples=100)
def test_aspnet_split_parts_hold_each_notification_once_in_order(
    notifications: list[dict[str, Any]],
) -> None:
    doc = {"Id": "x", "Attempt": 1, "Notifications": notifications}
    parts = parse_request(source("aspnet"), JSON_CT, headers(), orjson.dumps(doc))
    assert len(parts) == len(notifications)
    rebuilt = [orjson.loads(p.body)["Notifications"] for p in parts]
    assert rebuilt == [[n] for n in notifications]


@given(st.binary(max_size=300), st.sampled_from(["json", "form", "json_or_form", "aspnet"]))
@settings(max_examples=300)
def test_arbitrary_bytes_give_events_or_a_clean_400(body: bytes, kind: str) -> None:
    content_type = FORM_CT if kind == "form" else JSON_CT
    try:
        parsed = parse_request(source(kind), content_type, headers(), body)
    except BadRequest:
        return
    assert parsed
    assert all(isinstance(p.body, bytes) for p in parsed)


# --- Lossless split of ASP.NET notifications ---------------------------------------------------

_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.text(max_size=8)
)
_json_value = st.recursive(
    _json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    before=st.dictionaries(st.sampled_from(["Id", "Attempt", "Properties"]), _json_value),
    notes=st.lists(
        st.dictionaries(st.text(max_size=5), _json_value, max_size=3), min_size=1, max_size=4
    ),
    indent=st.sampled_from([None, 2]),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_split_array_text_keeps_every_element_verbatim(
    before: dict[str, object], notes: list[dict[str, object]], indent: int | None, newline: str
) -> None:
    text = json.dumps({**before, "Notifications": notes, "Tail": 1}, indent=indent)
    text = text.replace("\n", newline)
    head, parts, tail = split_array_text(text, "Notifications")
    assert len(parts) == len(notes)
    for part, note in zip(parts, notes, strict=True):
        assert part in text  # the element's own text, not a rewrite
        assert json.loads(head + "[" + part + "]" + tail) == {
            **before,
            "Notifications": [note],
            "Tail": 1,
        }


def test_split_keeps_numbers_a_double_cannot_hold() -> None:
    first = '{"Action": "a", "x": 33.333333333333333333333333333}'
    second = '{"Action": "b", "n": 18446744073709551617}'
    text = '{"Id": "1", "Notifications": [' + first + ", " + second + "]}"
    head, parts, tail = split_array_text(text, "Notifications")
    assert parts == [first, second]
    assert head == '{"Id": "1", "Notifications": '
    assert tail == "}"
