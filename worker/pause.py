"""Pausing and resuming a target: a 410 from a `pause_on_gone` target, or an operator.

The record itself (`relay.store.pauses.Pause`, under `relay:paused:{target}`), its reading and
its writes live in relay/, where the operator views and the management API use them too. A
paused target's deliveries are held, not attempted: kicks do not claim from its due set, so they
keep their due times and their attempt budget, and the state stays pending or retrying. Resuming
deletes the key; the workers' pollers then find the held deliveries due and kick within a poll
interval.
"""

from __future__ import annotations

# The record's writes live beside its codec in relay.store.pauses, where the operator commands and
# the management API reach them too; the worker's 410 handling pauses through the same function.
from relay.store.pauses import pause_target, resume_target

__all__ = ["pause_target", "resume_target"]
