"""Ctrl-C always stops `relay dev`'s embedded mode, whatever the main thread is doing.

The embedded Redis (fakeredis) serialises every command and Lua script behind one non-reentrant
lock, and RQ's worker runs on the main thread, where Python runs signal handlers. A stop handler
that makes a Redis call while that thread holds the lock waits for itself forever: `relay dev`
hung at Ctrl-C until killed. The handlers now only record the stop (worker.rq_worker).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
from rq import Queue
from rq.job import JobStatus

from relay.cli.dev.embedded import thread_scheduler_worker
from tests.support.dev_process import DevProcess
from tests.support.processes import post
from tests.support.redis_server import free_port
from tests.support.targets import TargetServer
from worker.rq_worker import RelayWorker

ROOT = Path(__file__).resolve().parents[1]

ROUTES = """
[sources.demo]
kind = "json"
token_env = "DEVSTOP_DEMO_TOKEN"

[targets.sink]
url = "{url}"
signing_secret_env = "DEVSTOP_SINK_WHSEC"

[[routes]]
source = "demo"
events = ["*"]
targets = ["sink"]
"""


def stop_under_lock(state: str) -> subprocess.CompletedProcess[str]:
    """tests.support.stop_under_lock in a subprocess; a deadlock there times out (and fails)."""
    return subprocess.run(
        [sys.executable, "-m", "tests.support.stop_under_lock", state],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )


@pytest.mark.timeout(60)
def test_a_stop_signal_on_a_busy_worker_inside_an_embedded_command_returns() -> None:
    # Before the fix RQ's handler wrote shutdown_requested_date (HSET) from here: a deadlock.
    try:
        result = stop_under_lock("busy")
    except subprocess.TimeoutExpired:
        pytest.fail("the stop handler deadlocked on the embedded Redis lock")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stop-recorded True" in result.stdout  # a warm stop: the job in hand finishes


@pytest.mark.timeout(60)
def test_a_stop_signal_on_an_idle_worker_inside_an_embedded_command_returns() -> None:
    result = stop_under_lock("idle")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stop-recorded True" in result.stdout or "stop-raised" in result.stdout


def interrupt_self() -> str:
    """A job during which Ctrl-C arrives."""
    os.kill(os.getpid(), signal.SIGINT)
    return "done"


@pytest.fixture
def keep_signal_handlers() -> Iterator[None]:
    """RQ's handlers replace pytest's; put them back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.usefixtures("keep_signal_handlers")
def test_a_stop_during_a_job_lets_it_finish_then_records_when_it_was_asked() -> None:
    connection = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    queue = Queue("stop-test", connection=connection)
    job = queue.enqueue(interrupt_self)
    worker = thread_scheduler_worker(RelayWorker)([queue], connection=connection)
    worker.register_birth()
    worker._install_signal_handlers()
    worker.execute_job(job, queue)
    assert job.get_status(refresh=True) == JobStatus.FINISHED  # a warm stop
    assert worker._stop_requested
    assert worker.shutdown_requested_date is not None  # written after the job, not in the handler


# ---------------------------------------------------------------------------------------------
# The whole command under load, Ctrl-C at random moments

#: Bounds of the load loop: tries, the whole test's time, and one stop's.
TRIES = 8
BUDGET = 150.0
STOP_WAIT = 20.0
POSTERS = 3
POSTS_PER_POSTER = 3000
JSON = {"content-type": "application/json"}


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[TargetServer]:
    with TargetServer() as server:
        (tmp_path / "routes.toml").write_text(ROUTES.format(url=server.url("/ok/sink")))
        yield server


def dev_env(tmp_path: Path) -> dict[str, str]:
    """`relay dev --embedded` in tmp_path on a free port, quiet logs."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "RELAY_", "DEVSTOP_"))
    }
    env.update(
        PORT=str(free_port()),
        RELAY_ROUTES=str(tmp_path / "routes.toml"),
        RELAY_LOG_FORMAT="json",
        RELAY_LOG_LEVEL="warning",
        PYTHONPATH=str(ROOT),
    )
    return env


def flood(url: str, stop: threading.Event) -> None:
    """POST events until told to stop, the receiver goes away, or the bound is reached."""
    for n in range(POSTS_PER_POSTER):
        if stop.is_set():
            return
        try:
            status, _ = post(url, json.dumps({"event": "ping", "n": n}).encode(), JSON)
        except OSError:
            return  # relay dev is stopping
        if status != 202:
            return


def one_stop(tmp_path: Path, sink: TargetServer, rng: random.Random) -> tuple[bool, str]:
    """Start relay dev, load it, Ctrl-C at a random moment: (stopped in time, its output)."""
    dev_run = DevProcess(tmp_path, dev_env(tmp_path), "--embedded")
    stop = threading.Event()
    posters: list[threading.Thread] = []
    try:
        output = dev_run.wait_for("Press Ctrl-C")
        url = re.search(r"(http://127\.0\.0\.1:\d+/hooks/demo/\S+)", output)
        assert url, output
        status, body = post(url.group(1), b'{"event": "first"}', JSON)
        assert status == 202, body
        posters = [
            threading.Thread(target=flood, args=(url.group(1), stop), daemon=True)
            for _ in range(POSTERS)
        ]
        for poster in posters:
            poster.start()
        seen = len(sink.received)
        deadline = time.monotonic() + 30
        while len(sink.received) == seen and time.monotonic() < deadline:
            time.sleep(0.01)  # deliveries flow: the worker is busy from here on
        time.sleep(rng.uniform(0.0, 0.5))
        dev_run.process.send_signal(signal.SIGINT)
        try:
            code = dev_run.process.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            return False, dev_run.output
        dev_run.reader.join(5)
        assert code == 0, dev_run.output
        return True, dev_run.output
    finally:
        stop.set()
        dev_run.kill()
        for poster in posters:
            poster.join(15)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_under_load_always_stops_the_embedded_dev(
    tmp_path: Path, sink: TargetServer
) -> None:
    rng = random.Random(os.environ.get("RELAY_TEST_SEED", "devstop"))
    started = time.monotonic()
    tries, hangs = 0, []
    while tries < TRIES and time.monotonic() - started < BUDGET:
        tries += 1
        stopped, output = one_stop(tmp_path, sink, rng)
        if not stopped:
            hangs.append(output[-2000:])
    assert tries >= 3, "too few tries within the time budget to say anything"
    assert not hangs, f"{len(hangs)} of {tries} Ctrl-C's hung relay dev:\n" + "\n---\n".join(hangs)
    assert len(sink.received) > 0
