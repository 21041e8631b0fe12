"""`relay reconcile`: one pass from the command line, against the fake Fellow API."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import redis

from relay.cli.main import main
from relay.store import keys
from tests.support.fellow_api import KEY, FellowApiServer
from tests.support.targets import TargetServer

pytestmark = [pytest.mark.needs_redis_server, pytest.mark.usefixtures("restored_logging")]

ROUTES = """
[sources.fellow]
kind = "form"
token_env = "FELLOW_TOKEN"

[sources.fellow.reconcile]
api = "{api}"
api_key_env = "FELLOW_API_KEY"

[sources.plain]
kind = "form"

[targets.crm]
url = "{targets}/ok/crm"

[[routes]]
source = "fellow"
events = ["*"]
targets = ["crm"]
"""


@pytest.fixture(autouse=True)
def env(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fellow_api: FellowApiServer,
    targets: TargetServer,
    redis_url: str,
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES.format(api=fellow_api.url, targets=targets.url("").rstrip("/")))
    monkeypatch.setenv("RELAY_ROUTES", str(routes))
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("FELLOW_TOKEN", "fellow-token-0123456789abcdef")
    monkeypatch.setenv("FELLOW_API_KEY", KEY)
    monkeypatch.setenv("RELAY_LOG_FORMAT", "json")


def test_dry_run_prints_what_is_missing_and_writes_nothing(
    fellow_api: FellowApiServer, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    fellow_api.enrol("course", "7", "m1", completed=True)
    assert main(["reconcile", "fellow", "--dry-run", "--backfill"]) == 0
    out, err = capsys.readouterr()
    assert "missing  COURSEMEMBER_CREATED course:7:m1  (would synthesize)" in out
    assert "missing  COURSEMEMBER_COMPLETED course:7:m1  (would synthesize)" in out
    assert "2 missing, 0 waiting, 0 received by webhook" in out
    assert KEY not in out + err
    assert redis_client.keys("relay:*") == []


def test_first_pass_then_json_of_a_backfill(
    fellow_api: FellowApiServer, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    fellow_api.enrol("program", "p1", "m2")
    assert main(["reconcile", "fellow"]) == 0
    assert "first pass: memberships recorded, nothing synthesized" in capsys.readouterr().out
    fellow_api.enrol("program", "p2", "m3")
    assert main(["reconcile", "fellow", "--backfill", "--json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    [missing] = doc["missing"]
    assert missing["event"] == "PROGRAMMEMBER_CREATED"
    assert missing["form"] == {
        "programId": "p2",
        "memberId": "m3",
        "event": "PROGRAMMEMBER_CREATED",
    }
    assert redis_client.exists(keys.event_key(missing["event_id"]))


def test_exit_codes(fellow_api: FellowApiServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reconcile", "plain"]) == 2
    assert "reconciled sources: fellow" in capsys.readouterr().err
    fellow_api.fault = "401"
    assert main(["reconcile", "fellow"]) == 1
    out = capsys.readouterr().out
    assert "pass failed, nothing synthesized" in out
    assert "401" in out
