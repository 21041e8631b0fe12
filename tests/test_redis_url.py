"""relay.core.redis_url: Sentinel URLs parsed, bad ones refused with a message that says why."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.cli.common import redact_url
from relay.config.settings import Settings
from relay.core.acks import AckReplicas
from relay.core.errors import ConfigError
from relay.core.redis_url import (
    DEFAULT_SENTINEL_PORT,
    SentinelURL,
    check_redis_url,
    parse_sentinel_url,
)
from relay.core.secrets import Secret


def test_three_sentinels_a_service_and_a_database() -> None:
    url = parse_sentinel_url("redis+sentinel://s1:26379,s2:26380,10.0.0.3:26381/relay/2")
    assert url == SentinelURL(
        sentinels=(("s1", 26379), ("s2", 26380), ("10.0.0.3", 26381)),
        service="relay",
        db=2,
    )
    assert not url.tls
    assert url.password is None


def test_port_and_database_have_defaults() -> None:
    url = parse_sentinel_url("redis+sentinel://s1,s2/mymaster")
    assert url.sentinels == (("s1", DEFAULT_SENTINEL_PORT), ("s2", DEFAULT_SENTINEL_PORT))
    assert url.db == 0


def test_password_only_and_user_with_password_are_decoded() -> None:
    url = parse_sentinel_url("redis+sentinel://:p%40ss%2Fw0rd@s1:26379/relay/0")
    assert url.username is None
    assert url.password == Secret("p@ss/w0rd")
    url = parse_sentinel_url("redis+sentinel://relay:secret@s1:26379/relay/0")
    assert url.username == "relay"
    assert url.password == Secret("secret")


def test_tls_scheme_and_options() -> None:
    url = parse_sentinel_url(
        "rediss+sentinel://s1:26379/relay/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required"
        "&sentinel_password=sp&sentinel_username=watcher"
    )
    assert url.tls
    assert dict(url.tls_options) == {"ssl_ca_certs": "/etc/ca.pem", "ssl_cert_reqs": "required"}
    assert url.sentinel_password == Secret("sp")
    assert url.sentinel_username == "watcher"


def test_ipv6_sentinels_go_in_brackets() -> None:
    url = parse_sentinel_url("redis+sentinel://[::1]:26379,[fd00::2]/relay")
    assert url.sentinels == (("::1", 26379), ("fd00::2", DEFAULT_SENTINEL_PORT))
    with pytest.raises(ValueError, match="IPv6 goes in brackets"):
        parse_sentinel_url("redis+sentinel://::1:26379/relay")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://s1:26379", "names no service"),
        ("redis+sentinel://s1:26379/", "names no service"),
        ("redis+sentinel:///relay/0", "Sentinel address is empty"),
        ("redis+sentinel://s1,,s2/relay", "Sentinel address is empty"),
        ("redis+sentinel://s1:0/relay", "no valid port"),
        ("redis+sentinel://s1:99999/relay", "no valid port"),
        ("redis+sentinel://s1:port/relay", "no valid port"),
        ("redis+sentinel://:26379/relay", "has no host"),
        ("redis+sentinel://s1/relay/zero", "database must be a number"),
        ("redis+sentinel://s1/relay/0/extra", "/SERVICE or /SERVICE/DB"),
        ("redis+sentinel://s1/relay/", "/SERVICE or /SERVICE/DB"),
        ("redis+sentinel://s1/relay?timeout=3", "unknown option 'timeout'"),
        ("redis+sentinel://s1/relay?ssl_cert_reqs=maybe", "ssl_cert_reqs must be"),
        ("redis+sentinel://s1/relay?sentinel_password=a&sentinel_password=b", "more than once"),
        ("redis+sentinel://secret@s1/relay", "USER:PASSWORD@"),
        ("redis+sentinel://s1/relay#frag", "no #fragment"),
        ("redis+sentinel://[::1/relay", "bad IPv6"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_sentinel_url(url)


def test_error_messages_never_show_the_password() -> None:
    with pytest.raises(ValueError, match="USER:PASSWORD") as caught:
        parse_sentinel_url("redis+sentinel://hunter2hunter2@s1/relay")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["redis://localhost:6379/0", "rediss://h:6380/1", "unix:///run/redis.sock", "REDIS://h/0"],
)
def test_plain_urls_are_left_to_redis_py(url: str) -> None:
    check_redis_url(url)  # no error


@pytest.mark.parametrize("url", ["http://localhost:6379", "localhost:6379", "sentinel://s1/x"])
def test_unknown_schemes_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="must start with one of"):
        check_redis_url(url)


def test_settings_name_the_variable_and_keep_the_url_out_of_the_message() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"REDIS_URL": "redis+sentinel://:pw-hunter2@s1:26379"})
    [problem] = caught.value.problems
    assert problem.key == "REDIS_URL"
    assert "names no service" in problem.message
    assert "hunter2" not in str(caught.value)


def test_settings_take_a_sentinel_url_and_ack_replicas() -> None:
    env = {"REDIS_URL": "redis+sentinel://s1,s2,s3/relay/0", "RELAY_ACK_REPLICAS": "1"}
    settings = Settings.from_env(env)
    assert settings.redis_url == env["REDIS_URL"]
    assert settings.ack_replicas == AckReplicas(1)
    assert Settings.from_env({}).ack_replicas == AckReplicas(0)
    with pytest.raises(ConfigError, match="RELAY_ACK_REPLICAS"):
        Settings.from_env({"RELAY_ACK_REPLICAS": "-1"})


def test_redacted_url_masks_every_password() -> None:
    url = (
        "rediss+sentinel://relay:hunter2hunter2@s1:26379,[::1]:26380/relay/3"
        "?sentinel_password=swordfish99&ssl_ca_certs=/etc/ca.pem"
    )
    shown = redact_url(url)
    assert "hunter2" not in shown
    assert "swordfish" not in shown
    assert shown == (
        "rediss+sentinel://relay:****@s1:26379,[::1]:26380/relay/3"
        "?ssl_ca_certs=/etc/ca.pem&sentinel_password=****"
    )
    assert redact_url("redis+sentinel://s1/relay") == "redis+sentinel://s1:26379/relay/0"
    assert redact_url("redis+sentinel://:pw@s1") == "****"  # unparseable: nothing shown


_host = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z0-9-]{1,10}){0,2}", fullmatch=True)
_sentinels = st.lists(st.tuples(_host, st.integers(1, 65535)), min_size=1, max_size=5)


@given(
    sentinels=_sentinels,
    service=st.text(min_size=1, max_size=20),
    db=st.integers(0, 15),
    password=st.none() | st.text(max_size=20),
)
def test_a_redacted_url_parses_back_to_the_same_places(
    sentinels: list[tuple[str, int]], service: str, db: int, password: str | None
) -> None:
    url = SentinelURL(
        sentinels=tuple(sentinels),
        service=service,
        db=db,
        password=None if password is None else Secret(password),
    )
    again = parse_sentinel_url(url.redacted())
    assert (again.sentinels, again.service, again.db) == (url.sentinels, service, db)
    assert (again.password is None) == (password is None)
