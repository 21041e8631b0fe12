"""One log pipeline, and no secret in any log.

- The secret grep of the whole session (tests/conftest.py, tests/support/processes.py): what it
  registers, that it finds a leak (raw or JSON-escaped) in any registered log, and that a leak
  fails a pytest session while a clean run passes.
- Real `relay serve` and `relay worker` processes in JSON mode: every output line is a JSON
  object (RQ's and aiohttp's own lines included), and the canonical request and delivery-attempt
  lines carry the issue's fields. In console mode the same lines are readable text, not JSON.
- The event id is bound (structlog contextvars) to every line logged while an attempt is
  decided, including a crashed attempt's.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import structlog
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from relay.config.loading import parse_routes
from relay.core.logs import UtcStamp, configure_logging
from relay.core.states import DeliveryState
from relay.store import keys
from relay.store.records import state_field
from tests.support.fixtures import UseRoutes
from tests.support.processes import (
    Leak,
    RelayProcess,
    find_leaks,
    post,
    registered_logs,
    relay_env,
    relay_processes,
    secrets_of_env,
    wait_until,
)
from tests.support.seed_events import make_event, routes_toml, store_events
from tests.support.targets import TargetServer
from worker import jobs
from worker import runtime as runtime_module

ROOT = Path(__file__).resolve().parent.parent

TOKEN = "logtest-token-" + "5e" * 12
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
API_KEY = "logtest-api-key-" + "a7" * 12
STATUS_TOKEN = "logtest-status-" + "c3" * 12
SECRETS = {
    "LOGTEST_SHOP_TOKEN": TOKEN,
    "LOGTEST_WHSEC": WHSEC,
    "LOGTEST_API_KEY": API_KEY,
    "RELAY_STATUS_TOKEN": STATUS_TOKEN,
}
FAST = '{ attempts = 3, first = "100ms", max = "200ms" }'


# ---------------------------------------------------------------------------------------------
# The secret grep
# ---------------------------------------------------------------------------------------------


def test_secrets_of_env_takes_secret_names_whsec_values_and_routes_secrets(tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(
        '[sources.shop]\nkind = "header"\ntoken_env = "ODD_NAME_FOR_A_TOKEN_VAR"\n\n'
        '[targets.crm]\nurl = "http://127.0.0.1:9/x"\n'
        'headers = { "authorization" = "${CRM_AUTH}" }\n\n'
        '[[routes]]\nsource = "shop"\nevents = ["*"]\ntargets = ["crm"]\n'
    )
    env = {
        "RELAY_ROUTES": str(routes),
        "FELLOW_TOKEN": "f" * 20,
        "LEARN_SECRET": "s" * 20,
        "CRM_WHSEC": WHSEC,
        "PLAIN": WHSEC.replace("MfK", "Xyz"),  # a whsec_ value whatever its name
        "TARGET_API_KEY": "k" * 20,
        "RELAY_STATUS_TOKEN": STATUS_TOKEN,
        "ODD_NAME_FOR_A_TOKEN_VAR": "t" * 20,  # found through routes.toml (token_env)
        "CRM_AUTH": "Bearer " + "b" * 20,  # found through routes.toml (a header from the env)
        "SHORT_TOKEN": "1234567",  # too short to tell from ordinary text
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "HOME": "/root",
    }
    found = secrets_of_env(env)
    assert found == {
        "FELLOW_TOKEN": "f" * 20,
        "LEARN_SECRET": "s" * 20,
        "CRM_WHSEC": WHSEC,
        "CRM_WHSEC (key after whsec_)": WHSEC.removeprefix("whsec_"),
        "PLAIN": env["PLAIN"],
        "PLAIN (key after whsec_)": env["PLAIN"].removeprefix("whsec_"),
        "TARGET_API_KEY": "k" * 20,
        "RELAY_STATUS_TOKEN": STATUS_TOKEN,
        "ODD_NAME_FOR_A_TOKEN_VAR": "t" * 20,
        "CRM_AUTH": "Bearer " + "b" * 20,
    }


def test_a_broken_routes_file_still_registers_the_env_secrets(tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text("[sources.shop\n")  # a test's deliberately broken file
    found = secrets_of_env({"RELAY_ROUTES": str(routes), "SHOP_TOKEN": TOKEN})
    assert found == {"SHOP_TOKEN": TOKEN}


def test_find_leaks_names_the_log_the_secret_and_the_line_never_the_value(tmp_path: Path) -> None:
    serve, worker, clean = (tmp_path / f"{n}.log" for n in ("serve", "worker", "clean"))
    request_line = orjson.dumps({"event": "request", "path": f"/hooks/shop/{TOKEN}"})
    serve.write_bytes(b'{"event": "starting"}\n' + request_line + b"\n")
    # JSON escapes a quote and a backslash: the grep looks for the escaped form too.
    odd = 'with"quote\\and-backslash-123'
    worker.write_bytes(b'{"event": "x"}\n{"event": "y"}\n' + orjson.dumps({"h": odd}) + b"\n")
    clean.write_text('{"event": "request", "status": 202}\n')
    registered = {
        serve: {"SHOP_TOKEN": TOKEN},
        worker: {"ODD_SECRET": odd},
        clean: {"CLEAN_TOKEN": "never-written-anywhere"},
    }
    leaks = find_leaks(registered)
    assert sorted(leaks, key=lambda leak: leak.log) == [
        Leak(serve, "SHOP_TOKEN", 2),
        Leak(worker, "ODD_SECRET", 3),
    ]
    # Every log is checked for every process's secrets, not only its own.
    clean.write_text(f"a line with {TOKEN} from another process's config\n")
    assert Leak(clean, "SHOP_TOKEN", 1) in find_leaks(registered)
    for leak in leaks:
        assert TOKEN not in leak.describe()
        assert odd not in leak.describe()
        assert leak.secret_name in leak.describe()
        assert str(leak.log) in leak.describe()
    # A log already deleted is skipped, not an error.
    assert find_leaks({tmp_path / "gone.log": {"SHOP_TOKEN": TOKEN}}) == []


def test_every_relay_process_registers_its_log_and_secrets(tmp_path: Path) -> None:
    env = {**os.environ, **SECRETS, "RELAY_ROUTES": str(tmp_path / "missing.toml")}
    proc = RelayProcess(["--help"], env, tmp_path, "help")
    try:
        proc.process.wait(30)
    finally:
        proc.cleanup()
    assert registered_logs()[proc.log_path] == secrets_of_env(env)
    assert registered_logs()[proc.log_path]["LOGTEST_SHOP_TOKEN"] == TOKEN


INNER_TEST = """
from pathlib import Path

from tests.support.processes import register_log

def test_writes_a_log(tmp_path_factory):
    log = Path({log!r})
    log.write_text({content!r})
    register_log(log, {{"FELLOW_TOKEN": {secret!r}}})
"""


def run_inner_session(
    tmp_path: Path, content: str, *options: str
) -> subprocess.CompletedProcess[str]:
    """A pytest session with the suite's session hooks; its one test writes and registers a log.

    `options` go to that pytest: `-n 2` runs it in pytest-xdist workers, as `make test` does.
    """
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "pytest.ini").write_text("[pytest]\n")
    (inner / "conftest.py").write_text(
        "from tests.conftest import (  # noqa: F401\n"
        "    pytest_sessionfinish, pytest_terminal_summary, pytest_testnodedown\n"
        ")\n"
    )
    log = tmp_path / "serve-inner.log"
    (inner / "test_inner.py").write_text(
        INNER_TEST.format(log=str(log), content=content, secret=TOKEN)
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options, str(inner)],
        cwd=inner,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(60)
def test_a_leaking_log_fails_the_session_naming_file_and_secret(tmp_path: Path) -> None:
    done = run_inner_session(tmp_path, f'{{"event": "request", "token": "{TOKEN}"}}\n')
    output = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, output
    assert "1 passed" in output  # the test itself passed: the grep failed the session
    assert "secrets found in relay logs" in output
    assert "serve-inner.log:1: secret FELLOW_TOKEN appears in this log" in output
    assert TOKEN not in output


@pytest.mark.timeout(120)  # three pytest processes (a controller, two workers) start
def test_a_leak_in_an_xdist_worker_fails_the_session(tmp_path: Path) -> None:
    # The worker that ran the test hands its registered log to the controller, which greps it.
    done = run_inner_session(tmp_path, f'{{"token": "{TOKEN}"}}\n', "-n", "2")
    output = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, output
    assert "1 passed" in output
    assert "serve-inner.log:1: secret FELLOW_TOKEN appears in this log" in output
    assert TOKEN not in output


@pytest.mark.timeout(60)
def test_a_clean_log_passes_the_session(tmp_path: Path) -> None:
    done = run_inner_session(tmp_path, '{"event": "request", "status": 202}\n')
    output = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.OK, output
    assert "secret grep: 1 relay log(s) checked for 1 secret(s): none found" in output


# ---------------------------------------------------------------------------------------------
# One pipeline: real processes
# ---------------------------------------------------------------------------------------------


def write_routes(tmp_path: Path, targets: TargetServer) -> Path:
    routes = tmp_path / "routes.toml"
    routes.write_text(
        f'[sources.shop]\nkind = "header"\ntoken_env = "LOGTEST_SHOP_TOKEN"\n\n'
        f'[targets.ok]\nurl = "{targets.url("/ok/ok")}"\nsigning_secret_env = "LOGTEST_WHSEC"\n'
        'headers = { "x-api-key" = "${LOGTEST_API_KEY}" }\n\n'
        f'[targets.flaky]\nurl = "{targets.url("/fail/flaky/1")}"\nretry = {FAST}\n\n'
        '[[routes]]\nsource = "shop"\nevents = ["*"]\ntargets = ["ok", "flaky"]\n'
    )
    return routes


def send_malformed_request(base: str) -> None:
    """A request line aiohttp's parser refuses: aiohttp itself logs it (logger aiohttp.server)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /hooks/shop/" + TOKEN.encode() + b" HTTP/1.1\r\nbad header\r\n\r\n")
        sock.recv(4096)


def run_stack(
    tmp_path: Path, redis_url: str, targets: TargetServer, fmt: str
) -> tuple[list[str], str, str]:
    """Serve and work in `fmt`: 3 events to two targets (one fails once), then SIGTERM both.

    Returns the event ids and the whole output of the receiver and of the worker.
    """
    env = relay_env(redis_url, write_routes(tmp_path, targets), **SECRETS, RELAY_LOG_FORMAT=fmt)
    conn = redis.Redis.from_url(redis_url)
    with relay_processes(tmp_path, env) as procs:
        serve, base = procs.serve()
        worker = procs.worker()
        ids = []
        for n in range(3):
            status, answer = post(
                f"{base}/hooks/shop/{TOKEN}",
                b'{"n": %d}' % n,
                {"content-type": "application/json", "x-event-type": f"order.paid.{n}"},
            )
            assert status == 202, answer
            ids.append(str(orjson.loads(answer)["id"]))
        send_malformed_request(base)

        def delivered() -> bool:
            fields = [state_field("ok"), state_field("flaky")]
            states = [conn.hmget(keys.event_key(i), fields) for i in ids]
            return all(s == [DeliveryState.DELIVERED.encode()] * 2 for s in states)

        assert wait_until(delivered, 30, 0.1), worker.output()
        assert serve.terminate() == 0
        assert worker.terminate() == 0
        outputs = serve.output(), worker.output()
    conn.close()
    return ids, *outputs


def json_lines(output: str) -> list[dict[str, Any]]:
    """Every line of a process's output as a JSON object (the assertion names a stray line)."""
    records = []
    for line in output.splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(record, dict), line
        records.append(record)
    return records


def test_json_mode_every_line_is_json_and_canonical_lines_carry_the_fields(
    tmp_path: Path, redis_url: str, targets: TargetServer
) -> None:
    ids, serve_out, worker_out = run_stack(tmp_path, redis_url, targets, "json")
    for secret in SECRETS.values():
        assert secret not in serve_out + worker_out

    serve_lines, worker_lines = json_lines(serve_out), json_lines(worker_out)
    for record in serve_lines + worker_lines:
        assert {"event", "level", "timestamp"} <= set(record), record
    # The stdlib loggers go through the same renderer: aiohttp's parser error, RQ's own lines.
    assert any(r.get("logger") == "aiohttp.server" for r in serve_lines), serve_lines
    rq_lines = [r for r in worker_lines if str(r.get("logger", "")).startswith("rq.")]
    assert any("started with PID" in r["event"] for r in rq_lines), worker_lines

    requests = [r for r in serve_lines if r["event"] == "request" and r["status"] == 202]
    assert [r["event_id"] for r in requests] == ids
    for n, record in enumerate(requests):
        assert record["source"] == "shop"
        assert record["type"] == f"order.paid.{n}"
        assert record["method"] == "POST"
        assert isinstance(record["duration_ms"], float)

    attempts = [r for r in worker_lines if r["event"] == "delivery attempt"]
    by_key = {(r["event_id"], r["target"], r["attempt"]): r for r in attempts}
    assert set(by_key) == {
        *((i, "ok", 1) for i in ids),
        *((i, "flaky", 1) for i in ids),
        *((i, "flaky", 2) for i in ids),
    }
    for (event_id, target, attempt), record in by_key.items():
        n = ids.index(event_id)
        assert record["source"] == "shop"
        assert record["type"] == f"order.paid.{n}"
        assert record["status"] == (500 if (target, attempt) == ("flaky", 1) else 200)
        assert record["outcome"] == ("retry" if record["status"] == 500 else "delivered")
        assert isinstance(record["duration_ms"], float)


ANSI_ESCAPE = "\x1b["


def test_console_mode_renders_readable_lines_not_json(
    tmp_path: Path, redis_url: str, targets: TargetServer
) -> None:
    ids, serve_out, worker_out = run_stack(tmp_path, redis_url, targets, "console")
    for secret in SECRETS.values():
        assert secret not in serve_out + worker_out
    lines = [line for line in (serve_out + worker_out).splitlines() if line.strip()]
    assert lines
    for line in lines:
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(line)
    # Not a terminal: no colour codes in the file, plain `key=value` pairs.
    assert ANSI_ESCAPE not in serve_out + worker_out
    request_lines = [line for line in serve_out.splitlines() if " request " in line]
    for event_id in ids:
        [line] = [line for line in request_lines if f"event_id={event_id}" in line]
        assert "status=202" in line
        assert "source=shop" in line
    attempt_lines = [line for line in worker_out.splitlines() if "delivery attempt" in line]
    assert any(f"event_id={ids[0]}" in line and "target=ok" in line for line in attempt_lines)
    assert any("started with PID" in line for line in worker_out.splitlines())


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put structlog's configuration and the root logger back as they were."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    root.handlers[:], root.level = handlers, level


@pytest.mark.usefixtures("restore_logging")
def test_console_renderer_colours_only_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal:
        """stderr that says it is a terminal."""

        def __init__(self) -> None:
            self.written: list[str] = []

        def isatty(self) -> bool:
            return True

        def write(self, text: str) -> int:
            self.written.append(text)
            return len(text)

        def flush(self) -> None:
            pass

    configure_logging("info", "console")
    structlog.get_logger("t").info("plain", status=202)
    assert ANSI_ESCAPE not in capsys.readouterr().err
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    configure_logging("info", "console")
    structlog.get_logger("t").info("coloured", status=202)
    assert ANSI_ESCAPE in "".join(terminal.written)


# ---------------------------------------------------------------------------------------------
# The event id on every line of an attempt
# ---------------------------------------------------------------------------------------------


def test_every_line_of_an_attempt_carries_its_event_id(
    redis_client: redis.Redis,
    targets: TargetServer,
    use_routes: UseRoutes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    toml = routes_toml(
        {
            "ok": {"url": targets.url("/ok/ok")},
            "gone": {"url": targets.url("/gone/gone"), "pause_on_gone": True},
            "broken": {"url": targets.url("/ok/broken")},
        }
    )
    use_routes(parse_routes(toml, "routes.toml", {}))
    real_post = runtime_module.Runtime.post

    async def post_or_crash(self: Any, request: Any, limit: float) -> Any:
        if "/broken" in request.url:
            raise RuntimeError("a bug in the attempt")
        return await real_post(self, request, limit)

    monkeypatch.setattr(runtime_module.Runtime, "post", post_or_crash)
    events = [make_event(["ok", "gone", "broken"]) for _ in range(2)]
    store_events(redis_client, events, enqueue=False)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        jobs.deliver_due()
    ids = {e.id for e in events}
    seen: dict[tuple[str, str], list[str]] = {}
    for entry in logs:
        assert entry.get("event_id") in ids, entry
        assert entry["source"] == "shop", entry
        seen.setdefault((entry["event_id"], entry["target"]), []).append(entry["event"])
    for event in events:
        assert seen[(event.id, "ok")] == ["delivery attempt"]
        # The crash line carries the event id only through the bound context.
        assert seen[(event.id, "broken")] == ["delivery attempt crashed", "delivery attempt"]
        assert "target answered 410 Gone" in seen[(event.id, "gone")]
    crashed = [e for e in logs if e["event"] == "delivery attempt crashed"]
    assert {(e["target"], e["attempt"]) for e in crashed} == {("broken", 1)}
    assert structlog.contextvars.get_contextvars() == {}  # nothing left bound after the job


@given(now=st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_timestamps_are_iso_utc_with_microseconds(now: float) -> None:
    stamp = UtcStamp()
    text = stamp(now)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text), text
    expected = datetime.datetime.fromtimestamp(int(now), datetime.UTC)
    assert text[:19] == expected.strftime("%Y-%m-%dT%H:%M:%S")
    assert abs(int(text[20:26]) - (now - int(now)) * 1e6) <= 1
    assert text[20:26] == f"{int((now - int(now)) * 1_000_000):06d}"  # truncated, as before
    assert stamp(now) == text  # the cached second gives the same answer


def test_the_cached_second_moves_on() -> None:
    stamp = UtcStamp()
    assert stamp(59.5) == "1970-01-01T00:00:59.500000Z"
    assert stamp(60.25) == "1970-01-01T00:01:00.250000Z"
    assert stamp(59.0) == "1970-01-01T00:00:59.000000Z"
