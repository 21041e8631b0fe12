"""`relay dev` as a subprocess of a test, its output read line by line in a thread."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest


class DevProcess:
    """`relay dev` as a subprocess, with its output read line by line in a thread."""

    def __init__(
        self,
        cwd: Path,
        env: dict[str, str],
        *args: str,
        command: Sequence[str] = (sys.executable, "-m", "relay"),
        new_session: bool = False,
    ) -> None:
        # new_session: the process leads a group of its own, as a terminal's foreground job does,
        # so that a test can send Ctrl-C's SIGINT to the whole group.
        self.process = subprocess.Popen(
            [*command, "dev", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=new_session,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60) -> str:
        """Wait until the output holds `text`; return the output so far."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.process.poll() is not None:
                self.reader.join(5)
                if text in self.output:
                    break
                pytest.fail(f"relay dev exited ({self.process.returncode}):\n{self.output}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {text!r} from relay dev within {timeout} s:\n{self.output}")
            time.sleep(0.05)
        return self.output

    def interrupt(self, timeout: float = 60) -> int:
        """Ctrl-C: SIGINT, then the exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.wait(timeout)

    def wait(self, timeout: float = 60) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"relay dev did not stop within {timeout} s:\n{self.output}")
        self.reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
