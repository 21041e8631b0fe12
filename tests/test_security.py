"""The security review, as tests.

- Token, signature and status-token checks use hmac.compare_digest (recorded, not timed).
- A routes.toml naming a missing variable: `relay serve` and `relay worker` refuse to start.
- Secrets never appear in logs (serve and worker, a full run), error bodies, or `relay check`.
- The worker never follows a redirect, and no part of a request chooses the URL it calls.
- Bodies over max_body get 413; over-long or too many headers get 400, never a 5xx.
- /status and /status.json need RELAY_STATUS_TOKEN when it is set.
"""

from __future__ import annotations

import hmac
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from aiohttp.test_utils import make_mocked_request

from relay.core.secrets import Secret
from relay.core.signatures import ms_signature, verify_ms_signature, verify_standard
from relay.ops.status_page import check_token
from relay.store import keys
from relay.store.deliveries import attempt_records
from tests.support.processes import relay_env, relay_processes, wait_until
from tests.support.raw_http import exchange, http_request
from tests.support.redis_server import free_port
from tests.support.targets import TargetServer

TOKEN = "path-token-" + "5e" * 16
ASP_SECRET = "aspnet-secret-" + "7a" * 20
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STATUS_TOKEN = "status-token-" + "9c" * 16
API_KEY = "target-api-key-" + "1f" * 16
SECRETS = {
    "SEC_TOKEN": TOKEN,
    "SEC_ASP_SECRET": ASP_SECRET,
    "SEC_WHSEC": WHSEC,
    "SEC_API_KEY": API_KEY,
}
#: What must never be printed: every secret value, and the key inside the whsec_ secret.
NEVER_SHOWN = [TOKEN, ASP_SECRET, WHSEC, WHSEC.removeprefix("whsec_"), STATUS_TOKEN, API_KEY]


def routes_toml(sink: str, redirect: str) -> str:
    return f"""
[sources.shop]
kind = "json"
token_env = "SEC_TOKEN"
max_body = "2KiB"

[sources.lms]
kind = "aspnet"
secret_env = "SEC_ASP_SECRET"

[targets.sink]
url = "{sink}"
signing_secret_env = "SEC_WHSEC"
headers = {{ "x-api-key" = "${{SEC_API_KEY}}" }}
retry = {{ attempts = 2, first = "200ms", max = "500ms" }}

[targets.redirecting]
url = "{redirect}"
retry = {{ attempts = 2, first = "200ms", max = "500ms" }}

[[routes]]
source = "shop"
events = ["order.*"]
targets = ["sink"]

[[routes]]
source = "shop"
events = ["moved.*"]
targets = ["redirecting"]

[[routes]]
source = "lms"
targets = ["sink"]
"""


# ---------------------------------------------------------------------------------------------
# Constant-time comparisons, by recording hmac.compare_digest calls.


@pytest.fixture
def compare_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    """Every hmac.compare_digest call while the test runs, with its arguments."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    return calls


def test_path_token_check_is_constant_time(compare_calls: list[tuple[bytes, bytes]]) -> None:
    secret = Secret(TOKEN, name="SEC_TOKEN")
    assert not secret.matches("guess")
    assert secret.matches(TOKEN)
    assert compare_calls == [(TOKEN.encode(), b"guess"), (TOKEN.encode(), TOKEN.encode())]


def test_ms_signature_check_is_constant_time(compare_calls: list[tuple[bytes, bytes]]) -> None:
    body = b'{"Notifications": [{"Action": "a"}]}'
    verify_ms_signature(ASP_SECRET, body, ms_signature(ASP_SECRET, body))
    with pytest.raises(Exception, match="does not match"):
        verify_ms_signature(ASP_SECRET, body, "sha256=" + "0" * 64)
    assert len(compare_calls) == 2
    assert compare_calls[1][1] == bytes(32)


def test_standard_webhooks_check_is_constant_time(
    compare_calls: list[tuple[bytes, bytes]],
) -> None:
    assert not verify_standard(b"k" * 24, "msg_1", 1, b"{}", "v1,AAAA v1,BBBB")
    assert [b for _, b in compare_calls] == [b"v1,AAAA", b"v1,BBBB"]  # every candidate compared


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {STATUS_TOKEN}"}],
)
def test_status_token_check_is_constant_time(
    compare_calls: list[tuple[bytes, bytes]], headers: dict[str, str]
) -> None:
    refusal, _ = check_token(make_mocked_request("GET", "/status", headers=headers), STATUS_TOKEN)
    given = headers["Authorization"].removeprefix("Bearer ")
    assert compare_calls == [(given.encode(), STATUS_TOKEN.encode())]
    assert (refusal is None) == (given == STATUS_TOKEN)


def test_no_secret_is_compared_with_equality() -> None:
    """Code inspection: a revealed secret or token never meets `==` or `!=`."""
    root = Path(__file__).resolve().parent.parent
    offenders = []
    for path in [*root.glob("relay/*.py"), *root.glob("worker/*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if ".reveal()" in code and ("==" in code or "!=" in code):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
            if "status_token" in code and ("==" in code or "!=" in code):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert offenders == []


# ---------------------------------------------------------------------------------------------
# A missing secret variable refuses to start.


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_missing_secret_variable_refuses_to_start(
    tmp_path: Path, redis_url: str, command: str
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(routes_toml("http://127.0.0.1:9/a", "http://127.0.0.1:9/b"))
    env = relay_env(redis_url, routes, **{k: v for k, v in SECRETS.items() if k != "SEC_TOKEN"})
    port = free_port()
    env["PORT"] = str(port)
    done = subprocess.run(
        [sys.executable, "-m", "relay", command],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "SEC_TOKEN" in done.stderr
    assert "is not set" in done.stderr
    for value in NEVER_SHOWN:
        assert value not in done.stderr + done.stdout
    if command == "worker":
        assert redis.Redis.from_url(redis_url).keys("rq:worker:*") == []


# ---------------------------------------------------------------------------------------------
# A full run: serve and worker, every kind of request, then the logs are searched for secrets.


class _Redirector(BaseHTTPRequestHandler):
    """Answers every POST with 302 to `location` (set per server)."""

    location = ""
    hits: list[str]

    def do_POST(self) -> None:
        self.hits.append(self.path)
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(302)
        self.send_header("Location", self.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def redirector(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[str], type]]:
    """A loopback server answering 302; its Location is set by the test."""
    handler = type("Handler", (_Redirector,), {"hits": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/moved", handler.hits, handler
    finally:
        server.shutdown()
        server.server_close()


def test_full_run_keeps_secrets_out_of_logs_answers_and_urls(
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    redirector: tuple[str, list[str], type],
) -> None:
    redirect_url, redirect_hits, handler = redirector
    with TargetServer() as sink, TargetServer() as elsewhere:
        handler.location = elsewhere.url("/ok/stolen")  # type: ignore[attr-defined]
        routes = tmp_path / "routes.toml"
        routes.write_text(routes_toml(sink.url("/ok/sink"), redirect_url))
        env = relay_env(redis_url, routes, **SECRETS, RELAY_STATUS_TOKEN=STATUS_TOKEN)
        with relay_processes(tmp_path, env) as procs:
            serve, base = procs.serve()
            worker = procs.worker()
            port = int(base.rsplit(":", 1)[1])
            json_type = [("Content-Type", "application/json")]
            answers = []

            def send(raw: bytes) -> int:
                response = exchange(port, raw)
                answers.append((raw, response))
                return response.status

            # Request fields that try to choose where the event goes.
            steer = orjson.dumps(
                {
                    "event": "order.paid",
                    "url": elsewhere.url("/ok/body-url"),
                    "target": elsewhere.url("/ok/body-target"),
                    "callback_url": elsewhere.url("/ok/callback"),
                }
            )
            steering_headers = [
                *json_type,
                ("X-Relay-Target", elsewhere.url("/ok/header")),
                ("X-Forwarded-Host", f"127.0.0.1:{elsewhere.port}"),
                ("Forwarded", f"host=127.0.0.1:{elsewhere.port}"),
                ("X-Original-URL", "/ok/original"),
                ("Location", elsewhere.url("/ok/location")),
            ]
            query = f"?url={elsewhere.url('/ok/query')}&target=sink"
            raw = http_request("POST", f"/hooks/shop/{TOKEN}{query}", steering_headers, steer)
            raw = raw.replace(b"Host: 127.0.0.1", f"Host: 127.0.0.1:{elsewhere.port}".encode())
            assert send(raw) == 202
            # A target that redirects to another server.
            moved = orjson.dumps({"event": "moved.away"})
            assert send(http_request("POST", f"/hooks/shop/{TOKEN}", json_type, moved)) == 202
            # Signed and wrongly signed ASP.NET bodies, wrong and missing tokens.
            asp = b'{"Id": "1", "Notifications": [{"Action": "CourseCompleted"}]}'
            signed = [*json_type, ("ms-signature", ms_signature(ASP_SECRET, asp))]
            assert send(http_request("POST", "/hooks/lms", signed, asp)) == 202
            wrong_sig = [*json_type, ("ms-signature", ms_signature(TOKEN, asp))]
            assert send(http_request("POST", "/hooks/lms", wrong_sig, asp)) == 401
            assert send(http_request("POST", f"/hooks/shop/{TOKEN[:-1]}", json_type, moved)) == 401
            assert send(http_request("POST", "/hooks/shop", json_type, moved)) == 401
            # Bounds: a body over max_body, an over-long header, too many headers.
            big = b'{"event": "order.big", "x": "' + b"x" * 3000 + b'"}'
            assert send(http_request("POST", f"/hooks/shop/{TOKEN}", json_type, big)) == 413
            long_header = [*json_type, ("X-Long", "v" * 9000)]
            assert send(http_request("POST", f"/hooks/shop/{TOKEN}", long_header, moved)) == 400
            many = [*json_type, *((f"X-H{i}", "1") for i in range(200))]
            assert send(http_request("POST", f"/hooks/shop/{TOKEN}", many, moved)) == 400
            # An over-long request line holding the token (aiohttp quotes it in its error).
            raw = f"POST /hooks/shop/{TOKEN}?{'q' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            assert send(raw) == 400
            # The status page and its JSON need the token: header or query.
            for path in ("/status", "/status.json"):
                assert send(http_request("GET", path)) == 401
                assert send(http_request("GET", path, [("Authorization", "Bearer nope")])) == 401
                assert send(http_request("GET", f"{path}?token={STATUS_TOKEN[:-1]}")) == 401
                bearer = [("Authorization", f"Bearer {STATUS_TOKEN}")]
                assert send(http_request("GET", path, bearer)) == 200
            assert send(http_request("GET", f"/status.json?token={STATUS_TOKEN}")) == 200

            # Deliveries: the sink gets the two routed events, the redirect is never followed.
            sink.wait_for(lambda got: len(got) >= 2, timeout=30)

            def redirect_dead() -> bool:
                return bool(redis_client.zcard(keys.DEAD))

            assert wait_until(redirect_dead, 30, 0.1)
            logs = serve.output() + worker.output()

    # No request field chose a URL: exactly the routes.toml URLs were called.
    assert sorted(r.path for r in sink.received) == ["/ok/sink", "/ok/sink"]
    assert elsewhere.received == []
    assert redirect_hits == ["/moved", "/moved"]  # two attempts, both refused as failures
    dead = redis_client.zrange(keys.DEAD, 0, -1)
    assert len(dead) == 1
    event_id = dead[0].decode().split(":")[0] if b":" in dead[0] else dead[0].decode()
    records = [r for r in attempt_records(redis_client, event_id) if r["target"] == "redirecting"]
    assert [r["status"] for r in records] == [302, 302]
    assert records[-1]["outcome"] != "delivered"
    # The target's extra header carries its secret to the target, and nowhere else.
    assert {r.headers["x-api-key"] for r in sink.received} == {API_KEY}
    # Secrets appear in no log line and no answer.
    for value in NEVER_SHOWN:
        assert value not in logs, f"a secret is in the logs: {value[:6]}..."
        for raw, answer in answers:
            if value.encode() in raw:
                continue  # aiohttp's 400 quotes the sender's own bytes back to it: no leak
            assert value.encode() not in answer.body, (answer.status, value[:6])
            assert all(value not in v for _, v in answer.headers)
    assert all(answer.status < 500 for _, answer in answers)


def test_relay_check_never_prints_secrets(tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(routes_toml("http://127.0.0.1:9/a", "http://127.0.0.1:9/b"))
    env = relay_env("redis://127.0.0.1:9/0", routes, **SECRETS)
    outputs = []
    for args in (
        [str(routes)],
        [str(routes), "--json"],
        [str(routes), "--source", "lms", "--body", "-"],
        [str(routes), "--source", "shop", "--body", "-", "--json"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "relay", "check", *args],
            env=env,
            cwd=tmp_path,
            input='{"event": "order.paid", "Notifications": [{"Action": "x"}]}',
            capture_output=True,
            text=True,
            timeout=60,
        )
        outputs.append(done.stdout + done.stderr)
    # A broken secret (too short) is reported by variable name, not by value.
    short = {**SECRETS, "SEC_TOKEN": "short-9c1f"}
    done = subprocess.run(
        [sys.executable, "-m", "relay", "check", str(routes)],
        env=relay_env("redis://127.0.0.1:9/0", routes, **short),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "SEC_TOKEN" in done.stdout + done.stderr
    outputs.append(done.stdout + done.stderr)
    assert "short-9c1f" not in outputs[-1]
    for output in outputs:
        for value in NEVER_SHOWN:
            assert value not in output, f"relay check printed a secret: {value[:6]}..."
