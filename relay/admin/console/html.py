"""The console's HTML building blocks (pure): escaping, links, tables, times, forms.

Every value that reaches a page passes through `e()` here; the templates hold only fixed markup.
Tables have a caption and `<th scope>` headers, so a screen reader can say which column a cell
belongs to.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from importlib import resources
from string import Template
from urllib.parse import quote, urlencode

from relay.admin.console.session import CSRF_FIELD
from relay.core.times import format_age, format_time


def e(value: object) -> str:
    """Text for HTML: escaped, quotes included (it may land in an attribute)."""
    return escape("" if value is None else str(value), quote=True)


def template(name: str) -> Template:
    """A template of relay/admin/console/templates; line breaks and the indentation after them
    are dropped, so the file reads as an indented document and the page is sent compact."""
    files = resources.files("relay.admin.console").joinpath("templates").joinpath(name)
    return Template(re.sub(r"\n\s*", "", files.read_text(encoding="utf-8")))


def url(path: str, query: Mapping[str, object] | None = None) -> str:
    """`path?query` with empty values left out (the link of a filtered list stays short)."""
    kept = {k: str(v) for k, v in (query or {}).items() if v not in (None, "")}
    return path + ("?" + urlencode(kept) if kept else "")


def event_url(event_id: str) -> str:
    """The console page of one event."""
    return "/events/" + quote(event_id, safe="")


def target_url(name: str) -> str:
    """The targets page, at one target's row."""
    return "/targets#target-" + quote(name, safe="")


def target_action(name: str, verb: str) -> str:
    """Where a target's pause or resume form posts."""
    return f"/targets/{quote(name, safe='')}/{verb}"


def link(href: str, text: object, cls: str = "") -> str:
    """An `<a>` with escaped text."""
    klass = f' class="{e(cls)}"' if cls else ""
    return f'<a href="{e(href)}"{klass}>{e(text)}</a>'


def when(at: float | None, now: float) -> str:
    """A `<time>`: its age for reading, the exact UTC time in its title and datetime."""
    if at is None:
        return "-"
    moment = e(format_time(at))
    return f'<time datetime="{moment}" title="{moment}">{e(format_age(now - at))} ago</time>'


def pill(word: str) -> str:
    """A state or health word as a coloured badge (the colour is never its only sign)."""
    return f'<span class="pill {e(word)}">{e(word)}</span>'


def cell(content: str, cls: str = "", field: str = "") -> str:
    """A `<td>` of markup already escaped."""
    klass = f' class="{e(cls)}"' if cls else ""
    data = f' data-field="{e(field)}"' if field else ""
    return f"<td{data}{klass}>{content}</td>"


def text_cell(value: object, cls: str = "", field: str = "") -> str:
    """A `<td>` of text ("-" when empty)."""
    return cell("-" if value is None or value == "" else e(value), cls, field)


def num_cell(value: int, field: str = "", alert: bool = False) -> str:
    """A right-aligned number, red when `alert` and not zero."""
    return cell(e(value), "num alert" if alert and value else "num", field)


def table(
    caption: str,
    headers: Sequence[str],
    rows: Iterable[str],
    *,
    empty: str,
    ident: str = "",
    hide_caption: bool = False,
) -> str:
    """A table with a caption and column headers, or a paragraph saying it is empty."""
    body = "".join(rows)
    attr = f' id="{e(ident)}"' if ident else ""
    if not body:
        return f'<p class="empty"{attr}>{e(empty)}</p>'
    head = "".join(f'<th scope="col">{e(h)}</th>' for h in headers)
    cap_class = ' class="visually-hidden"' if hide_caption else ""
    return (
        f"<table{attr}><caption{cap_class}>{e(caption)}</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def hidden(name: str, value: object) -> str:
    """A hidden form field."""
    return f'<input type="hidden" name="{e(name)}" value="{e(value)}">'


def csrf_field(token: str) -> str:
    """The session's CSRF token as a hidden field: every form that posts carries one."""
    return hidden(CSRF_FIELD, token)


def post_form(
    action: str, csrf: str, inner: str, *, cls: str = "inline", label: str = "", ident: str = ""
) -> str:
    """A POST form with the CSRF field; `label` names it for assistive technology."""
    aria = f' aria-label="{e(label)}"' if label else ""
    attr = f' id="{e(ident)}"' if ident else ""
    return (
        f'<form method="post" action="{e(action)}" class="{e(cls)}"{aria}{attr}>'
        f"{csrf_field(csrf)}{inner}</form>"
    )


def button(text: str, *, name: str = "", value: str = "", cls: str = "") -> str:
    """A submit button (with a name and value when the form has several)."""
    named = f' name="{e(name)}" value="{e(value)}"' if name else ""
    klass = f' class="{e(cls)}"' if cls else ""
    return f'<button type="submit"{named}{klass}>{e(text)}</button>'


def select(
    name: str, label: str, options: Sequence[str], chosen: str | None, *, any_label: str = "any"
) -> str:
    """A labelled `<select>` with an "any" first option."""
    opts = [f'<option value="">{e(any_label)}</option>']
    opts += [
        f'<option value="{e(o)}"{" selected" if o == chosen else ""}>{e(o)}</option>'
        for o in options
    ]
    ident = f"f-{name}"
    return (
        f'<div class="field"><label for="{e(ident)}">{e(label)}</label>'
        f'<select id="{e(ident)}" name="{e(name)}">{"".join(opts)}</select></div>'
    )


def text_input(
    name: str, label: str, value: str | None, *, placeholder: str = "", kind: str = "text"
) -> str:
    """A labelled text input."""
    ident = f"f-{name}"
    hint = f' placeholder="{e(placeholder)}"' if placeholder else ""
    return (
        f'<div class="field"><label for="{e(ident)}">{e(label)}</label>'
        f'<input type="{e(kind)}" id="{e(ident)}" name="{e(name)}" value="{e(value or "")}"'
        f"{hint}></div>"
    )


def definition_list(items: Sequence[tuple[str, str]]) -> str:
    """A `<dl>` of (term, markup already escaped)."""
    return "<dl>" + "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"
