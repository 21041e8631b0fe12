"""The status page's HTML pieces (pure): escaped text, table cells, a table.

Every value put into the page goes through `escape_text`; the templates hold only fixed markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from relay.core.times import format_age, format_time

__all__ = ["cell", "escape_text", "num", "table", "when"]


def escape_text(value: object) -> str:
    """Text for HTML: escaped, quotes included (it may land in an attribute)."""
    return escape("" if value is None else str(value), quote=True)


def cell(field: str, value: object, cls: str = "") -> str:
    """A <td> of escaped text ("-" when empty), named by data-field."""
    text = "-" if value is None or value == "" else escape_text(value)
    klass = f' class="{cls}"' if cls else ""
    return f'<td data-field="{escape_text(field)}"{klass}>{text}</td>'


def num(field: str, value: int, alert: bool = False, cls: str = "") -> str:
    """A right-aligned number cell, red when `alert` and not 0."""
    return cell(
        field, value, " ".join(filter(None, ("num", cls, "alert" if alert and value else "")))
    )


def when(field: str, at: float | None, now: float) -> str:
    """A cell with a <time>: how long ago, the exact UTC time on hover."""
    if at is None:
        return cell(field, None)
    moment = escape_text(format_time(at))
    return (
        f'<td data-field="{escape_text(field)}"><time datetime="{moment}" title="{moment}">'
        f"{escape_text(format_age(now - at))} ago</time></td>"
    )


def table(
    headers: Sequence[str],
    rows: Sequence[str],
    empty: str,
    attr: str = "",
    groups: Sequence[tuple[str, int]] = (),
) -> str:
    """A table with its header (and column groups), or a line saying `empty` without rows."""
    if not rows:
        return f'<p class="empty"{attr}>{escape_text(empty)}</p>'
    over = "".join(
        f'<th colspan="{span}" class="group">{escape_text(g)}</th>' for g, span in groups
    )
    head = "".join(f"<th>{escape_text(h)}</th>" for h in headers)
    if groups:
        head = f"{over}</tr><tr>{head}"
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
