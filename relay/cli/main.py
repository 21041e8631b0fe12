"""The `relay` console script: a thin dispatcher to one module per command.

`COMMANDS` is the registry, in the order of `relay --help`. Each entry's loader imports its
command module with an ordinary, type-checked import, and `main` loads only the command it runs:
`relay check` does not pay for aiohttp or RQ.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from relay import __version__

#: Adds a command's arguments to its subparser.
AddArguments = Callable[[argparse.ArgumentParser], None]
#: Runs a command with its parsed arguments; returns the exit code.
Run = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """One `relay` command: its name, its one-line help and where its code is."""

    name: str
    help: str
    load: Callable[[], tuple[AddArguments, Run]]


def _serve() -> tuple[AddArguments, Run]:
    from relay.cli import serve

    return serve.add_arguments, serve.run


def _worker() -> tuple[AddArguments, Run]:
    from relay.cli import worker

    return worker.add_arguments, worker.run


def _dev() -> tuple[AddArguments, Run]:
    from relay.cli.dev import command

    return command.add_arguments, command.run


def _check() -> tuple[AddArguments, Run]:
    from relay.cli import check

    return check.add_arguments, check.run


def _status() -> tuple[AddArguments, Run]:
    from relay.cli import status

    return status.add_arguments, status.run


def _dead() -> tuple[AddArguments, Run]:
    from relay.cli import dead

    return dead.add_arguments, dead.run


def _replay() -> tuple[AddArguments, Run]:
    from relay.cli import replay

    return replay.add_arguments, replay.run


def _pause() -> tuple[AddArguments, Run]:
    from relay.cli import pause

    return pause.add_pause_arguments, pause.run_pause


def _resume() -> tuple[AddArguments, Run]:
    from relay.cli import pause

    return pause.add_resume_arguments, pause.run_resume


def _events() -> tuple[AddArguments, Run]:
    from relay.cli import events

    return events.add_arguments, events.run


def _subscribe() -> tuple[AddArguments, Run]:
    from relay.cli import subscribe

    return subscribe.add_arguments, subscribe.run


def _reconcile() -> tuple[AddArguments, Run]:
    from relay.cli import reconcile

    return reconcile.add_arguments, reconcile.run


COMMANDS: tuple[Command, ...] = (
    Command("serve", "run the receiver (HTTP, PORT default 8000)", _serve),
    Command("worker", "run RQ delivery workers with the scheduler", _worker),
    Command("dev", "run everything for a first try: Redis, receiver and worker", _dev),
    Command("check", "validate routes.toml, or dry-run a sample request through it", _check),
    Command("status", "per-target delivery figures and queue depth", _status),
    Command("dead", "list and show dead letters", _dead),
    Command("replay", "replay dead letters", _replay),
    Command("pause", "hold a target's deliveries (no target: list paused ones)", _pause),
    Command("resume", "release a paused target's held deliveries", _resume),
    Command("events", "list and inspect events with their attempts", _events),
    Command("reconcile", "one reconciliation pass now: synthesize missed events", _reconcile),
    Command("subscribe", "manage provider subscriptions (Elucidat)", _subscribe),
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: every command, with the arguments of all or of `only` alone.

    A command left out is named in `relay --help` but its module is not imported.
    """
    parser = argparse.ArgumentParser(prog="relay", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        subparser = sub.add_parser(command.name, help=command.help, description=command.help)
        if only is None or command.name == only:
            add_arguments, run = command.load()
            add_arguments(subparser)
            subparser.set_defaults(_run=run)
    return parser


def chosen_command(argv: Sequence[str]) -> str | None:
    """The command named on a command line: its first word that is not an option."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(only=chosen_command(words)).parse_args(words)
    run: Run = args._run
    try:
        return int(run(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 1
