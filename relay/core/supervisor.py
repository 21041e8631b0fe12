"""N forked children under one parent: `relay worker --processes`, `relay serve --processes`.

The parent forks each child (before it has threads or an event loop, so fork is safe), forwards
SIGTERM, SIGINT and SIGHUP to them, restarts a child that dies (unless `restart` is off, or it
is stopping), and returns their exit codes once all have stopped. It follows the state its
children start from too (routes.toml, polled by the caller's `updates` in the parent's loop, no
thread), so that a restarted child starts on the routes its siblings reloaded, not on those the
parent started with. It knows nothing of what that state is.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

import structlog

log = structlog.get_logger("relay.supervisor")

State = TypeVar("State")
#: How often the parent asks `updates` for a newer state.
POLL_INTERVAL = 1.0


@dataclass(frozen=True)
class Stopped:
    """How the children ended."""

    codes: list[int | None]
    restarts: int
    stopping: bool  # a signal asked them to stop (rather than each finishing on its own)

    @property
    def clean(self) -> bool:
        """Every child exited 0, or was signalled by the stop itself before it could answer."""
        # A child signalled before its own handlers existed (still starting) had nothing in hand.
        ok = {0, -signal.SIGTERM, -signal.SIGINT} if self.stopping else {0}
        return all(code in ok for code in self.codes)


_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _run(
    child: Callable[[int, State], int], index: int, state: State, handlers: Mapping[int, Any]
) -> None:  # pragma: no cover - runs in the child
    # A child restarted after the parent installed `forward` inherits it: a SIGTERM during its
    # start-up would run the parent's forwarding in the child (and exit 1). Put back the
    # handlers the parent had before.
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    os._exit(child(index, state))


def supervise(
    child: Callable[[int, State], int],
    count: int,
    state: State,
    *,
    name: str,
    restart: bool = True,
    updates: Callable[[], State | None] | None = None,
    started: Mapping[str, Any] | None = None,
) -> Stopped:
    """Run `count` children of `child(index, state)` until all have stopped.

    `updates`, polled every POLL_INTERVAL, returns a newer state for children started later,
    or None when nothing changed.
    """
    ctx = multiprocessing.get_context("fork")
    latest = state
    original = {signum: signal.getsignal(signum) for signum in _FORWARDED}

    def spawn(index: int) -> multiprocessing.process.BaseProcess:
        # SIGHUP stays blocked in the child until its own handler is in place; one sent
        # meanwhile waits instead of killing it (SIGHUP's default action).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            process = ctx.Process(
                target=_run, args=(child, index, latest, original), name=f"relay-{name}-{index}"
            )
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return process

    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for process in children:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signum)

    # A SIGHUP before `forward` is installed would kill the parent (its default action): it
    # waits, blocked, until then. (SIGTERM and SIGINT must not be blocked: children inherit
    # the mask, and their warm shutdown needs them.)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        children = [spawn(i) for i in range(count)]
        for signum in _FORWARDED:
            signal.signal(signum, forward)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    pids = [c.pid for c in children]
    log.info(f"{name} processes started", processes=count, pids=pids, **(started or {}))
    restarts = 0
    next_poll = time.monotonic() + POLL_INTERVAL
    try:
        while True:
            alive = [c for c in children if c.is_alive()]
            if not alive and (stopping or not restart):
                break
            for i, process in enumerate(children):
                if process.is_alive() or process.exitcode is None or stopping or not restart:
                    continue
                log.warning(
                    f"{name} process exited: restarting", pid=process.pid, code=process.exitcode
                )
                restarts += 1
                children[i] = spawn(i)
            if updates is not None and time.monotonic() >= next_poll:
                latest = updates() or latest
                next_poll = time.monotonic() + POLL_INTERVAL
            time.sleep(0.2)
    finally:
        for signum, handler in original.items():
            signal.signal(signum, handler)
    result = Stopped([c.exitcode for c in children], restarts, stopping)
    log.info(f"{name} processes stopped", exit_codes=result.codes, restarts=restarts)
    return result
