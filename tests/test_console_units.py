"""The console's pure parts: signed sessions and CSRF tokens, bodies, escaping, redirects."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.admin.console.body import SHOWN_BYTES, BodyKind, view_body
from relay.admin.console.html import e, table, url
from relay.admin.console.layout import Notice, NoticeKind, Viewer, render_page
from relay.admin.console.session import (
    CLOCK_SKEW,
    SESSION_SECONDS,
    Session,
    new_session,
    read_session,
)
from relay.admin.console.signin import safe_next
from relay.admin.tokens import Principal, Scope, parse_tokens

ALICE = "a" * 40
BOB = "b" * 40
TOKENS = parse_tokens(f"alice:write:{ALICE} bob:read:{BOB}")
NOW = 1_790_000_000.0
EVIL = '<script>alert("x")</script>&"\''


# -- sessions --------------------------------------------------------------------------------


def test_a_session_reads_back_from_its_cookie() -> None:
    session = new_session("alice", NOW)
    value = session.cookie_value(TOKENS.sign)
    assert value is not None
    assert ALICE not in value  # the token's value never travels in the cookie
    assert read_session(value, TOKENS.sign, NOW + 60) == session


def test_a_session_for_an_unknown_name_cannot_be_made() -> None:
    assert new_session("mallory", NOW).cookie_value(TOKENS.sign) is None


@pytest.mark.parametrize("later", [SESSION_SECONDS, SESSION_SECONDS + 1, -CLOCK_SKEW - 1], ids=str)
def test_a_session_outside_its_lifetime_is_refused(later: float) -> None:
    value = new_session("alice", NOW).cookie_value(TOKENS.sign)
    assert read_session(value, TOKENS.sign, NOW + later) is None


def test_a_forged_or_altered_cookie_is_refused() -> None:
    value = new_session("bob", NOW).cookie_value(TOKENS.sign)
    assert value is not None
    name, issued, nonce, mac = value.split("|")
    assert read_session(f"alice|{issued}|{nonce}|{mac}", TOKENS.sign, NOW) is None
    assert read_session(f"{name}|{int(issued) + 1}|{nonce}|{mac}", TOKENS.sign, NOW) is None
    assert read_session(f"{name}|{issued}|{nonce}x|{mac}", TOKENS.sign, NOW) is None
    assert read_session(f"{name}|{issued}|{nonce}|{mac[:-2]}AA", TOKENS.sign, NOW) is None


@given(st.text(max_size=200))
def test_any_cookie_value_reads_as_a_session_or_none_never_raises(value: str) -> None:
    assert read_session(value, TOKENS.sign, NOW) is None


def test_rotating_a_token_ends_its_sessions() -> None:
    value = new_session("alice", NOW).cookie_value(TOKENS.sign)
    rotated = parse_tokens(f"alice:write:{'c' * 40} bob:read:{BOB}")
    assert read_session(value, rotated.sign, NOW) is None
    removed = parse_tokens(f"bob:read:{BOB}")
    assert read_session(value, removed.sign, NOW) is None


@given(st.integers(min_value=-CLOCK_SKEW * 1000, max_value=SESSION_SECONDS * 1000 - 1))
def test_a_revocation_outlives_the_session_by_the_clock_skew_and_no_more(later_ms: int) -> None:
    session = new_session("alice", NOW)
    now = NOW + later_ms / 1000
    assert read_session(session.cookie_value(TOKENS.sign), TOKENS.sign, now) == session
    kept = session.revocation_seconds(now)
    # Kept at least until the session ends, also on a clock CLOCK_SKEW behind; a second more
    # at most (whole seconds, rounded up).
    assert now + kept >= session.expires() + CLOCK_SKEW
    assert kept <= session.expires() - now + CLOCK_SKEW + 1


def test_a_revocation_after_the_end_is_kept_for_the_clock_skew() -> None:
    session = new_session("alice", NOW)
    assert session.revocation_seconds(NOW + SESSION_SECONDS + 3600) == CLOCK_SKEW


def test_the_csrf_token_is_per_session_and_checked_in_constant_time() -> None:
    one, two = new_session("alice", NOW), new_session("alice", NOW)
    token = one.csrf_token(TOKENS.sign)
    assert token
    assert token != two.csrf_token(TOKENS.sign)
    assert one.csrf_ok(token, TOKENS.sign)
    assert not two.csrf_ok(token, TOKENS.sign)
    assert not one.csrf_ok("", TOKENS.sign)
    assert not one.csrf_ok(None, TOKENS.sign)
    # The CSRF token is not the session's signature: a cookie does not give it away.
    assert token not in (one.cookie_value(TOKENS.sign) or "")


def test_a_session_whose_token_is_gone_has_no_csrf_token_to_match() -> None:
    ghost = Session("mallory", int(NOW), "n")
    assert ghost.csrf_token(TOKENS.sign) == ""
    assert not ghost.csrf_ok("", TOKENS.sign)


# -- bodies ----------------------------------------------------------------------------------


def test_a_json_body_is_pretty_printed() -> None:
    view = view_body(b'{"a":1,"b":[1,2]}', "application/json; charset=utf-8")
    assert view.kind is BodyKind.JSON
    assert orjson.loads(view.pretty) == {"a": 1, "b": [1, 2]}
    assert "\n" in view.pretty
    assert view.raw == '{"a":1,"b":[1,2]}'


def test_a_json_body_sent_as_text_is_still_shown_as_json() -> None:
    assert view_body(b'[{"x": true}]', "text/plain").kind is BodyKind.JSON


def test_a_form_body_is_a_table_of_fields_in_order() -> None:
    view = view_body(b"event=A&courseId=1&empty=&x=%3Cb%3E", "application/x-www-form-urlencoded")
    assert view.kind is BodyKind.FORM
    assert view.fields == (("event", "A"), ("courseId", "1"), ("empty", ""), ("x", "<b>"))


@pytest.mark.parametrize(
    ("body", "ctype", "kind"),
    [
        (b"", "application/json", BodyKind.EMPTY),
        (b"{not json", "application/json", BodyKind.TEXT),
        (b"a=1&&=", "application/x-www-form-urlencoded", BodyKind.TEXT),
        (b"\xff\xfe=1", "application/x-www-form-urlencoded", BodyKind.TEXT),
        (b"<xml/>", "application/xml", BodyKind.TEXT),
    ],
)
def test_bodies_that_are_not_what_they_claim_are_shown_as_text(
    body: bytes, ctype: str, kind: BodyKind
) -> None:
    assert view_body(body, ctype).kind is kind


def test_invalid_utf8_is_shown_escaped_and_a_long_body_is_cut() -> None:
    assert view_body(b"ok \xff", "text/plain").raw == "ok \\xff"
    big = b'{"a": "' + b"x" * SHOWN_BYTES + b'"}'
    view = view_body(big, "application/json")
    assert view.cut
    assert view.kind is BodyKind.TEXT
    assert len(view.raw) == SHOWN_BYTES


# -- markup ----------------------------------------------------------------------------------


def test_every_value_is_escaped() -> None:
    assert e(EVIL) == "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&quot;&#x27;"
    html = table(EVIL, (EVIL,), ["<tr><td>x</td></tr>"], empty=EVIL)
    assert "<script>" not in html
    assert '<th scope="col">' in html
    assert "<caption" in html
    assert "<script>" not in table("c", ("h",), [], empty=EVIL)


def test_a_page_frame_has_landmarks_and_escapes_what_it_is_given() -> None:
    viewer = Viewer(Principal(EVIL, Scope.READ), "csrf-value")
    html = render_page(EVIL, "<p>body</p>", viewer, current="/events", notice=Notice(
        NoticeKind.ERROR, EVIL
    ))  # fmt: skip
    assert "<script>" not in html
    for landmark in ('<main id="main"', '<nav aria-label="Console">', "<header", "<footer"):
        assert landmark in html
    assert '<a href="/events" aria-current="page">' in html
    assert 'role="alert"' in html
    assert 'name="csrf" value="csrf-value"' in html  # the sign-out form carries it


def test_a_bearer_viewer_has_no_sign_out_form() -> None:
    html = render_page("t", "", Viewer(Principal("ci", Scope.READ), ""))
    assert "/sign-out" not in html


def test_links_keep_only_the_filters_that_are_set() -> None:
    assert url("/events", {"source": "a b", "type": "", "target": None}) == "/events?source=a+b"
    assert url("/events", {}) == "/events"


@pytest.mark.parametrize(
    ("given_next", "expected"),
    [
        (None, "/"),
        ("/events?source=x", "/events?source=x"),
        ("https://evil.example/", "/"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("events", "/"),
        ("/sign-in", "/"),
    ],
)
def test_after_sign_in_only_a_console_path_is_followed(
    given_next: str | None, expected: str
) -> None:
    assert safe_next(given_next) == expected
