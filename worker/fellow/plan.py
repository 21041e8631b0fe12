"""What a reconciliation pass does, decided by pure functions (no I/O, the time given).

`changes` compares the API's memberships with the snapshot of the last pass: a membership new
to the API is an enrolment (`..._CREATED`, plus `..._COMPLETED` if already completed), one that
became completed a completion, one gone from the API a removal (`..._DELETED`). `decide` then
sorts each change: seen (relay holds its dedupe key: the webhook came, or an earlier pass
synthesized it), waiting (first seen less than `grace` ago: the webhook may merely be late), or
missed (synthesized now). A membership enters the snapshot only once none of its changes waits.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

from relay.store.reconcile import ACTIONS, Membership, MemberState

__all__ = ["Change", "Plan", "changes", "decide", "form_body"]

CREATED, COMPLETED, DELETED = ACTIONS


@dataclass(frozen=True, order=True)
class Change:
    """One event Fellow would have sent for a membership."""

    membership: Membership
    action: str  # CREATED, COMPLETED or DELETED

    @property
    def event(self) -> str:
        """The event type, e.g. COURSEMEMBER_CREATED."""
        return f"{self.membership.kind.event_prefix}_{self.action}"

    @property
    def name(self) -> str:
        """Its name in the pending hash: `COURSEMEMBER_CREATED course:7:42`."""
        return f"{self.event} {self.membership.to_field()}"

    def form(self) -> dict[str, str]:
        """The form's fields, in the order of Fellow's webhook page: id, memberId, event."""
        m = self.membership
        return {m.kind.id_field: m.container, "memberId": m.member, "event": self.event}


def form_body(change: Change) -> bytes:
    """The exact application/x-www-form-urlencoded body Fellow sends for the change."""
    return urlencode(change.form()).encode()


def changes(
    snapshot: Mapping[Membership, MemberState], api: Mapping[Membership, MemberState]
) -> list[Change]:
    """The events that would turn the snapshot into what the API shows, in delivery order."""
    found: list[Change] = []
    for membership in sorted(api):
        now, before = api[membership], snapshot.get(membership)
        if before is None:
            found.append(Change(membership, CREATED))
        if now is MemberState.COMPLETED and before is not MemberState.COMPLETED:
            found.append(Change(membership, COMPLETED))
    found.extend(Change(m, DELETED) for m in sorted(set(snapshot) - set(api)))
    return found


@dataclass(frozen=True)
class Plan:
    """A pass's decisions."""

    missed: tuple[Change, ...]  # to synthesize now
    seen: tuple[Change, ...]  # the webhook came (or was synthesized before)
    waiting: tuple[Change, ...]  # inside grace
    #: Snapshot updates: the API's state for each membership none of whose changes waits
    #: (None: the membership is gone).
    accepted: Mapping[Membership, MemberState | None] = field(default_factory=dict)
    pending: Mapping[str, float] = field(default_factory=dict)  # the waiting, first seen


def decide(
    found: list[Change],
    api: Mapping[Membership, MemberState],
    *,
    seen: Collection[str],
    pending: Mapping[str, float],
    now: float,
    grace: float,
) -> Plan:
    """Sort the changes into seen, waiting and missed (names in `seen` have a dedupe key)."""
    missed: list[Change] = []
    was_seen: list[Change] = []
    waiting: list[Change] = []
    still: dict[str, float] = {}
    for change in found:
        if change.name in seen:
            was_seen.append(change)
            continue
        first = pending.get(change.name, now)
        if now - first >= grace:
            missed.append(change)
        else:
            waiting.append(change)
            still[change.name] = first
    held = {c.membership for c in waiting}
    accepted = {c.membership: api.get(c.membership) for c in found if c.membership not in held}
    return Plan(tuple(missed), tuple(was_seen), tuple(waiting), accepted, still)
