"""Run `relay check` in-process, as its console script would, and capture what it prints."""

from __future__ import annotations

import argparse
import io
from contextlib import redirect_stderr, redirect_stdout

from relay.cli import check


def run_check(*argv: str) -> tuple[int, str]:
    """`relay check ARGV`: (exit code, stdout and stderr together)."""
    parser = argparse.ArgumentParser(prog="relay check")
    check.add_arguments(parser)
    args = parser.parse_args(list(argv))
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        code = check.run(args)
    return code, out.getvalue()
