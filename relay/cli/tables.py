"""A tiny plain-text table renderer for the operator commands (no dependency)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: Shown for a missing value, so an empty cell never shifts what follows it by eye.
EMPTY = "-"


def cell_text(value: object) -> str:
    """The text of one cell: numbers as they are, None as EMPTY, one line only."""
    if value is None or value == "":
        return EMPTY
    if isinstance(value, float):
        return f"{value:g}"
    # A newline or tab inside a cell would break every column after it.
    return " ".join(str(value).split())


def _is_numeric_column(values: Iterable[object]) -> bool:
    """Whether a column holds numbers only (None aside), so it reads best right-aligned."""
    present = [v for v in values if v is not None]
    return bool(present) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in present
    )


def render_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned; no trailing spaces."""
    materialised = [list(row) for row in rows]
    numeric = [_is_numeric_column(row[i] for row in materialised) for i in range(len(headers))]
    texts = [[cell_text(v) for v in row] for row in materialised]
    widths = [max([len(h), *(len(row[i]) for row in texts)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        )
        return "  ".join(padded).rstrip()

    return "\n".join([line(list(headers)), *(line(row) for row in texts)])


def render_fields(pairs: Iterable[tuple[str, object]]) -> str:
    """A `name: value` block with the values aligned, for one record."""
    items = [(name, cell_text(value)) for name, value in pairs]
    if not items:
        return ""
    width = max(len(name) for name, _ in items) + 1
    return "\n".join(f"{(name + ':').ljust(width)} {value}" for name, value in items)
