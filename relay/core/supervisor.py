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
from typing import Any, Generic, TypeVar

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


class _Children(Generic[State]):
    """The forked children of one `supervise` call, and the parent's forwarding of signals."""

    def __init__(
        self,
        child: Callable[[int, State], int],
        state: State,
        name: str,
        original: Mapping[signal.Signals, Any],
    ) -> None:
        self._ctx = multiprocessing.get_context("fork")
        self._child = child
        self._name = name
        self._original = original
        self.latest = state  # what a child started (or restarted) now starts from
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.stopping = False
        self._stop_signal = signal.SIGTERM  # the signal that asked for the stop
        self.restarts = 0

    def spawn(self, index: int) -> multiprocessing.process.BaseProcess:
        """Fork child `index` on the latest state."""
        # SIGHUP stays blocked in the child until its own handler is in place; one sent
        # meanwhile waits instead of killing it (SIGHUP's default action).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            process = self._ctx.Process(
                target=_run,
                args=(self._child, index, self.latest, self._original),
                name=f"relay-{self._name}-{index}",
            )
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return process

    def forward(self, signum: int, frame: FrameType | None) -> None:
        """The parent's handler: pass the signal on; anything but SIGHUP means stopping."""
        if signum != signal.SIGHUP:
            self.stopping = True
            self._stop_signal = signal.Signals(signum)
        for process in self.processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signum)

    def start(self, count: int) -> None:
        """Fork `count` children, then forward the signals to them."""
        # A SIGHUP before `forward` is installed would kill the parent (its default action): it
        # waits, blocked, until then. (SIGTERM and SIGINT must not be blocked: children inherit
        # the mask, and their warm shutdown needs them.)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            self.processes = [self.spawn(i) for i in range(count)]
            for signum in _FORWARDED:
                signal.signal(signum, self.forward)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def watch(self, restart: bool, updates: Callable[[], State | None] | None) -> None:
        """Restart children that exit (unless told not to, or stopping) until none is left."""
        next_poll = time.monotonic() + POLL_INTERVAL
        while True:
            alive = [c for c in self.processes if c.is_alive()]
            if not alive and (self.stopping or not restart):
                return
            for i, process in enumerate(self.processes):
                if process.is_alive() or process.exitcode is None or self.stopping or not restart:
                    continue
                log.warning(
                    f"{self._name} process exited: restarting",
                    pid=process.pid,
                    code=process.exitcode,
                )
                self.restarts += 1
                self.processes[i] = self.spawn(i)
                # A stop that came while it was forked found only the exited one in the list:
                # the new child gets it now, or it would run on while the parent waits for it.
                if self.stopping and self.processes[i].pid is not None:
                    os.kill(self.processes[i].pid, self._stop_signal)
            if updates is not None and time.monotonic() >= next_poll:
                self.latest = updates() or self.latest
                next_poll = time.monotonic() + POLL_INTERVAL
            time.sleep(0.2)


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
    original = {signum: signal.getsignal(signum) for signum in _FORWARDED}
    children = _Children(child, state, name, original)
    children.start(count)
    pids = [c.pid for c in children.processes]
    log.info(f"{name} processes started", processes=count, pids=pids, **(started or {}))
    try:
        children.watch(restart, updates)
    finally:
        for signum, handler in original.items():
            signal.signal(signum, handler)
    codes = [c.exitcode for c in children.processes]
    result = Stopped(codes, children.restarts, children.stopping)
    log.info(f"{name} processes stopped", exit_codes=result.codes, restarts=children.restarts)
    return result
