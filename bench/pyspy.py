"""py-spy around a benchmark phase: sample some processes, then say where their time went.

    recorder = Recorder.start(pids, directory)   # `py-spy record --format raw` per process
    ...                                           # the phase being profiled
    recorder.stop()                               # SIGINT: py-spy writes its file and exits
    print(summarize(recorder.files))              # top frames by own and by inclusive samples

py-spy (`pip install py-spy`) needs ptrace rights over the processes (root, or
kernel.yama.ptrace_scope 0). Samples are taken without `--idle`, so mostly where the CPU went;
py-spy's idle detection is approximate, though, and time a thread spends blocked in `epoll` or
in a socket read (a Redis round trip) often counts too: read those frames as waiting.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Recorder:
    """One `py-spy record` per sampled process."""

    processes: list[subprocess.Popen[bytes]]
    files: list[Path]

    @classmethod
    def start(cls, pids: Sequence[int], directory: Path, rate: int = 100) -> Recorder:
        """Start sampling each pid `rate` times a second (py-spy's --nonblocking: no pauses)."""
        # The venv's own bin first: the benchmark runs as .venv/bin/python, often not activated.
        binary = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy"
        )
        if binary is None:
            raise SystemExit("--profile needs py-spy (.venv/bin/pip install py-spy)")
        directory.mkdir(parents=True, exist_ok=True)
        processes, files = [], []
        for pid in pids:
            out = directory / f"pyspy-{pid}.txt"
            args = [binary, "record", "--pid", str(pid), "--format", "raw", "--output", str(out)]
            args += ["--rate", str(rate), "--nonblocking", "--threads"]
            log = open(directory / f"pyspy-{pid}.log", "wb")  # noqa: SIM115
            processes.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
            files.append(out)
        return cls(processes, files)

    def stop(self) -> None:
        """Stop sampling; py-spy writes its file on SIGINT."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.processes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def read_stacks(files: Sequence[Path]) -> Counter[tuple[str, ...]]:
    """Samples per stack (outermost frame first) from py-spy raw files (collapsed stacks)."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            frames, _, count = line.rpartition(" ")
            if frames and count.isdigit():
                stacks[tuple(frames.split(";"))] += int(count)
    return stacks


def _short(frame: str) -> str:
    """`func (path/to/module.py:12)` as `func (path/to/module.py)`: line numbers split samples."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rstrip(")")
    return f"{name} ({file})" if file else name


def _package(frame: str) -> str:
    """The package a frame's code is in: `worker`, `redis`, `asyncio`, ... (`thread` for roots)."""
    where = frame.partition(" (")[2]
    if not where:
        return "thread"
    first = where.split("/", 1)[0]
    return first.split(".", 1)[0] if "/" in where else where.split(".", 1)[0]


def summarize(files: Sequence[Path], top: int = 12) -> str:
    """Where the sampled CPU went: by thread, by package of the running frame, and by frame."""
    stacks = read_stacks(files)
    total = sum(stacks.values())
    if not total:
        return "  py-spy: no samples (is ptrace allowed?)"
    threads: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks.items():
        threads[frames[0].partition(": ")[2] or frames[0]] += count
        packages[_package(frames[-1])] += count
        own[_short(frames[-1])] += count
        # Inclusive time only for relay's own code: that is where a change would be made.
        for name in {_short(f) for f in frames if " (worker/" in f or " (relay/" in f}:
            inclusive[name] += count

    def block(title: str, counts: Counter[str], n: int) -> list[str]:
        return [f"  {title}:"] + [f"    {c / total:6.1%}  {k}" for k, c in counts.most_common(n)]

    lines = [f"  py-spy: {total} samples of running threads (some waits count: bench/pyspy.py) "
             f"from {len(files)} process(es)"]  # fmt: skip
    lines += block("by thread", threads, 6)
    lines += block("by package of the running frame", packages, 8)
    lines += block("own time (the running frame)", own, top)
    lines += block("inclusive, relay's code (the frame and what it calls)", inclusive, top * 2)
    return "\n".join(lines)


def main() -> None:
    """`python bench/pyspy.py FILE...`: summarize py-spy raw files recorded earlier."""
    print(summarize([Path(a) for a in sys.argv[1:]]))


if __name__ == "__main__":
    main()
