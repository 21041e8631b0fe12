"""worker.process: an RQ work loop that ends by itself is replaced in the same process."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import redis
from structlog.testing import capture_logs

from relay.config.settings import Settings
from worker import process


class FakeWorker:
    """What `_work` uses of a RelayWorker: `work`, `stop_was_requested`, `connection`."""

    made: ClassVar[list[FakeWorker]] = []

    def __init__(self, stops: bool, raises: BaseException | None = None) -> None:
        self.connection = object()
        self.retention: float | None = None
        self.stops = stops
        self.stop_was_requested = False
        self.calls: list[dict[str, Any]] = []
        self.raises = raises
        FakeWorker.made.append(self)

    def work(self, **kwargs: Any) -> bool:
        self.calls.append(kwargs)
        self.stop_was_requested = self.stops  # a SIGTERM during its loop, or not
        if self.raises is not None:
            raise self.raises
        return True


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> list[FakeWorker]:
    FakeWorker.made = []
    # The second RQ worker made is stopped by a signal; a third must never be made.
    monkeypatch.setattr(process, "relay_worker", lambda conn, interval: FakeWorker(stops=True))
    monkeypatch.setattr(process, "RESTART_FIRST", 0.01)
    return FakeWorker.made


def test_a_loop_that_ends_on_its_own_is_replaced(fakes: list[FakeWorker]) -> None:
    first = FakeWorker(stops=False)  # RQ quit its loop: a Redis error outside its dequeue
    settings = Settings(retention=60.0)
    with capture_logs() as logs:
        process._work(first, settings, maintenance_interval=10, burst=False)  # type: ignore[arg-type]
    assert [len(w.calls) for w in fakes] == [1, 1]
    assert fakes[1].retention == 60.0
    assert any(e["event"].startswith("rq work loop ended") for e in logs)


def test_a_stop_or_a_burst_ends_the_process_loop(fakes: list[FakeWorker]) -> None:
    stopped = FakeWorker(stops=True)
    process._work(stopped, Settings(), maintenance_interval=10, burst=False)  # type: ignore[arg-type]
    burst = FakeWorker(stops=False)
    process._work(burst, Settings(), maintenance_interval=10, burst=True)  # type: ignore[arg-type]
    assert [len(w.calls) for w in fakes] == [1, 1]  # nothing replaced either of them


def test_an_rq_teardown_that_meets_the_outage_is_replaced_too(fakes: list[FakeWorker]) -> None:
    # RQ's loop ended on a Redis error, then its teardown raised the same error out of work().
    first = FakeWorker(stops=False, raises=redis.ConnectionError("Error 111 connecting"))
    with capture_logs() as logs:
        process._work(first, Settings(), maintenance_interval=10, burst=False)  # type: ignore[arg-type]
    assert [len(w.calls) for w in fakes] == [1, 1]
    [ended] = [e for e in logs if e["event"].startswith("rq work loop ended")]
    assert "Error 111" in ended["error"]
