"""Elucidat signing (known answers, properties) and `relay subscribe` against a loopback Elucidat.

The fake Elucidat below verifies requests with its own re-implementation of PROVIDERS.md's
scheme (its own percent-encoder, base string and HMAC), never with relay.ops.providers.elucidat,
so a test passing means the client and an independent reading of the spec agree.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from relay.cli import main as cli
from relay.cli import subscribe as subscribe_cli
from relay.core.secrets import Secret
from relay.ops.providers import elucidat
from tests.support.redis_server import free_port

PUBLIC = "pub-0123456789abcdef"
# Characters that rawurlencode changes, so a client that forgets to encode the key fails.
PRIVATE = "priv/s3cret+key&with=odd chars~"
CALLBACK = "https://relay.example.com/hooks/elucidat/tok-Sup3rSecretPathToken"
TOKEN = "tok-Sup3rSecretPathToken"
ROOT = Path(__file__).resolve().parent.parent

KNOWN_BASE = (
    "GET&http://api.elucidat.com/v2/account&oauth_consumer_key=my-consumer-key"
    "&oauth_nonce=my-nonce&oauth_timestamp=1434557774"
)
KNOWN_SIGNATURE = "MU0g6X5mJGji0ceqi6OwPtBhF80="


# ---------------------------------------------------------------------------------------------
# An independent reading of PROVIDERS.md, for the fake server

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


def php_rawurlencode(text: str) -> str:
    """PHP's rawurlencode written out byte by byte (upper-case hex, RFC 3986 unreserved bare)."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode("utf-8"))


def expected_signature(secret: str, method: str, url: str, params: dict[str, str]) -> str:
    joined = "&".join(
        f"{php_rawurlencode(k)}={php_rawurlencode(params[k])}" for k in sorted(params)
    )
    base = f"{method}&{url}&{joined}"
    key = php_rawurlencode(secret).encode()
    return base64.b64encode(hmac.new(key, base.encode(), hashlib.sha1).digest()).decode()


REQUIRED = ("oauth_consumer_key", "oauth_signature_method", "oauth_timestamp", "oauth_version")


@dataclass
class FakeElucidat:
    """Elucidat's API as PROVIDERS.md describes it, on 127.0.0.1 in a thread of its own."""

    public: str = PUBLIC
    private: str = PRIVATE
    nonce_status: int = 200
    delay: float = 0.0
    redirect_to: str | None = None
    issued: set[str] = field(default_factory=set)
    used: set[str] = field(default_factory=set)
    requests: list[dict[str, Any]] = field(default_factory=list)
    subscriptions: dict[str, str] = field(default_factory=dict)
    root: str = ""
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def reject(self, status: int, message: str) -> web.Response:
        return web.json_response({"message": message}, status=status)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.redirect_to:
            raise web.HTTPFound(self.redirect_to)
        raw_path = request.raw_path.split("?", 1)[0]
        if request.method == "GET":
            fields = dict(parse_qsl(request.query_string, keep_blank_values=True))
        else:
            if request.content_type != "application/x-www-form-urlencoded":
                return self.reject(415, "form body expected")
            fields = dict(parse_qsl(body.decode(), keep_blank_values=True))
        auth = request.headers.get("Authorization")
        self.requests.append(
            {
                "method": request.method,
                "path": raw_path,
                "auth": auth,
                "fields": fields,
                "body": body,
            }
        )
        if not auth:
            return self.reject(401, "missing Authorization header")
        pairs = []
        for part in auth.split(","):
            key, sep, value = part.partition("=")
            if not sep:
                return self.reject(400, f"malformed Authorization entry {part!r}")
            pairs.append((key, unquote(value)))
        oauth = dict(pairs)
        if len(oauth) != len(pairs):
            return self.reject(400, "repeated Authorization entry")
        if pairs[-1][0] != "oauth_signature":
            return self.reject(400, "oauth_signature must come last")
        missing = [k for k in REQUIRED if k not in oauth]
        if missing:
            return self.reject(400, f"missing parameter {missing[0]}")
        if oauth["oauth_consumer_key"] != self.public:
            return self.reject(401, "unknown consumer key")
        if oauth["oauth_signature_method"] != "HMAC-SHA1" or oauth["oauth_version"] != "1.0":
            return self.reject(400, "unsupported signature method or version")
        presented = oauth.pop("oauth_signature")
        url = f"{self.root}{raw_path}"
        wanted = expected_signature(self.private, request.method, url, {**fields, **oauth})
        if not hmac.compare_digest(wanted, presented):
            return self.reject(401, "invalid signature")
        nonce = oauth.get("oauth_nonce")
        if nonce is None:
            fresh = secrets.token_hex(16)
            self.issued.add(fresh)
            return web.json_response({"nonce": fresh}, status=self.nonce_status)
        if nonce not in self.issued:
            return self.reject(401, "unknown nonce")
        if nonce in self.used:
            return self.reject(401, "nonce already used")
        self.used.add(nonce)
        return self.answer(request.method, raw_path, fields)

    def answer(self, method: str, path: str, fields: dict[str, str]) -> web.Response:
        simulated = fields.get("simulation_mode") == "simulation"
        if (method, path) == ("POST", elucidat.SUBSCRIBE_PATH):
            for name in ("event", "callback_url"):
                if not fields.get(name):
                    return self.reject(400, f"missing field {name}")
            if not simulated:
                self.subscriptions[fields["event"]] = fields["callback_url"]
            return web.json_response({"message": "Subscribed to event"})
        if (method, path) == ("POST", elucidat.UNSUBSCRIBE_PATH):
            if not fields.get("event"):
                return self.reject(400, "missing field event")
            if fields["event"] not in self.subscriptions:
                return self.reject(404, "not subscribed to this event")
            if not simulated:
                del self.subscriptions[fields["event"]]
            return web.json_response({"message": "Unsubscribed from event"})
        if (method, path) == ("GET", elucidat.SUBSCRIPTIONS_PATH):
            subs = [{"event": e, "callback_url": u} for e, u in sorted(self.subscriptions.items())]
            return web.json_response({"subscriptions": subs})
        return self.reject(404, "no such endpoint")

    def start(self) -> None:
        ready = threading.Event()
        port = free_port()
        self.root = f"http://127.0.0.1:{port}"
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-elucidat", daemon=True)
        self._thread.start()
        assert ready.wait(10), "the fake Elucidat did not start"

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def calls(self) -> list[dict[str, Any]]:
        """The signed calls (not the nonce requests) the server received."""
        return [r for r in self.requests if r["auth"] and "oauth_nonce=" in r["auth"]]


@pytest.fixture
def api() -> Iterator[FakeElucidat]:
    server = FakeElucidat()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(api: FakeElucidat) -> elucidat.ElucidatClient:
    return elucidat.ElucidatClient(Secret(PUBLIC), Secret(PRIVATE), api_root=api.root, timeout=5)


@pytest.fixture
def cli_env(api: FakeElucidat, monkeypatch: pytest.MonkeyPatch) -> FakeElucidat:
    monkeypatch.setenv("ELUCIDAT_PUBLIC_KEY", PUBLIC)
    monkeypatch.setenv("ELUCIDAT_PRIVATE_KEY", PRIVATE)
    monkeypatch.setenv("ELUCIDAT_API_ROOT", api.root)
    return api


#: `relay subscribe` configures logging for its process; the test process's is put back.
pytestmark = pytest.mark.usefixtures("restored_logging")


# ---------------------------------------------------------------------------------------------
# Signing: known answers


def test_signature_known_answer() -> None:
    assert elucidat.signature("my-secret-key", KNOWN_BASE) == KNOWN_SIGNATURE


def test_base_string_known_answer() -> None:
    params = {
        "oauth_timestamp": "1434557774",
        "oauth_nonce": "my-nonce",
        "oauth_consumer_key": "my-consumer-key",
    }
    base = elucidat.base_string("get", "http://api.elucidat.com/v2/account", params)
    assert base == KNOWN_BASE
    assert elucidat.signature("my-secret-key", base) == KNOWN_SIGNATURE


def test_rawurlencode_matches_php_examples() -> None:
    # From PHP's manual (rawurlencode) and RFC 3986's unreserved set.
    assert elucidat.rawurlencode("foo @+%/") == "foo%20%40%2B%25%2F"
    assert elucidat.rawurlencode("sales and marketing/Miami") == "sales%20and%20marketing%2FMiami"
    assert elucidat.rawurlencode("A-z_0.9~") == "A-z_0.9~"
    assert elucidat.rawurlencode("é") == "%C3%A9"


def test_base_string_encodes_values_but_not_the_url() -> None:
    url = "https://api.elucidat.com/v2/event/subscribe"
    params = {"event": "release_course", "callback_url": "https://r.example.com/hooks/e/t?x=1 2"}
    base = elucidat.base_string("POST", url, params)
    assert base == (
        "POST&https://api.elucidat.com/v2/event/subscribe"
        "&callback_url=https%3A%2F%2Fr.example.com%2Fhooks%2Fe%2Ft%3Fx%3D1%202&event=release_course"
    )


def test_signature_key_is_the_rawurlencoded_private_key() -> None:
    base = elucidat.base_string("GET", "https://x.example/v2/a", {"b": "c"})
    key = "k&y /+"
    wanted = base64.b64encode(hmac.new(b"k%26y%20%2F%2B", base.encode(), hashlib.sha1).digest())
    assert elucidat.signature(key, base) == wanted.decode()
    assert elucidat.signature(key, base) != elucidat.signature("k&y /", base)


def test_authorization_header_is_sorted_with_the_signature_last_and_no_prefix() -> None:
    params = elucidat.oauth_params("my key", 1434557774, nonce="n/1")
    header = elucidat.authorization_header(params, "ab+c/d=")
    assert header == (
        "oauth_consumer_key=my%20key,oauth_nonce=n%2F1,oauth_signature_method=HMAC-SHA1,"
        "oauth_timestamp=1434557774,oauth_version=1.0,oauth_signature=ab%2Bc%2Fd%3D"
    )


def test_nonce_request_params_carry_no_nonce() -> None:
    assert "oauth_nonce" not in elucidat.oauth_params("k", 1)
    assert elucidat.oauth_params("k", 1, nonce="n")["oauth_nonce"] == "n"


def test_sign_request_puts_fields_in_the_body_of_a_post() -> None:
    signed = elucidat.sign_request(
        "post",
        "https://api.elucidat.com/v2/event/subscribe",
        {"event": "release_course", "callback_url": CALLBACK},
        public_key=PUBLIC,
        private_key=PRIVATE,
        timestamp=1700000000,
        nonce="abc",
    )
    assert signed.method == "POST"
    assert signed.url == "https://api.elucidat.com/v2/event/subscribe"
    assert signed.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert dict(parse_qsl(signed.body.decode() if signed.body else "")) == {
        "event": "release_course",
        "callback_url": CALLBACK,
    }
    oauth = dict(p.split("=", 1) for p in signed.headers["Authorization"].split(","))
    params = {k: unquote(v) for k, v in oauth.items() if k != "oauth_signature"}
    fields = {"event": "release_course", "callback_url": CALLBACK}
    assert unquote(oauth["oauth_signature"]) == expected_signature(
        PRIVATE, "POST", "https://api.elucidat.com/v2/event/subscribe", {**fields, **params}
    )


def test_sign_request_puts_fields_in_the_query_of_a_get_and_signs_the_bare_url() -> None:
    signed = elucidat.sign_request(
        "GET", "https://h.example/v2/x", {"a b": "c"}, public_key="p", private_key="s",
        timestamp=1, nonce=None,
    )  # fmt: skip
    assert signed.url == "https://h.example/v2/x?a%20b=c"
    assert signed.body is None
    assert "Content-Type" not in signed.headers


@pytest.mark.parametrize(
    ("root", "fragment"),
    [
        ("ftp://api.elucidat.com", "https://"),
        ("https://", "no host"),
        ("https://u:p@api.elucidat.com", "plain address"),
        ("https://api.elucidat.com?x=1", "plain address"),
        ("https://api.elucidat.com:99999", "not a valid URL"),
    ],
)
def test_api_root_problem(root: str, fragment: str) -> None:
    problem = elucidat.api_root_problem(root)
    assert problem is not None
    assert fragment in problem


def test_api_root_accepts_https_and_local_http() -> None:
    assert elucidat.api_root_problem("https://api.elucidat.com") is None
    assert elucidat.api_root_problem("http://127.0.0.1:8080") is None


# ---------------------------------------------------------------------------------------------
# Signing: properties

_BARE = re.compile(r"[A-Za-z0-9\-_.~]")


@given(st.text())
def test_rawurlencode_leaves_only_unreserved_bare_and_round_trips(text: str) -> None:
    encoded = elucidat.rawurlencode(text)
    rest = re.sub(r"%[0-9A-F]{2}", "", encoded)
    assert all(_BARE.fullmatch(ch) for ch in rest)
    assert unquote(encoded, errors="strict") == text
    assert encoded == php_rawurlencode(text)


@given(
    st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=20), max_size=5),
    st.text(min_size=1, max_size=30),
)
def test_signature_agrees_with_an_independent_implementation(
    fields: dict[str, str], secret: str
) -> None:
    params = {**fields, **elucidat.oauth_params("pk", 1434557774, nonce="n")}
    url = "https://api.elucidat.com/v2/event/subscribe"
    ours = elucidat.signature(secret, elucidat.base_string("POST", url, params))
    assert ours == expected_signature(secret, "POST", url, params)


# ---------------------------------------------------------------------------------------------
# The client against the fake Elucidat


def test_subscribe_simulation_fetches_a_nonce_then_posts_signed_form(
    api: FakeElucidat, client: elucidat.ElucidatClient
) -> None:
    response = client.subscribe("release_course", CALLBACK)
    assert response.status == 200
    assert response.data == {"message": "Subscribed to event"}
    nonce_request, call = api.requests
    assert nonce_request["method"] == "GET"
    assert nonce_request["path"] == elucidat.SUBSCRIBE_PATH
    assert "oauth_nonce" not in nonce_request["auth"]
    assert nonce_request["fields"] == {}
    assert call["method"] == "POST"
    assert call["fields"] == {
        "event": "release_course",
        "callback_url": CALLBACK,
        "simulation_mode": "simulation",
    }
    assert api.subscriptions == {}  # a dry run changes nothing
    assert len(api.used) == 1


def test_live_subscribe_list_and_unsubscribe(
    api: FakeElucidat, client: elucidat.ElucidatClient
) -> None:
    client.subscribe("project_created", CALLBACK, simulate=False)
    assert api.subscriptions == {"project_created": CALLBACK}
    assert "simulation_mode" not in api.calls()[0]["fields"]
    listed = client.subscriptions()
    assert listed.data == {
        "subscriptions": [{"event": "project_created", "callback_url": CALLBACK}]
    }
    assert api.calls()[1]["method"] == "GET"
    client.unsubscribe("project_created", simulate=False)
    assert api.subscriptions == {}
    assert len(api.used) == 3  # one nonce per call


def test_the_private_key_never_travels(api: FakeElucidat, client: elucidat.ElucidatClient) -> None:
    client.subscribe("release_course", CALLBACK, simulate=False)
    client.subscriptions()
    for seen in api.requests:
        blob = json.dumps(seen, default=str)
        assert PRIVATE not in blob
        assert elucidat.rawurlencode(PRIVATE) not in blob


def test_wrong_private_key_is_refused_with_elucidats_message(api: FakeElucidat) -> None:
    wrong = elucidat.ElucidatClient(Secret(PUBLIC), Secret("not-it"), api_root=api.root)
    with pytest.raises(elucidat.ElucidatError) as caught:
        wrong.subscribe("release_course", CALLBACK)
    assert caught.value.status == 401
    assert "invalid signature" in caught.value.message
    assert api.calls() == []


def _send(signed: elucidat.SignedRequest) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(  # noqa: S310 - loopback test server
        signed.url, data=signed.body, headers=dict(signed.headers), method=signed.method
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def _signed(api: FakeElucidat, nonce: str | None, **overrides: Any) -> elucidat.SignedRequest:
    kwargs: dict[str, Any] = {
        "public_key": PUBLIC,
        "private_key": PRIVATE,
        "timestamp": 1700000000,
        "nonce": nonce,
    }
    kwargs.update(overrides)
    fields = {"event": "release_course", "callback_url": CALLBACK, "simulation_mode": "simulation"}
    return elucidat.sign_request("POST", api.root + elucidat.SUBSCRIBE_PATH, fields, **kwargs)


def test_server_rejects_a_reused_nonce(api: FakeElucidat, client: elucidat.ElucidatClient) -> None:
    nonce = client.nonce(elucidat.SUBSCRIBE_PATH)
    assert _send(_signed(api, nonce)) == (200, {"message": "Subscribed to event"})
    assert _send(_signed(api, nonce)) == (401, {"message": "nonce already used"})


def test_server_rejects_a_nonce_it_never_issued(api: FakeElucidat) -> None:
    assert _send(_signed(api, "made-up")) == (401, {"message": "unknown nonce"})


def test_server_rejects_a_tampered_body(api: FakeElucidat, client: elucidat.ElucidatClient) -> None:
    signed = _signed(api, client.nonce(elucidat.SUBSCRIBE_PATH))
    assert signed.body is not None
    tampered = elucidat.SignedRequest(
        signed.method,
        signed.url,
        signed.headers,
        signed.body.replace(b"release_course", b"project_deleted"),
    )
    assert _send(tampered) == (401, {"message": "invalid signature"})


def test_server_rejects_missing_parameters(api: FakeElucidat) -> None:
    signed = _signed(api, None)
    header = ",".join(
        p for p in signed.headers["Authorization"].split(",") if not p.startswith("oauth_timestamp")
    )
    stripped = elucidat.SignedRequest(
        signed.method, signed.url, {**signed.headers, "Authorization": header}, signed.body
    )
    assert _send(stripped) == (400, {"message": "missing parameter oauth_timestamp"})
    bare = elucidat.SignedRequest(signed.method, signed.url, {}, signed.body)
    assert _send(bare)[0] == 401


def test_server_rejects_a_call_missing_a_field(
    api: FakeElucidat, client: elucidat.ElucidatClient
) -> None:
    with pytest.raises(elucidat.ElucidatError) as caught:
        client.call("POST", elucidat.SUBSCRIBE_PATH, {"event": "release_course"})
    assert caught.value.status == 400
    assert "callback_url" in caught.value.message


def test_nonce_is_read_whatever_the_status(
    api: FakeElucidat, client: elucidat.ElucidatClient
) -> None:
    # Their reference client reads the nonce without looking at the status.
    api.nonce_status = 401
    assert client.subscribe("release_course", CALLBACK).status == 200


def test_redirect_is_an_error_not_followed(
    api: FakeElucidat, client: elucidat.ElucidatClient
) -> None:
    api.redirect_to = "https://elsewhere.example/v2/event/subscribe"
    with pytest.raises(elucidat.ElucidatError) as caught:
        client.subscribe("release_course", CALLBACK)
    assert caught.value.status == 302
    assert "elsewhere.example" in caught.value.message
    assert len(api.requests) == 0  # the redirect happens before the handler records anything


def test_unreachable_api_is_a_clear_error() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    dead = elucidat.ElucidatClient(Secret(PUBLIC), Secret(PRIVATE), api_root=closed, timeout=5)
    with pytest.raises(elucidat.ElucidatError) as caught:
        dead.subscriptions()
    assert caught.value.status is None
    assert "cannot reach" in caught.value.message


def test_silent_api_times_out(api: FakeElucidat) -> None:
    api.delay = 1.0
    slow = elucidat.ElucidatClient(Secret(PUBLIC), Secret(PRIVATE), api_root=api.root, timeout=0.2)
    with pytest.raises(elucidat.ElucidatError) as caught:
        slow.subscriptions()
    assert "no answer" in caught.value.message


def test_client_rejects_a_bad_api_root() -> None:
    with pytest.raises(elucidat.ElucidatError, match="ELUCIDAT_API_ROOT"):
        elucidat.ElucidatClient(Secret(PUBLIC), Secret(PRIVATE), api_root="file:///etc/passwd")


def test_client_repr_hides_the_keys(client: elucidat.ElucidatClient) -> None:
    assert PRIVATE not in repr(client)
    assert PUBLIC not in repr(client)


# ---------------------------------------------------------------------------------------------
# The command's pure checks


def test_event_problem_suggests_the_close_name() -> None:
    problem = subscribe_cli.event_problem("release_courses", force=False)
    assert problem is not None
    assert "did you mean 'release_course'" in problem
    assert "--force-event" in problem
    assert subscribe_cli.event_problem("release_courses", force=True) is None
    assert subscribe_cli.event_problem("project_deleted", force=False) is None
    assert subscribe_cli.event_problem(" ", force=True) is not None


@pytest.mark.parametrize(
    ("url", "insecure", "fragment"),
    [
        ("http://relay.example.com/hooks/e/t", False, "--insecure-callback"),
        ("ftp://relay.example.com/hooks/e/t", True, "https://"),
        ("https://relay.example.com", False, "needs a path"),
        ("https://relay.example.com/", False, "needs a path"),
        ("https://relay/hooks/e/t", False, "fully-qualified"),
        ("https://u:p@relay.example.com/hooks/e/t", False, "credentials"),
        ("https:///hooks/e/t", False, "no host"),
        ("https://relay.example.com:70000/hooks/e/t", False, "not a valid URL"),
    ],
)
def test_callback_problem(url: str, insecure: bool, fragment: str) -> None:
    problem = subscribe_cli.callback_problem(url, insecure)
    assert problem is not None
    assert fragment in problem


def test_callback_accepted() -> None:
    assert subscribe_cli.callback_problem(CALLBACK, insecure=False) is None
    assert subscribe_cli.callback_problem("http://127.0.0.1:8000/hooks/e/t", insecure=True) is None
    assert subscribe_cli.callback_problem("http://localhost:8000/hooks/e/t", insecure=True) is None


def test_callback_without_token_is_warned_about() -> None:
    assert subscribe_cli.callback_warnings("https://relay.example.com/hooks/elucidat")
    assert subscribe_cli.callback_warnings("https://relay.example.com/hooks/elucidat/")
    assert subscribe_cli.callback_warnings(CALLBACK) == []


def test_redact_masks_hook_tokens_only() -> None:
    assert subscribe_cli.redact_url(CALLBACK) == "https://relay.example.com/hooks/elucidat/****"
    assert (
        subscribe_cli.redact_url("https://x.example/other/path") == "https://x.example/other/path"
    )
    nested = {"subscriptions": [{"callback_url": CALLBACK, "n": 1}], "note": f"see {CALLBACK}."}
    assert TOKEN not in json.dumps(subscribe_cli.redact(nested))
    assert subscribe_cli.redact(nested)["subscriptions"][0]["n"] == 1


# ---------------------------------------------------------------------------------------------
# `relay subscribe` in-process, through relay.cli.main.main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["subscribe", "elucidat", *argv])
    out, err = capsys.readouterr()
    for leaked in (PRIVATE, PUBLIC, TOKEN):
        assert leaked not in out + err
    return code, out, err


def test_cli_subscribe_is_a_dry_run_by_default(
    cli_env: FakeElucidat, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "--event", "release_course", "--callback", CALLBACK)
    assert code == 0
    assert "Subscribed release_course -> https://relay.example.com/hooks/elucidat/****" in out
    assert "simulation" in out
    assert "--live" in out
    assert cli_env.calls()[0]["fields"]["simulation_mode"] == "simulation"
    assert cli_env.calls()[0]["fields"]["callback_url"] == CALLBACK  # the real URL was sent
    assert cli_env.subscriptions == {}


def test_cli_live_subscribe_then_list_then_unsubscribe(
    cli_env: FakeElucidat, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "--event", "release_course", "--callback", CALLBACK, "--live")
    assert code == 0
    assert "[live, HTTP 200]" in out
    assert cli_env.subscriptions == {"release_course": CALLBACK}

    code, out, _ = run_cli(capsys, "--list")
    assert code == 0
    assert "release_course" in out
    assert "/hooks/elucidat/****" in out

    code, out, _ = run_cli(capsys, "--unsubscribe", "--event", "release_course", "--live")
    assert code == 0
    assert "Unsubscribed release_course" in out
    assert cli_env.subscriptions == {}


def test_cli_list_json_prints_the_raw_answer(
    cli_env: FakeElucidat, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_env.subscriptions["project_created"] = "https://relay.example.com/hooks/elucidat/abc"
    assert cli.main(["subscribe", "elucidat", "--list", "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == {
        "subscriptions": [
            {
                "event": "project_created",
                "callback_url": "https://relay.example.com/hooks/elucidat/abc",
            }
        ]
    }


def test_cli_missing_keys_exit_2_and_send_nothing(
    api: FakeElucidat, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ELUCIDAT_PUBLIC_KEY", raising=False)
    monkeypatch.setenv("ELUCIDAT_PRIVATE_KEY", PRIVATE)
    monkeypatch.setenv("ELUCIDAT_API_ROOT", api.root)
    code, _, err = run_cli(capsys, "--list")
    assert code == 2
    assert "ELUCIDAT_PUBLIC_KEY not set" in err
    assert api.requests == []


def test_cli_unknown_event_suggests_and_force_sends_it(
    cli_env: FakeElucidat, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "--event", "project_create", "--callback", CALLBACK)
    assert code == 2
    assert "did you mean 'project_created'" in err
    assert cli_env.requests == []
    code, _, _ = run_cli(
        capsys, "--event", "course_archived", "--callback", CALLBACK, "--force-event"
    )
    assert code == 0
    assert cli_env.calls()[0]["fields"]["event"] == "course_archived"


def test_cli_http_callback_needs_the_insecure_flag(
    cli_env: FakeElucidat, capsys: pytest.CaptureFixture[str]
) -> None:
    local = "http://127.0.0.1:8000/hooks/elucidat/abc"
    code, _, err = run_cli(capsys, "--event", "release_course", "--callback", local)
    assert code == 2
    assert "--insecure-callback" in err
    code, _, _ = run_cli(
        capsys, "--event", "release_course", "--callback", local, "--insecure-callback"
    )
    assert code == 0
    assert cli_env.calls()[0]["fields"]["callback_url"] == local


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--list", "--event", "release_course"], "--list takes neither"),
        (["--callback", CALLBACK], "--event is required"),
        (["--event", "release_course"], "--callback URL is required"),
        (["--unsubscribe"], "--unsubscribe needs --event"),
        (["--unsubscribe", "--event", "release_course", "--callback", CALLBACK], "only --event"),
        (["--list", "--timeout", "0"], "--timeout"),
    ],
)
def test_cli_usage_mistakes_exit_2(
    cli_env: FakeElucidat, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert fragment in err
    assert cli_env.requests == []


def test_cli_bad_api_root_exit_2(
    cli_env: FakeElucidat, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ELUCIDAT_API_ROOT", "gopher://api.elucidat.com")
    code, _, err = run_cli(capsys, "--list")
    assert code == 2
    assert "ELUCIDAT_API_ROOT" in err


def test_cli_refusal_exit_1_with_the_reason(
    cli_env: FakeElucidat, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ELUCIDAT_PRIVATE_KEY", "wrong-private-key")
    code, _, err = run_cli(capsys, "--event", "release_course", "--callback", CALLBACK)
    assert code == 1
    assert "invalid signature" in err
    assert "wrong-private-key" not in err


def test_cli_mutually_exclusive_actions_and_unknown_provider() -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["subscribe", "elucidat", "--list", "--unsubscribe"])
    assert caught.value.code == 2
    with pytest.raises(SystemExit) as caught:
        cli.main(["subscribe", "zapier", "--list"])
    assert caught.value.code == 2


# ---------------------------------------------------------------------------------------------
# `relay subscribe` as a separate process


def _subprocess(env_extra: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("ELUCIDAT_") and k != "REDIS_URL"
    }
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "relay", "subscribe", "elucidat", *argv],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_subprocess_subscribe_live(api: FakeElucidat) -> None:
    keys = {
        "ELUCIDAT_PUBLIC_KEY": PUBLIC,
        "ELUCIDAT_PRIVATE_KEY": PRIVATE,
        "ELUCIDAT_API_ROOT": api.root,
    }
    done = _subprocess(keys, "--event", "release_deleted", "--callback", CALLBACK, "--live")
    assert done.returncode == 0, done.stderr
    assert "Subscribed release_deleted" in done.stdout
    assert api.subscriptions == {"release_deleted": CALLBACK}
    for leaked in (PRIVATE, PUBLIC, TOKEN):
        assert leaked not in done.stdout + done.stderr


def test_subprocess_missing_keys_exit_2(api: FakeElucidat) -> None:
    done = _subprocess({"ELUCIDAT_API_ROOT": api.root}, "--list")
    assert done.returncode == 2
    assert "ELUCIDAT_PUBLIC_KEY and ELUCIDAT_PRIVATE_KEY not set" in done.stderr
    assert api.requests == []
