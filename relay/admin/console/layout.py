"""The frame around every console page (pure): navigation, who is signed in, notices.

The page links one stylesheet and one script of the console's own (`/static/`), nothing from
elsewhere: the Content-Security-Policy (relay.admin.console.guard) allows only those.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from relay.admin.console.html import button, e, post_form, template
from relay.admin.tokens import Principal

#: The document: head, header with navigation, main, footer.
LAYOUT = template("layout.html")

#: The navigation, in order: (path, label).
NAV = (
    ("/", "Overview"),
    ("/events", "Events"),
    ("/dead-letters", "Dead letters"),
    ("/targets", "Targets"),
    ("/sources", "Sources"),
)


class NoticeKind(StrEnum):
    """How a notice looks: it went well, or it did not."""

    OK = "ok"
    ERROR = "error"


@dataclass(frozen=True)
class Notice:
    """One line shown above a page's heading (the result of the last action)."""

    kind: NoticeKind
    text: str


@dataclass(frozen=True)
class Viewer:
    """Who looks at a page, and the CSRF token their forms carry ("" for a bearer request)."""

    principal: Principal
    csrf: str

    @property
    def can_write(self) -> bool:
        """Whether write buttons are shown (a read token sees none)."""
        return self.principal.can_write


def _nav(current: str) -> str:
    items = []
    for path, label in NAV:
        here = ' aria-current="page"' if path == current else ""
        items.append(f'<li><a href="{e(path)}"{here}>{e(label)}</a></li>')
    return f'<nav aria-label="Console"><ul>{"".join(items)}</ul></nav>'


def _who(viewer: Viewer | None) -> str:
    if viewer is None:
        return ""
    p = viewer.principal
    signed = (
        f'<span class="who">signed in as <strong>{e(p.name)}</strong> '
        f'<span class="scope">({e(p.scope)})</span></span>'
    )
    if not viewer.csrf:  # a bearer request: there is no session to end
        return f'<div class="account">{signed}</div>'
    out = post_form("/sign-out", viewer.csrf, button("Sign out"), label="Sign out")
    return f'<div class="account">{signed}{out}</div>'


def _notice(notice: Notice | None) -> str:
    if notice is None:
        return ""
    role = "alert" if notice.kind is NoticeKind.ERROR else "status"
    return f'<div class="notice {e(notice.kind)}" role="{role}">{e(notice.text)}</div>'


def render_page(
    title: str,
    body: str,
    viewer: Viewer | None,
    *,
    current: str = "",
    heading: str | None = None,
    notice: Notice | None = None,
) -> str:
    """A whole console page around `body` (markup already escaped)."""
    return LAYOUT.substitute(
        title=e(title),
        heading=e(heading if heading is not None else title),
        nav=_nav(current) if viewer is not None else "",
        who=_who(viewer),
        notice=_notice(notice),
        body=body,
    )
