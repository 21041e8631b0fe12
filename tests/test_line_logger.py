"""relay.core.logs.LineLogger: the same line as a bound structlog logger's, whatever the set-up."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from relay.core.logs import ContextBinding, LineLogger, configure_logging

#: The one field whose value differs between two lines logged one after the other.
TIMESTAMP = re.compile(rb'"timestamp":"[^"]*"|\d{4}-\d\d-\d\dT[\d:.]+Z|\d{4}-\d\d-\d\d [\d:]+')

FIELDS = st.dictionaries(
    st.text(alphabet="abcdef_", min_size=1, max_size=8).filter(lambda k: k != "event"),
    st.one_of(
        st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.text(), st.booleans()
    ),
    max_size=6,
)


Stderr = pytest.CaptureFixture[bytes]


@pytest.fixture
def stderr(capsysbinary: Stderr) -> Iterator[Stderr]:
    """What is written to sys.stderr; structlog's and the root logger's set-up put back after."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield capsysbinary
    structlog.configure(**saved)
    structlog.contextvars.clear_contextvars()
    root.handlers[:], root.level = handlers, level


def both(stderr: Stderr, fields: dict[str, Any]) -> tuple[bytes, bytes]:
    """(bound logger's output, LineLogger's) for one line of `fields`, timestamps blanked."""
    bound = structlog.get_logger("relay.test").bind()
    line = LineLogger("relay.test")
    stderr.readouterr()
    bound.info("request", **fields)
    expected = stderr.readouterr().err
    line.info("request", dict(fields))
    got = stderr.readouterr().err
    return TIMESTAMP.sub(b"T", expected), TIMESTAMP.sub(b"T", got)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50)
@given(FIELDS)
@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_line_is_the_bound_loggers_byte_for_byte(
    stderr: Stderr, fmt: str, fields: dict[str, Any]
) -> None:
    configure_logging("info", fmt)
    structlog.contextvars.bind_contextvars(event_id="evt_1", status="from the context")
    expected, got = both(stderr, fields)
    assert expected.count(b"request") >= 1
    assert got == expected


def test_below_the_level_nothing_is_written(stderr: Stderr) -> None:
    configure_logging("warning", "json")
    assert both(stderr, {"status": 202}) == (b"", b"")


def test_capture_logs_sees_the_line(stderr: Stderr) -> None:
    configure_logging("info", "json")
    line = LineLogger("relay.test")  # made before the capture, as the receiver's is
    with capture_logs() as logs:
        line.info("request", {"status": 202, "source": "shop"})
    assert logs == [{"status": 202, "source": "shop", "event": "request", "log_level": "info"}]
    assert stderr.readouterr().err == b""


def test_a_context_binding_binds_as_bind_contextvars_does() -> None:
    bind = ContextBinding("event_id")
    structlog.contextvars.clear_contextvars()
    try:
        for value in ("evt_1", "evt_2"):  # the first finds structlog's variable, then sets it
            bind(value)
            assert structlog.contextvars.get_contextvars() == {"event_id": value}
        structlog.contextvars.bind_contextvars(event_id="evt_3")
        assert structlog.contextvars.get_contextvars() == {"event_id": "evt_3"}
        bind("evt_4")
        structlog.contextvars.bind_contextvars(other=1)
        assert structlog.contextvars.get_contextvars() == {"event_id": "evt_4", "other": 1}
        structlog.contextvars.clear_contextvars()
        assert structlog.contextvars.get_contextvars() == {}
        bind("evt_5")
        assert structlog.contextvars.get_contextvars() == {"event_id": "evt_5"}
    finally:
        structlog.contextvars.clear_contextvars()
