"""The packages split by concern keep their public names: every `__all__` entry exists."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

PACKAGES = (
    "relay.ops.deliveries",
    "relay.ops.events",
    "relay.ops.providers.elucidat",
    "relay.store.records",
)


@pytest.mark.parametrize("name", PACKAGES)
def test_every_name_in_all_exists(name: str) -> None:
    module: ModuleType = importlib.import_module(name)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert missing == []
    assert len(set(module.__all__)) == len(module.__all__)


def test_the_operator_commands_names_are_exported() -> None:
    from relay.ops import deliveries as ops

    used = {
        "Attempt", "DeadFilter", "DeadLetter", "Delivery", "EventDetail", "QueueStatus",
        "ReplayResult", "SourceStatus", "Status", "TargetStatus", "collect_status",
        "dead_count_by_target", "dead_targets_of", "delivery_states", "iter_dead", "list_dead",
        "replay_deliveries", "replay_delivery", "show_event",
    }  # fmt: skip
    assert used <= set(ops.__all__)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from relay.ops.deliveries import *", namespace)  # noqa: S102
    assert set(namespace) - {"__builtins__"} == set(
        importlib.import_module("relay.ops.deliveries").__all__
    )
