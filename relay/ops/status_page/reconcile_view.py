"""The status page's reconciliation section (pure): each reconciled source's last pass.

A source whose last pass failed gets a red banner at the top of the page and the same note in
its row: when, of what kind (unexpected shape, 401, 429 storm, timeout, ...), the error, and
that nothing was synthesized. No section at all when no source is reconciled.
"""

from __future__ import annotations

from collections.abc import Sequence

from relay.ops.reconciliation import ReconcileStatus
from relay.ops.status_page.cells import cell, escape_text, num, table, when

__all__ = ["RECONCILE_HEADERS", "reconcile_banners", "reconcile_section"]

RECONCILE_HEADERS = (
    "Source", "Last pass", "Outcome", "Failures in a row", "Missed (last good pass)",
    "Missed (all)", "Last success",
)  # fmt: skip


def _row(r: ReconcileStatus, now: float) -> str:
    record = r.record
    name = escape_text(r.name)
    if not r.configured:
        name += ' <span class="note">not in routes</span>'
    if r.failed:
        name += f' <span class="note reconcile">{escape_text(r.note(now))}</span>'
    outcome = "no pass yet" if record.outcome is None else str(record.outcome)
    klass = "failing" if r.failed else ("ok" if record.outcome is not None else "idle")
    return (
        f'<tr data-reconciled="{escape_text(r.name)}">'
        f'<td data-field="name" class="name">{name}</td>'
        + when("last_pass_at", record.at or None, now)
        + f'<td data-field="outcome"><span class="pill {klass}">{escape_text(outcome)}</span></td>'
        + num("failures", record.failures, alert=True)
        + num("missed_last_pass", record.missed)
        + num("missed", r.missed_total)
        + (when("last_success_at", record.ok_at, now) if record.ok_at else cell("last", None))
        + "</tr>"
    )


def reconcile_section(reconciled: Sequence[ReconcileStatus], now: float) -> str:
    """The "Reconciliation" heading and table ("" when no source is reconciled)."""
    if not reconciled:
        return ""
    rows = [_row(r, now) for r in reconciled]
    return "<h2>Reconciliation</h2>" + table(RECONCILE_HEADERS, rows, "", ' id="reconciliation"')


def reconcile_banners(reconciled: Sequence[ReconcileStatus], now: float) -> list[str]:
    """One banner per source whose last pass failed (plain text: the caller escapes it)."""
    return [f"Reconciliation failing: {r.note(now)}" for r in reconciled if r.failed]
