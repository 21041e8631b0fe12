"""RELAY_ADMIN_TOKENS: parsing, start-up errors that never quote a value, and the lookup."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.admin.tokens import MIN_VALUE_LENGTH, Principal, Scope, parse_tokens, tokens_from_env
from relay.config.settings import Settings
from relay.core.errors import ConfigError

A = "a" * 32
B = "b" * 40


def test_entries_give_named_scoped_principals() -> None:
    tokens = parse_tokens(f"alice:write:{A}\n  ci:read:{B} ")
    assert tokens.principals == (Principal("alice", Scope.WRITE), Principal("ci", Scope.READ))
    assert tokens.lookup(A) == Principal("alice", Scope.WRITE)
    assert tokens.lookup(B) == Principal("ci", Scope.READ)
    assert tokens.lookup(B).can_write is False  # type: ignore[union-attr]
    assert tokens.lookup(A[:-1]) is None
    assert tokens.lookup(A + "a") is None
    assert tokens.lookup("") is None


def test_a_value_may_hold_colons() -> None:
    value = "x:" * 20
    assert parse_tokens(f"ops:write:{value}").lookup(value) == Principal("ops", Scope.WRITE)


def test_unset_means_no_tokens() -> None:
    assert not tokens_from_env({})
    assert not parse_tokens("  ")
    assert tokens_from_env({"RELAY_ADMIN_TOKENS": f"a:read:{A}"})


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("alice:write:short", f"at least {MIN_VALUE_LENGTH} characters (it has 5)"),
        (f"alice:admin:{A}", "scope must be read or write, not 'admin'"),
        (f"-bad:read:{A}", "the name '-bad' must be"),
        (f"alice:write:{A} alice:read:{B}", "name 'alice' is used twice"),
        (f"alice:write:{A} bob:read:{A}", "two entries have the same token value"),
        (A, "entry 1 is not name:scope:value"),
    ],
)
def test_bad_entries_are_named_in_one_config_error(text: str, said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_tokens(text)
    message = str(caught.value)
    assert "RELAY_ADMIN_TOKENS" in message
    assert said in message
    assert A not in message
    assert B not in message


def test_a_value_written_in_the_wrong_place_is_not_quoted() -> None:
    for text in (f"{A}:alice:write", f"alice:{A}:write"):
        with pytest.raises(ConfigError) as caught:
            parse_tokens(text)
        assert A not in str(caught.value)
        assert "withheld" in str(caught.value)


def test_every_bad_entry_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_tokens(f"a:write:short b:nope:{A} c:read:{B}")
    assert len(caught.value.problems) == 2


def test_reprs_hide_the_values() -> None:
    tokens = parse_tokens(f"alice:write:{A}")
    assert A not in repr(tokens)
    assert A not in repr(Settings(admin_tokens=f"alice:write:{A}"))


@given(
    st.text(min_size=MIN_VALUE_LENGTH, max_size=80).filter(
        lambda v: not any(c.isspace() for c in v)
    )
)
def test_lookup_finds_exactly_the_configured_value(value: str) -> None:
    tokens = parse_tokens(f"alice:write:{A} bob:read:{value}" if value != A else f"bob:read:{A}")
    assert tokens.lookup(value) == Principal("bob", Scope.READ)
    assert tokens.lookup(value + "x") is None


def test_settings_read_the_admin_variables() -> None:
    settings = Settings.from_env(
        {"RELAY_ADMIN_HOST": "0.0.0.0", "RELAY_ADMIN_PORT": "9100", "RELAY_ADMIN_TOKENS": " t "}
    )
    assert (settings.admin_host, settings.admin_port, settings.admin_tokens) == (
        "0.0.0.0",
        9100,
        "t",
    )
    assert Settings.from_env({}).admin_port == 8001


def test_the_admin_port_must_differ_from_the_intake_port() -> None:
    with pytest.raises(ConfigError, match="RELAY_ADMIN_PORT"):
        Settings.from_env(
            {"PORT": "9100", "RELAY_ADMIN_PORT": "9100", "RELAY_ADMIN_TOKENS": f"a:read:{A}"}
        )


def test_lookup_compares_every_value_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    tokens = parse_tokens(f"alice:write:{A} ci:read:{B} ops:read:{'c' * 32}")
    monkeypatch.setattr(hmac, "compare_digest", recording)
    assert tokens.lookup(A) == Principal("alice", Scope.WRITE)  # the first matches...
    assert len(calls) == 3  # ...and every other value is still compared: no early exit
    assert {b for _, b in calls} == {A.encode(), B.encode(), b"c" * 32}
