"""The `relay` console script: a thin dispatcher to one module per command.

Each command module has `add_arguments(parser)` and `run(args) -> int`. Modules are loaded by
name only when their command runs, so `relay check` does not pay for aiohttp or RQ, and the
receiver package never imports the worker package (`relay worker` is loaded by dotted path).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from relay import __version__

#: command -> (module, one-line help). Order is the order of `relay --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("relay.cli.serve", "run the receiver (HTTP, PORT default 8000)"),
    "worker": ("relay.cli.worker", "run RQ delivery workers with the scheduler"),
    "dev": ("relay.cli.dev.command", "run everything for a first try: Redis, receiver and worker"),
    "check": ("relay.cli.check", "validate routes.toml, or dry-run a sample request through it"),
    "status": ("relay.cli.deliveries", "per-target delivery figures and queue depth"),
    "dead": ("relay.cli.deliveries", "list and show dead letters"),
    "replay": ("relay.cli.deliveries", "replay dead letters"),
    "pause": ("relay.cli.pause", "hold a target's deliveries (no target: list paused ones)"),
    "resume": ("relay.cli.pause", "release a paused target's held deliveries"),
    "events": ("relay.cli.events", "list and inspect events with their attempts"),
    "subscribe": ("relay.cli.subscribe", "manage provider subscriptions (Elucidat)"),
}


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1, with a message naming the bad value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, loading each command module to add its arguments."""
    parser = argparse.ArgumentParser(prog="relay", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # command not built yet in this version
        command = sub.add_parser(name, help=help_text, description=help_text)
        # run_<cmd> counts only beside add_<cmd>_arguments: relay.cli.worker imports a `run_worker`
        # that is not its command function.
        if hasattr(module, f"add_{name}_arguments"):
            add, run = getattr(module, f"add_{name}_arguments"), getattr(module, f"run_{name}")
        else:
            add, run = module.add_arguments, module.run
        add(command)
        command.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 1
