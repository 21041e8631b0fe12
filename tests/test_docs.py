"""The README stays a page, and the commands the docs show are commands relay has.

The docs site itself is checked by `make docs-build` (`mkdocs build --strict`: links and anchors).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from relay.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOC_FILES = [README, *sorted((ROOT / "docs").rglob("*.md"))]

#: A newcomer reads the README top to bottom: the reference lives in docs/.
README_MAX_LINES = 300

#: `relay CMD [SUB]` at the start of a line of a code block, after an optional `$ ` prompt and an
#: optional path (`.venv/bin/relay`).
_COMMAND_LINE = re.compile(r"^\s*(?:\$\s+)?(?:\S*/)?relay\s+([a-z][\w-]*)(?:\s+([a-z][\w-]*))?")
_FENCE = re.compile(r"^\s*```")
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def code_lines(path: Path) -> list[tuple[int, str]]:
    """The lines inside fenced code blocks of a Markdown file, with their line numbers."""
    found, inside = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if _FENCE.match(line):
            inside = not inside
        elif inside:
            found.append((number, line))
    return found


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommand parsers of a parser (empty when it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_readme_is_a_page() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move reference to docs/"
    )


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    first_block = text[text.index("```") : text.index("```", text.index("```") + 3)]
    assert "make run" in first_block
    assert "make test" in first_block
    assert "relay dev" in text


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_in_code_blocks_exist(path: Path) -> None:
    commands = subcommands(build_parser())
    unknown = []
    for number, line in code_lines(path):
        match = _COMMAND_LINE.match(line)
        if match is None:
            continue
        command, sub = match.groups()
        if command not in commands:
            unknown.append(f"line {number}: relay {command}")
            continue
        choices = subcommands(commands[command])
        if choices and sub is not None and sub not in choices:
            unknown.append(f"line {number}: relay {command} {sub}")
    assert not unknown, f"{path.name} shows commands the CLI does not have: {unknown}"


def test_readme_links_stay_in_the_repository() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [
        target
        for target in _LINK.findall(text)
        if "://" not in target and not (ROOT / target).exists()
    ]
    assert not missing, f"README.md links to files that are not in the repository: {missing}"
    assert "DESIGN.md" not in text
