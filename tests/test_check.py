"""`relay check`: validation reports, warnings, JSON, dry runs, and no secret in any output."""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from relay.cli import check
from relay.cli import main as cli
from relay.config.loading import load_routes
from relay.core.signatures import ms_signature

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "routes.toml"

SECRETS = {
    "ELUCIDAT_TOKEN": "elucidat-token-0123456789abcdef",
    "DIGITALCHALK_TOKEN": "digitalchalk-token-0123456789",
    "FELLOW_TOKEN": "fellow-token-0123456789abcdef",
    "LEARN365_TOKEN": "learn365-token-0123456789abc",
    "STRIGO_TOKEN": "strigo-token-0123456789abcdef",
    "LEARN365_SECRET": "123456789012345678901234567890123456789012345678",
    "CRM_WHSEC": "whsec_" + base64.b64encode(b"crm-signing-key-0123456789ab").decode(),
}

# Microsoft's ms-signature vector (PROVIDERS.md): two notifications, CRLF line ends.
MS_BODY = (
    b'{\r\n  "Id": "1234567890",\r\n  "Attempt": 1,\r\n  "Properties": {\r\n    "p1": "pv1"\r\n'
    b'  },\r\n  "Notifications": [\r\n    {\r\n      "Action": "a1",\r\n      "d1": "dv1"\r\n'
    b'    },\r\n    {\r\n      "Action": "a1",\r\n      "d2": "http://localhost"\r\n    }\r\n'
    b"  ]\r\n}"
)
MS_SIGNATURE = "sha256=DCDEB62502988CDEDE464AF6A97566D61288C446CFC46F74F341E11173FF30A1"
LEARN_BODY = (
    b'{"Id": "abc", "Attempt": 1, "Properties": {}, "Notifications": '
    b'[{"Action": "CourseCompleted"}, {"Action": "EnrollmentApprovalRequest"}, {"Action": "x"}]}'
)

Run = Callable[..., tuple[int, str]]


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Every variable the shipped routes.toml names, set; RELAY_ROUTES unset."""
    monkeypatch.delenv("RELAY_ROUTES", raising=False)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return SECRETS


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """None of the shipped file's variables set."""
    monkeypatch.delenv("RELAY_ROUTES", raising=False)
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def relay_check(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """Run `relay check ARGS` in-process; (exit code, stdout + stderr)."""

    def run(*argv: str, stdin: bytes | None = None) -> tuple[int, str]:
        parser = argparse.ArgumentParser(prog="relay check")
        check.add_arguments(parser)
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        code = check.run(parser.parse_args(list(argv)))
        out = capsys.readouterr()
        return code, out.out + out.err

    return run


def write(tmp_path: Path, text: str, name: str = "routes.toml") -> str:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(path)


# --- the shipped example ----------------------------------------------------------------------


def test_shipped_routes_validate_with_a_summary(
    secrets_env: dict[str, str], relay_check: Run
) -> None:
    code, out = relay_check(str(SHIPPED))
    assert code == 0
    assert out.startswith(f"{SHIPPED}: OK: 5 sources, 3 targets, 9 routes\n")
    assert "warning" not in out
    for name, kind in [
        ("elucidat", "json_or_form"),
        ("digitalchalk", "json"),
        ("fellow", "form"),
        ("learn365", "aspnet"),
        ("strigo", "resthooks"),
    ]:
        assert f"source {name} ({kind})" in out
    assert "path token from $FELLOW_TOKEN" in out
    assert "ms-signature keyed by $LEARN365_SECRET" in out
    assert "event    header x-event-type" in out
    assert "event    JSON or form field 'event'" in out
    assert "signing  Standard Webhooks, key from $CRM_WHSEC" in out
    assert "route    Course* -> crm, lms-archive" in out
    assert "reaches  crm, lms-archive" in out  # learn365
    assert "fed by   elucidat, learn365" in out  # lms-archive


def test_shipped_routes_cover_every_provider_kind(secrets_env: dict[str, str]) -> None:
    table = load_routes(SHIPPED, secrets_env)
    kinds = {s.kind for s in table.sources.values()}
    assert kinds == {"json_or_form", "json", "form", "aspnet", "resthooks"}
    assert table.sources["fellow"].spool is True
    assert table.sources["digitalchalk"].methods == ("POST", "PUT")
    assert table.targets["crm"].signing_secrets[0].name == "CRM_WHSEC"
    assert check.lint(table) == []  # every source and target is used
    # The documented examples route where the comments say.
    assert table.match("fellow", "COURSEMEMBER_COMPLETED") == ("crm", "analytics")
    assert table.match("elucidat", "release_course") == ("lms-archive", "analytics")
    assert table.match("learn365", "CourseCompleted") == ("crm", "lms-archive")
    assert table.match("strigo", "class.create") == ("analytics",)
    assert table.match("digitalchalk", "element_published") == ("analytics",)


def test_shipped_routes_without_env_name_each_variable(no_env: None, relay_check: Run) -> None:
    code, out = relay_check(str(SHIPPED))
    assert code == 1
    for name in SECRETS:
        assert f"environment variable {name} is not set" in out
    assert f"{SHIPPED}: [sources.learn365.secret_env] environment variable LEARN365_SECRET" in out
    assert out.rstrip().endswith("7 problems; relay would not start")


def test_allow_missing_env_turns_them_into_warnings(no_env: None, relay_check: Run) -> None:
    code, out = relay_check(str(SHIPPED), "--allow-missing-env")
    assert code == 0
    assert "OK: 5 sources" in out
    assert "warning: " in out
    assert "environment variable CRM_WHSEC is not set" in out
    assert "path token from $FELLOW_TOKEN (not set)" in out


def test_default_path_comes_from_relay_routes(
    secrets_env: dict[str, str], relay_check: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_ROUTES", str(SHIPPED))
    code, out = relay_check()
    assert code == 0
    assert out.startswith(f"{SHIPPED}: OK")


def test_default_path_is_routes_toml_in_the_working_directory(
    no_env: None, relay_check: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = relay_check()
    assert code == 1
    assert out.splitlines() == [
        "./routes.toml: file not found",
        "./routes.toml: 1 problem; relay would not start",
    ]


def test_json_report(secrets_env: dict[str, str], relay_check: Run) -> None:
    code, out = relay_check(str(SHIPPED), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["ok"] is True
    assert report["problems"] == []
    assert set(report["sources"]) == {"elucidat", "digitalchalk", "fellow", "learn365", "strigo"}
    assert report["sources"]["learn365"]["secret"] == "$LEARN365_SECRET"
    assert report["sources"]["fellow"]["path"] == "/hooks/fellow/<$FELLOW_TOKEN>"
    assert report["targets"]["crm"]["retry"] == {"attempts": 10, "first": "5s", "max": "10h"}
    assert len(report["routes"]) == 9


# --- mistakes ------------------------------------------------------------------------------------

BROKEN = """
[sources.fellow]
kind = "form"
token_evn = "FELLOW_TOKEN"

[targets.crm]
url = "https://crm.example.com/hooks#x"

[[routes]]
source = "fellw"
targets = ["crm", "analytcs"]
"""


def test_every_mistake_is_reported_with_file_table_and_key(
    tmp_path: Path, relay_check: Run, no_env: None
) -> None:
    path = write(tmp_path, BROKEN)
    code, out = relay_check(path)
    assert code == 1
    assert out.splitlines() == [
        f"{path}: [routes[0].source] no source named 'fellw' in [sources]; did you mean 'fellow'?",
        f"{path}: [routes[0].targets] no target named 'analytcs' in [targets]",
        f"{path}: [sources.fellow.token_evn] unknown key 'token_evn'; did you mean 'token_env'?",
        f"{path}: [targets.crm.url] 'https://crm.example.com/hooks#x' has a '#fragment', "
        "which is never sent to the server: remove it",
        f"{path}: 4 problems; relay would not start",
    ]


def test_mistakes_as_json(tmp_path: Path, relay_check: Run, no_env: None) -> None:
    code, out = relay_check(write(tmp_path, BROKEN), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert [(p["table"], p["key"]) for p in report["problems"]] == [
        ("routes[0]", "source"),
        ("routes[0]", "targets"),
        ("sources.fellow", "token_evn"),
        ("targets.crm", "url"),
    ]


def test_invalid_toml(tmp_path: Path, relay_check: Run) -> None:
    path = write(tmp_path, "[sources.x\n")
    code, out = relay_check(path)
    assert code == 1
    assert out.startswith(f"{path}: not valid TOML: ")


def test_warnings_do_not_fail(tmp_path: Path, relay_check: Run, no_env: None) -> None:
    path = write(
        tmp_path,
        """
[sources.open]
kind = "json"
[sources.lonely]
kind = "header"
[targets.used]
url = "http://hooks.example.com/x"
[targets.unused]
url = "https://x.example/?key=abc"
[[routes]]
source = "open"
targets = ["used"]
""",
    )
    code, out = relay_check(path)
    assert code == 0
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        f"warning: {path}: [sources.lonely] no route takes events from it: "
        "they are recorded as unrouted",
        f"warning: {path}: [sources.lonely] no token_env: anyone who can reach the relay can "
        "post events as this source",
        f"warning: {path}: [sources.open] no token_env: anyone who can reach the relay can post "
        "events as this source",
        f"warning: {path}: [targets.unused] no route sends events to it",
        f"warning: {path}: [targets.used] plain http to a remote host: use https",
    ]
    assert "key=abc" not in out  # a query may carry a downstream key: hidden
    assert "url      https://x.example/?..." in out


# --- dry runs ------------------------------------------------------------------------------------


def dry(run: Run, tmp_path: Path, source: str, body: bytes, *extra: str) -> tuple[int, str]:
    sample = tmp_path / "sample.bin"
    sample.write_bytes(body)
    return run(str(SHIPPED), "--source", source, "--body", str(sample), *extra)


def test_dry_run_form_source(secrets_env: dict[str, str], relay_check: Run, tmp_path: Path) -> None:
    body = b"courseId=1&memberId=2&event=COURSEMEMBER_CREATED"
    code, out = dry(relay_check, tmp_path, "fellow", body)
    assert code == 0
    assert out == (
        "POST /hooks/fellow  content-type: application/x-www-form-urlencoded\n"
        "the receiver would answer 202 with 1 event\n"
        "event 1: COURSEMEMBER_CREATED\n"
        "  targets  crm, analytics\n"
        "  routes[4]  matched      -> crm, analytics\n"
    )


@pytest.mark.parametrize(
    "body",
    [b'{"event": "release_course", "release_views": "0"}', b"event=release_course&x=1"],
)
def test_dry_run_json_or_form_guesses_the_content_type(
    secrets_env: dict[str, str], relay_check: Run, tmp_path: Path, body: bytes
) -> None:
    code, out = dry(relay_check, tmp_path, "elucidat", body)
    assert code == 0
    assert "event 1: release_course\n  targets  lms-archive, analytics\n" in out


def test_dry_run_put_and_json(
    secrets_env: dict[str, str], relay_check: Run, tmp_path: Path
) -> None:
    body = b'{"event": "offering_completed"}'
    code, out = dry(relay_check, tmp_path, "digitalchalk", body, "--method", "put")
    assert code == 0
    assert out.startswith("PUT /hooks/digitalchalk  content-type: application/json\n")
    assert "event 1: offering_completed\n  targets  crm, analytics\n" in out


def test_dry_run_header_source(
    secrets_env: dict[str, str], relay_check: Run, tmp_path: Path
) -> None:
    code, out = dry(
        relay_check, tmp_path, "strigo", b'{"id": 1}', "--header", "X-Event-Type: enrollment.create"
    )
    assert code == 0
    assert "event 1: enrollment.create\n  targets  crm, analytics\n" in out


def test_dry_run_without_event_type_is_unrouted(
    secrets_env: dict[str, str], relay_check: Run, tmp_path: Path
) -> None:
    code, out = dry(relay_check, tmp_path, "strigo", b'{"id": 1}')
    assert code == 0
    assert "event 1: none: recorded as unrouted\n" in out


def test_dry_run_event_no_route_matches(
    secrets_env: dict[str, str], relay_check: Run, tmp_path: Path
) -> None:
    code, out = dry(relay_check, tmp_path, "fellow", b"event=SOMETHING_ELSE")
    assert code == 0
    assert "event 1: SOMETHING_ELSE\n  targets  none: recorded as unrouted\n" in out


def test_dry_run_aspnet_verified_split_and_deduped(
    secrets_env: dict[str, str], relay_check: Run, tmp_path: Path
) -> None:
    signature = ms_signature(SECRETS["LEARN365_SECRET"], LEARN_BODY)
    code, out = dry(
        relay_check, tmp_path, "learn365", LEARN_BODY, "--header", f"ms-signature:{signature}"
    )
    assert code == 0
    assert out == (
        "POST /hooks/learn365  content-type: application/json; charset=utf-8\n"
        "ms-signature: verified with $LEARN365_SECRET\n"
        "the receiver would answer 202 with 3 events\n"
        "event 1: CourseCompleted\n"
        "  dedupe   abc#0\n"
        "  targets  crm, lms-archive\n"
        "  routes[5]  matched      -> crm, lms-archive\n"
        "  routes[6]  not matched  -> crm: the event type is none of EnrollmentApprovalRequest\n"
        "event 2: EnrollmentApprovalRequest\n"
        "  dedupe   abc#1\n"
        "  targets  crm\n"
        "  routes[5]  not matched  -> crm, lms-archive: the event type is none of Course*\n"
        "  routes[6]  matched      -> crm\n"
        "event 3: x\n"
        "  dedupe   abc#2\n"
        "  targets  none: recorded as unrouted\n"
        "  routes[5]  not matched  -> crm, lms-archive: the event type is none of Course*\n"
        "  routes[6]  not matched  -> crm: the event type is none of EnrollmentApprovalRequest\n"
    )
    assert signature not in out


def test_dry_run_aspnet_known_vector(
    secrets_env: dict[str, str], relay_check: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEARN365_SECRET", "123456789012345678901234567890123456789012345678")
    code, out = dry(
        relay_check, tmp_path, "learn365", MS_BODY, "--header", f"ms-signature:{MS_SIGNATURE}"
    )
    assert code == 0
    assert "ms-signature: verified" in out
    assert "event 2: a1\n  dedupe   1234567890#1\n" in out


def test_dry_run_aspnet_without_signature_would_be_400(
    secrets_env: dict[str, str], relay_check: Run, tmp_path: Path
) -> None:
    code, out = dry(relay_check, tmp_path, "learn365", LEARN_BODY)
    assert code == 1
    assert "the receiver would answer 400: the ms-signature header is missing\n" in out
    assert "were it accepted, the body yields:\nevent 1: CourseCompleted" in out


def test_dry_run_aspnet_wrong_signature_would_be_401(
    secrets_env: dict[str, str], relay_check: Run, tmp_path: Path
) -> None:
    code, out = dry(
        relay_check, tmp_path, "learn365", LEARN_BODY, "--header", f"ms-signature:{MS_SIGNATURE}"
    )
    assert code == 1
    assert "ms-signature: rejected: the ms-signature does not match the body" in out
    assert "the receiver would answer 401" in out


def test_dry_run_aspnet_malformed_signature_would_be_400(
    secrets_env: dict[str, str], relay_check: Run, tmp_path: Path
) -> None:
    code, out = dry(relay_check, tmp_path, "learn365", LEARN_BODY, "--header", "ms-signature:md5=x")
    assert code == 1
    assert "the receiver would answer 400: the ms-signature header must be" in out


def test_dry_run_aspnet_without_the_secret_set(
    no_env: None, relay_check: Run, tmp_path: Path
) -> None:
    code, out = dry(
        relay_check, tmp_path, "learn365", LEARN_BODY, "--header", f"ms-signature:{MS_SIGNATURE}"
    )
    assert code == 0
    assert "ms-signature: not verified: the secret's environment variable is not set" in out
    assert "note: " in out
    assert "environment variable LEARN365_SECRET is not set" in out
    assert "event 1: CourseCompleted\n" in out


@pytest.mark.parametrize(
    ("source", "body", "extra", "expected"),
    [
        (
            "fellow",
            b'{"event": "x"}',
            ("--content-type", "application/json"),
            "415: source 'fellow'",
        ),
        ("digitalchalk", b"{not json", (), "400: the body is not valid JSON"),
        ("digitalchalk", b"", (), "400: the body is empty"),
        ("fellow", b"event=x", ("--method", "DELETE"), "405: source 'fellow' takes POST, PUT"),
        ("fellow", b"x" * (1024 * 1024 + 1), (), "413: the body is 1048577 bytes"),
        ("learn365", b'{"Notifications": []}', (), "400: the ms-signature header is missing"),
        ("nope", b"{}", (), "404: no source named 'nope'"),
    ],
)
def test_dry_run_rejections(
    secrets_env: dict[str, str],
    relay_check: Run,
    tmp_path: Path,
    source: str,
    body: bytes,
    extra: tuple[str, ...],
    expected: str,
) -> None:
    code, out = dry(relay_check, tmp_path, source, body, *extra)
    assert code == 1
    assert f"the receiver would answer {expected}" in out


def test_dry_run_aspnet_body_problem_after_a_good_signature(
    secrets_env: dict[str, str], relay_check: Run, tmp_path: Path
) -> None:
    body = b'{"Notifications": []}'
    signature = ms_signature(SECRETS["LEARN365_SECRET"], body)
    code, out = dry(
        relay_check, tmp_path, "learn365", body, "--header", f"ms-signature:{signature}"
    )
    assert code == 1
    assert "400: an ASP.NET WebHooks body needs a non-empty 'Notifications' array" in out


def test_dry_run_handshakes(secrets_env: dict[str, str], relay_check: Run, tmp_path: Path) -> None:
    code, out = dry(relay_check, tmp_path, "learn365", b"", "--method", "GET")
    assert code == 0
    assert "the receiver would answer 200: the ASP.NET WebHooks ?echo= handshake" in out
    code, out = dry(relay_check, tmp_path, "strigo", b"", "--header", "X-Hook-Secret: hs-123")
    assert code == 0
    assert "200: the REST Hooks X-Hook-Secret handshake" in out
    assert "hs-123" not in out


def test_dry_run_reads_stdin(secrets_env: dict[str, str], relay_check: Run) -> None:
    code, out = relay_check(
        str(SHIPPED), "--source", "fellow", "--body", "-", stdin=b"event=PROGRAMMEMBER_DELETED"
    )
    assert code == 0
    assert "event 1: PROGRAMMEMBER_DELETED\n  targets  crm, analytics\n" in out


def test_dry_run_json(secrets_env: dict[str, str], relay_check: Run, tmp_path: Path) -> None:
    code, out = dry(relay_check, tmp_path, "fellow", b"event=COURSEMEMBER_CREATED", "--json")
    assert code == 0
    assert json.loads(out) == {
        "source": "fellow",
        "method": "POST",
        "content_type": "application/x-www-form-urlencoded",
        "status": 202,
        "accepted": True,
        "message": "accepted",
        "signature": None,
        "events": [
            {
                "type": "COURSEMEMBER_CREATED",
                "dedupe": None,
                "targets": ["crm", "analytics"],
                "routes": [
                    {
                        "route": 4,
                        "targets": ["crm", "analytics"],
                        "matched": True,
                        "event_matched": True,
                        "failed": None,
                    }
                ],
            }
        ],
    }


def test_dry_run_on_a_broken_file_reports_its_problems(
    tmp_path: Path, relay_check: Run, no_env: None
) -> None:
    path = write(tmp_path, BROKEN)
    sample = write(tmp_path, "event=x", "sample")
    code, out = relay_check(path, "--source", "fellow", "--body", sample)
    assert code == 1
    assert "[sources.fellow.token_evn] unknown key" in out


@pytest.mark.parametrize(
    "argv",
    [
        ("--source", "fellow"),
        ("--body", "x"),
        ("--source", "fellow", "--body", "/nonexistent/sample"),
        ("--source", "fellow", "--body", "-", "--header", "no-colon"),
    ],
)
def test_dry_run_usage_errors(
    secrets_env: dict[str, str], relay_check: Run, argv: tuple[str, ...]
) -> None:
    code, out = relay_check(str(SHIPPED), *argv, stdin=b"")
    assert code == 2
    assert out.startswith("relay check: ")


def test_parse_header() -> None:
    assert check.parse_header("X-Event-Type: a:b ") == ("x-event-type", "a:b")
    with pytest.raises(ValueError, match="NAME:VALUE"):
        check.parse_header(":x")


# --- secrets never appear ------------------------------------------------------------------------


def test_no_secret_value_in_any_output(
    secrets_env: dict[str, str], relay_check: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = [
        relay_check(str(SHIPPED)),
        relay_check(str(SHIPPED), "--json"),
        relay_check(str(SHIPPED), "--allow-missing-env"),
    ]
    signature = ms_signature(SECRETS["LEARN365_SECRET"], LEARN_BODY)
    for source, body, extra in [
        ("learn365", LEARN_BODY, ("--header", f"ms-signature:{signature}")),
        ("learn365", LEARN_BODY, ("--header", f"ms-signature:{MS_SIGNATURE}")),
        ("learn365", LEARN_BODY, ()),
        ("learn365", b"", ("--method", "GET")),
        ("fellow", b"event=COURSEMEMBER_CREATED", ()),
        ("fellow", b"event=COURSEMEMBER_CREATED", ("--json",)),
        ("strigo", b"{}", ("--header", "x-event-type:enrollment.create")),
        ("elucidat", b"event=release_course", ()),
        ("digitalchalk", b"{bad", ()),
    ]:
        outputs.append(dry(relay_check, tmp_path, source, body, *extra))
    # Broken values: the problems name the variables, never the values.
    broken = {
        "FELLOW_TOKEN": "short-fellow",
        "LEARN365_SECRET": "bad secret with spaces",
        "CRM_WHSEC": "whsec_notbase64!!",
    }
    for name, value in broken.items():
        monkeypatch.setenv(name, value)
    outputs.append(relay_check(str(SHIPPED)))
    outputs.append(relay_check(str(SHIPPED), "--json"))
    text = "\n".join(out for _, out in outputs)
    assert "FELLOW_TOKEN" in text  # the names are shown ...
    for value in [*SECRETS.values(), *broken.values(), SECRETS["CRM_WHSEC"][6:]]:
        assert value not in text  # ... the values never
    assert "with spaces" not in text


# --- wiring --------------------------------------------------------------------------------------


def test_relay_cli_dispatches_check(
    secrets_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check", str(SHIPPED)]) == 0
    assert "OK: 5 sources, 3 targets, 9 routes" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Content-Encoding: the key, and the dry run deciding as the receiver does

ENCODINGS = """
[sources.chalk]
kind = "json"
content_encodings = ["gzip", "br"]

[targets.crm]
url = "http://127.0.0.1:9/crm"

[[routes]]
source = "chalk"
targets = ["crm"]
"""


def test_an_unsupported_content_encoding_is_named_with_file_table_and_key(
    tmp_path: Path, relay_check: Run, no_env: None
) -> None:
    path = write(tmp_path, ENCODINGS)
    code, out = relay_check(path)
    assert code == 1
    assert out.splitlines() == [
        f"{path}: [sources.chalk.content_encodings] 'br' is not supported: relay decodes gzip, "
        "deflate only (no dependency for br or zstd); a request sent with it gets 415",
        f"{path}: 1 problem; relay would not start",
    ]
    path = write(tmp_path, ENCODINGS.replace('"br"', '"gz"'))
    code, out = relay_check(path)
    assert code == 1
    assert "[sources.chalk.content_encodings] unknown encoding 'gz' (one of: gzip, deflate)" in out


def test_dry_run_decodes_as_the_receiver_does(
    secrets_env: dict[str, str], relay_check: Run, tmp_path: Path
) -> None:
    body = gzip.compress(b"courseId=1&memberId=2&event=COURSEMEMBER_CREATED")
    code, out = dry(relay_check, tmp_path, "fellow", body, "--header", "content-encoding:gzip")
    assert code == 0
    assert "the receiver would answer 202 with 1 event\nevent 1: COURSEMEMBER_CREATED\n" in out
    code, out = dry(relay_check, tmp_path, "fellow", body, "--header", "content-encoding:br")
    assert code == 1
    assert (
        "the receiver would answer 415: Content-Encoding 'br' is not taken; "
        "this source takes gzip, deflate or an uncompressed body" in out
    )
    bomb = gzip.compress(bytes(2 * 1024 * 1024))
    code, out = dry(relay_check, tmp_path, "fellow", bomb, "--header", "content-encoding:gzip")
    assert code == 1
    assert "the receiver would answer 413: the body decodes to over 1048576 bytes" in out
    code, out = dry(relay_check, tmp_path, "fellow", body[:-5], "--header", "content-encoding:gzip")
    assert code == 1
    assert "the receiver would answer 400: the gzip body is cut short" in out
