"""relay.core.logs.LoopBatchedLogger: one write per event-loop turn, at once off a loop."""

from __future__ import annotations

import asyncio
import io

from relay.core.logs import LoopBatchedLogger


class CountingFile(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes += 1
        return super().write(data)


def test_off_a_loop_each_line_is_written_at_once() -> None:
    out = CountingFile()
    logger = LoopBatchedLogger(out)
    logger.msg(b'{"a":1}')
    assert out.getvalue() == b'{"a":1}\n'
    logger.msg(b'{"a":2}')
    assert out.getvalue() == b'{"a":1}\n{"a":2}\n'
    assert out.writes == 2


async def test_on_a_loop_lines_of_one_turn_are_written_together_in_order() -> None:
    out = CountingFile()
    logger = LoopBatchedLogger(out)
    for n in range(5):
        logger.msg(b"line %d" % n)
    assert out.getvalue() == b""  # still this turn
    await asyncio.sleep(0)
    assert out.getvalue() == b"".join(b"line %d\n" % n for n in range(5))
    assert out.writes == 1


async def test_a_line_off_the_loop_first_writes_what_is_buffered() -> None:
    out = CountingFile()
    logger = LoopBatchedLogger(out)
    logger.msg(b"on the loop")
    await asyncio.to_thread(logger.msg, b"from a thread")
    assert out.getvalue() == b"on the loop\nfrom a thread\n"
    logger.flush()  # the scheduled flush finds nothing left
    assert out.getvalue() == b"on the loop\nfrom a thread\n"
