"""RELAY_ACK_REPLICAS as a value (relay.core.acks), its settings errors (RELAY_ACK_MAX_LAG's too),
the pure reading of the replicas a primary counts online and fresh, and the WAIT slicing
decision (relay.store.replication)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis._parsers.helpers import parse_info

from relay.config.settings import Settings
from relay.core.acks import EVERY_ONLINE, MIN_MAX_LAG, PRIMARY_ONLY, AckReplicas
from relay.core.constants import DEFAULT_ACK_MAX_LAG
from relay.core.errors import ConfigError
from relay.store.replication import (
    MIN_SLICE,
    WAIT_SLICE,
    ReplicaCounts,
    ReplicationFacts,
    facts_from_info,
    fresh_from_info,
    info_fields,
    next_slice,
    online_from_info,
    replica_counts,
    startup_warnings,
)

#: INFO replication as redis-server 7.0 prints it: one replica online, one still syncing.
INFO_REPLICATION = (
    "# Replication\r\n"
    "role:master\r\n"
    "connected_slaves:2\r\n"
    "min_slaves_good_slaves:1\r\n"
    "slave0:ip=10.0.0.2,port=6380,state=online,offset=1290,lag=0\r\n"
    "slave1:ip=10.0.0.3,port=6381,state=wait_bgsave,offset=0,lag=0\r\n"
    "master_failover_state:no-failover\r\n"
    "master_replid:2f0b8c1e8b0f4b9a1e7c6d5b4a3f2e1d0c9b8a7f\r\n"
    "master_replid2:0000000000000000000000000000000000000000\r\n"
    "master_repl_offset:1290\r\n"
    "second_repl_offset:-1\r\n"
    "repl_backlog_active:1\r\n"
    "repl_backlog_size:1048576\r\n"
    "repl_backlog_first_byte_offset:1\r\n"
    "repl_backlog_histlen:1290\r\n"
)

#: A primary with two replicas online: one acknowledging (lag 1), one silent for 7 s (frozen, or
#: cut off: still online until repl-timeout), and one still syncing.
INFO_ONE_STALE = (
    b"# Replication\r\n"
    b"role:master\r\n"
    b"connected_slaves:3\r\n"
    b"slave0:ip=10.0.0.2,port=6380,state=online,offset=52881,lag=1\r\n"
    b"slave1:ip=10.0.0.3,port=6381,state=online,offset=40012,lag=7\r\n"
    b"slave2:ip=10.0.0.4,port=6382,state=wait_bgsave,offset=0,lag=0\r\n"
    b"master_failover_state:no-failover\r\n"
    b"master_repl_offset:52881\r\n"
)

#: A replica that has a replica of its own (chained replication): it lists it, but is no primary.
INFO_REPLICA = (
    b"# Replication\r\n"
    b"role:slave\r\n"
    b"master_host:10.0.0.1\r\n"
    b"master_port:6379\r\n"
    b"master_link_status:up\r\n"
    b"connected_slaves:1\r\n"
    b"slave0:ip=10.0.0.5,port=6383,state=online,offset=52881,lag=0\r\n"
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0", AckReplicas(0)),
        ("2", AckReplicas(2)),
        ("all", EVERY_ONLINE),
        ("ALL", EVERY_ONLINE),
        (" all ", EVERY_ONLINE),
    ],
)
def test_ack_replicas_parse(raw: str, expected: AckReplicas) -> None:
    assert AckReplicas.parse(raw) == expected


@pytest.mark.parametrize("raw", ["-1", "1.5", "two", "", "al", "+1", "1 2"])
def test_ack_replicas_refuse_anything_else(raw: str) -> None:
    with pytest.raises(ValueError, match="whole number"):
        AckReplicas.parse(raw)


@given(st.integers(min_value=0, max_value=10_000))
def test_a_count_round_trips_through_its_text(count: int) -> None:
    assert AckReplicas.parse(str(AckReplicas(count))) == AckReplicas(count)


def test_what_a_wait_asks_for() -> None:
    assert not PRIMARY_ONLY.enabled
    assert AckReplicas(2).enabled
    assert EVERY_ONLINE.enabled
    assert AckReplicas(2).wanted(online=0) == 2  # a fixed count ignores who is online
    assert EVERY_ONLINE.wanted(online=2) == 2
    assert EVERY_ONLINE.wanted(online=1) == 1
    assert EVERY_ONLINE.wanted(online=0) == 1  # never acknowledged on the primary alone
    assert str(EVERY_ONLINE) == "all"
    assert str(AckReplicas(3)) == "3"


def test_the_confirmations_needed_are_known_after_the_wait() -> None:
    # `all`: whoever is online once the WAIT answered (what `wanted` is given then, whatever the
    # WAIT was sent with); a fixed count: what was asked.
    assert EVERY_ONLINE.wanted(online=1) == 1  # sent for 2, one left during the WAIT
    assert EVERY_ONLINE.wanted(online=2) == 2  # sent for 1, one joined during it
    assert EVERY_ONLINE.wanted(online=0) == 1
    assert AckReplicas(2).wanted(online=1) == 2


def test_settings_take_all_and_name_a_bad_value() -> None:
    assert Settings.from_env({"RELAY_ACK_REPLICAS": "all"}).ack_replicas == EVERY_ONLINE
    assert Settings.from_env({"RELAY_ACK_REPLICAS": "2"}).ack_replicas == AckReplicas(2)
    assert Settings.from_env({"RELAY_ACK_REPLICAS": ""}).ack_replicas == PRIMARY_ONLY
    for bad in ("-1", "some", "1.0"):
        with pytest.raises(ConfigError, match=r"RELAY_ACK_REPLICAS.*neither a whole number"):
            Settings.from_env({"RELAY_ACK_REPLICAS": bad})


def test_online_replicas_are_read_from_real_info_text() -> None:
    parsed = parse_info(INFO_REPLICATION)  # what redis-py's client.info("replication") returns
    assert online_from_info(parsed) == 1  # slave1 is still waiting for its snapshot
    raw = dict(line.split(":", 1) for line in INFO_REPLICATION.splitlines()[1:])
    assert online_from_info(raw) == 1
    assert online_from_info({"role": "master", "connected_slaves": 0}) == 0
    facts = facts_from_info(parsed, {"aof_enabled": 1})
    assert (facts.connected_replicas, facts.online_replicas, facts.good_replicas) == (2, 1, 1)


def test_settings_read_the_lag_limit_into_the_ack_value() -> None:
    assert Settings.from_env({}).ack_replicas.max_lag == DEFAULT_ACK_MAX_LAG
    env = {"RELAY_ACK_REPLICAS": "all", "RELAY_ACK_MAX_LAG": "5s"}
    assert Settings.from_env(env).ack_replicas == replace(EVERY_ONLINE, max_lag=5.0)
    env = {"RELAY_ACK_REPLICAS": "2", "RELAY_ACK_MAX_LAG": "1"}
    assert Settings.from_env(env).ack_replicas == AckReplicas(2, max_lag=MIN_MAX_LAG)


@pytest.mark.parametrize("bad", ["0", "500ms", "0.9s"])
def test_settings_refuse_a_lag_limit_a_healthy_replica_reaches(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"RELAY_ACK_MAX_LAG.*at least 1s"):
        Settings.from_env({"RELAY_ACK_REPLICAS": "all", "RELAY_ACK_MAX_LAG": bad})


def test_settings_name_each_bad_ack_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"RELAY_ACK_REPLICAS": "every", "RELAY_ACK_MAX_LAG": "soon"})
    message = str(caught.value)
    assert "RELAY_ACK_REPLICAS" in message
    assert "RELAY_ACK_MAX_LAG" in message
    assert "duration" in message


def test_info_fields_reads_raw_text() -> None:
    fields = info_fields(INFO_ONE_STALE)
    assert fields["role"] == "master"
    assert fields["slave1"] == "ip=10.0.0.3,port=6381,state=online,offset=40012,lag=7"
    assert not any(key.startswith("#") for key in fields)
    assert info_fields(INFO_ONE_STALE.decode()) == fields  # a decoding client's str
    # An IPv6 address keeps its colons: only the first one splits a line.
    assert info_fields(b"slave0:ip=::1,port=6380\r\n") == {"slave0": "ip=::1,port=6380"}


def test_fresh_replicas_leave_out_the_silent_and_the_syncing() -> None:
    assert fresh_from_info(INFO_ONE_STALE, max_lag=3) == 1  # slave1 silent 7 s, slave2 syncing
    assert fresh_from_info(INFO_ONE_STALE, max_lag=7) == 2  # the limit itself still counts
    assert fresh_from_info(INFO_ONE_STALE, max_lag=6.5) == 1
    assert fresh_from_info(INFO_ONE_STALE, max_lag=1) == 1
    # What the sync client's info("replication") gives: the same counts.
    assert fresh_from_info(parse_info(INFO_ONE_STALE), max_lag=3) == 1
    assert fresh_from_info(parse_info(INFO_ONE_STALE), max_lag=7) == 2
    # Whatever their lag, both are online (the start-up facts count them so).
    assert online_from_info(info_fields(INFO_ONE_STALE)) == 2


def test_anything_but_a_primary_has_no_replica_to_wait_for() -> None:
    assert fresh_from_info(INFO_REPLICA, max_lag=3) == 0  # its own replica does not count
    assert fresh_from_info(parse_info(INFO_REPLICA), max_lag=3) == 0
    assert online_from_info(info_fields(INFO_REPLICA)) == 1  # though it is listed
    assert fresh_from_info(b"", max_lag=3) == 0
    assert fresh_from_info(b"# Replication\r\nrole:master\r\nconnected_slaves:0\r\n", 3) == 0


def test_a_replica_without_a_readable_lag_is_waited_for() -> None:
    # Redis always prints the lag; were it missing, waiting is the side that loses nothing.
    info = b"role:master\r\nslave0:ip=10.0.0.2,port=6380,state=online,offset=1\r\n"
    assert fresh_from_info(info, max_lag=3) == 1
    info = b"role:master\r\nslave0:ip=10.0.0.2,port=6380,state=online,offset=1,lag=?\r\n"
    assert fresh_from_info(info, max_lag=3) == 1


replica_lines = st.lists(
    st.tuples(st.sampled_from(["online", "wait_bgsave", "send_bulk"]), st.integers(0, 120)),
    max_size=6,
)


@given(
    role=st.sampled_from(["master", "slave"]),
    replicas=replica_lines,
    max_lag=st.floats(min_value=MIN_MAX_LAG, max_value=100, allow_nan=False),
)
def test_fresh_replicas_count_as_the_text_says(
    role: str, replicas: list[tuple[str, int]], max_lag: float
) -> None:
    lines = ["# Replication", f"role:{role}", f"connected_slaves:{len(replicas)}"]
    lines += [
        f"slave{i}:ip=10.0.0.{i},port={6380 + i},state={state},offset=99,lag={lag}"
        for i, (state, lag) in enumerate(replicas)
    ]
    text = "\r\n".join([*lines, "master_repl_offset:99", ""])
    online = sum(state == "online" and lag <= max_lag for state, lag in replicas)
    expected = online if role == "master" else 0
    assert fresh_from_info(text.encode(), max_lag) == expected
    assert fresh_from_info(text, max_lag) == expected
    assert fresh_from_info(parse_info(text), max_lag) == expected


def test_a_slice_follows_only_while_confirmations_are_missing_and_time_is_left() -> None:
    assert next_slice(confirmed=2, needed=2, left=2.0) is None  # confirmed: done
    assert next_slice(confirmed=2, needed=1, left=2.0) is None  # one left or went stale
    assert next_slice(confirmed=1, needed=2, left=2.0) == WAIT_SLICE  # one still missing
    assert next_slice(confirmed=0, needed=1, left=0.2) == 0.2  # the last, cut to the margin
    assert next_slice(confirmed=1, needed=2, left=MIN_SLICE / 2) is None  # out of time
    assert next_slice(confirmed=1, needed=2, left=-1.0) is None


@given(
    confirmed=st.integers(0, 5),
    needed=st.integers(1, 5),
    left=st.floats(min_value=-10, max_value=60, allow_nan=False),
)
def test_a_slice_never_outlasts_the_time_left_or_a_slice(
    confirmed: int, needed: int, left: float
) -> None:
    timeout = next_slice(confirmed, needed, left)
    if timeout is None:
        assert confirmed >= needed or left < MIN_SLICE
    else:
        assert confirmed < needed
        assert MIN_SLICE <= timeout <= min(WAIT_SLICE, left)


def facts(connected: int, good: int | None = 1) -> ReplicationFacts:
    return ReplicationFacts("master", connected, connected, aof_enabled=True, good_replicas=good)


def test_startup_warnings_under_all() -> None:
    [none_connected] = startup_warnings(facts(0), EVERY_ONLINE)
    assert "RELAY_ACK_REPLICAS=all" in none_connected
    assert "0 connected" in none_connected
    assert startup_warnings(facts(1), EVERY_ONLINE) == []
    assert startup_warnings(facts(2), EVERY_ONLINE) == []
    # min-replicas-to-write off matters as for any N >= 1.
    [off] = startup_warnings(facts(2, good=None), EVERY_ONLINE)
    assert "min-replicas-to-write is off" in off
    assert startup_warnings(facts(2, good=None), PRIMARY_ONLY) == []
    [short] = startup_warnings(facts(1), AckReplicas(2))
    assert "RELAY_ACK_REPLICAS=2" in short


def test_replica_counts_tell_the_stale_from_the_fresh_in_one_pass() -> None:
    counts = replica_counts(INFO_ONE_STALE, 3.0)
    assert (counts.online, counts.fresh, counts.stale) == (2, 1, 1)  # syncing slave2 not online
    assert replica_counts(INFO_ONE_STALE, 7.0).stale == 0
    assert replica_counts(INFO_REPLICA, 3.0) == ReplicaCounts(0, 0)  # no primary: nobody counts
    assert fresh_from_info(INFO_ONE_STALE, 3.0) == replica_counts(INFO_ONE_STALE, 3.0).fresh
