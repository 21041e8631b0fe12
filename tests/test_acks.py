"""RELAY_ACK_REPLICAS as a value (relay.core.acks), its settings errors, and the pure reading of
the replicas a primary counts online (relay.store.replication)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis._parsers.helpers import parse_info

from relay.config.settings import Settings
from relay.core.acks import EVERY_ONLINE, PRIMARY_ONLY, AckReplicas
from relay.core.errors import ConfigError
from relay.store.replication import (
    ReplicationFacts,
    facts_from_info,
    online_from_info,
    online_from_role,
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


def test_online_replicas_are_read_from_role_replies() -> None:
    master = [b"master", 1290, [[b"10.0.0.2", b"6380", b"1290"], [b"10.0.0.3", b"6381", b"1290"]]]
    assert online_from_role(master) == 2
    assert online_from_role([b"master", 0, []]) == 0
    assert online_from_role(["master", 0, [["10.0.0.2", "6380", "0"]]]) == 1  # decoded replies
    assert online_from_role([b"slave", b"10.0.0.1", 6379, b"connected", 1290]) == 0
    assert online_from_role(None) == 0


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
