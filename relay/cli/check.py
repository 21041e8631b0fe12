"""`relay check`: validate routes.toml, or dry-run a sample request through it.

    relay check [PATH] [--json] [--allow-missing-env]
    relay check PATH --source S --body FILE [--header K:V ...] [--content-type T] [--method M]

Validation (relay.cli.check_report) prints every problem as `file: [table.key] message` and exits
1, or a summary and exits 0; warnings never fail. The dry run (relay.cli.check_dry_run) runs the
sample through `relay.receiver.accept.accept`, the decisions the receiver itself takes, and prints
the status it would answer and each event's type and targets. Secret values are never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from relay.cli.check_dry_run import DryRun, dry_run, dry_run_json, render_dry_run
from relay.cli.check_report import CheckResult, check_file, lint, render_check, result_json
from relay.config.settings import Settings
from relay.core.errors import ConfigError, Problem

__all__ = [
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_USAGE",
    "CheckResult",
    "DryRun",
    "add_arguments",
    "check_file",
    "dry_run",
    "lint",
    "parse_header",
    "run",
]

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def parse_header(text: str) -> tuple[str, str]:
    """`("x-event-type", "enrollment.create")` from `"X-Event-Type: enrollment.create"`."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"--header {text!r}: write NAME:VALUE")
    return name.strip().lower(), value.strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `relay check`."""
    parser.add_argument(
        "path", nargs="?", help="routes.toml to check (default: $RELAY_ROUTES or ./routes.toml)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON report for scripts")
    parser.add_argument(
        "--allow-missing-env",
        action="store_true",
        help="report unset environment variables as warnings, not problems (CI without secrets)",
    )
    dry = parser.add_argument_group("dry run: what would a sample request do?")
    dry.add_argument("--source", help="the source the sample is posted to")
    dry.add_argument("--body", metavar="FILE", help="the sample body ('-' reads stdin)")
    dry.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="K:V",
        help="a request header (repeatable), e.g. x-event-type:enrollment.create",
    )
    dry.add_argument("--content-type", help="default: what the source's kind takes")
    dry.add_argument("--method", default="POST", help="default: POST")


def run(args: argparse.Namespace) -> int:
    """Run `relay check`: validate, or dry-run when --source is given."""
    env = os.environ
    path = args.path
    if path is None:
        try:
            path = Settings.from_env(env).routes_path
        except ConfigError as exc:
            return _print_problems(exc.problems, as_json=args.json)
    if args.source is None and args.body is None:
        result = check_file(path, env, require_env=not args.allow_missing_env)
        _out(orjson_text(result_json(result)) if args.json else render_check(result))
        return EXIT_OK if result.ok else EXIT_PROBLEMS
    if args.source is None or args.body is None:
        sys.stderr.write("relay check: a dry run needs both --source and --body\n")
        return EXIT_USAGE
    return _dry_run(args, path)


def _dry_run(args: argparse.Namespace, path: str) -> int:
    try:
        headers = dict(parse_header(h) for h in args.header)
        body = sys.stdin.buffer.read() if args.body == "-" else Path(args.body).read_bytes()
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"relay check: {exc}\n")
        return EXIT_USAGE
    # A dry run works without the production secrets: unset ones are noted, not fatal.
    result = check_file(path, os.environ, require_env=False)
    if not result.ok or result.table is None:
        return _print_problems(list(result.problems), as_json=args.json)
    outcome = dry_run(result.table, args.source, body, headers, args.content_type, args.method)
    if args.json:
        _out(orjson_text(dry_run_json(outcome)))
    else:
        notes = "".join(f"note: {p}\n" for p in result.unset)
        _out(notes + render_dry_run(outcome))
    return EXIT_OK if outcome.accepted else EXIT_PROBLEMS


def _print_problems(problems: Sequence[Problem], as_json: bool) -> int:
    if as_json:
        items = [
            {"file": p.file, "table": p.table, "key": p.key, "message": p.message, "text": str(p)}
            for p in problems
        ]
        _out(orjson_text({"ok": False, "problems": items}))
    else:
        _out("".join(f"{p}\n" for p in problems))
    return EXIT_PROBLEMS


def orjson_text(data: Any) -> str:
    """Indented JSON text with a final newline."""
    return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n"


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
