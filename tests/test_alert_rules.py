"""deploy/prometheus/alerts.yml: its promtool unit tests, and no rule watching a metric relay lacks.

`promtool test rules` runs deploy/prometheus/alerts_test.yml (skipped with the reason when
promtool is not installed, a failure instead with RELAY_REQUIRE_PROMTOOL=1, as in CI). The drift
test starts a real `relay serve` and `relay worker --metrics-port`, with a reconciled source
whose first pass has run, and checks that every metric an alert expression names is in their
/metrics output, so the rules cannot drift from the code.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fellow_api import KEY, FellowApiServer
from tests.support.processes import relay_env, relay_processes, wait_until
from tests.support.redis_server import free_port

RULES_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
RULES = RULES_DIR / "alerts.yml"
RULES_TEST = RULES_DIR / "alerts_test.yml"


def promtool() -> str:
    """promtool's path; skip (or fail with RELAY_REQUIRE_PROMTOOL=1) without it."""
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool is not on PATH (apt-get install prometheus)"
        if os.environ.get("RELAY_REQUIRE_PROMTOOL") == "1":
            pytest.fail(f"RELAY_REQUIRE_PROMTOOL=1 but {reason}")
        print(f"skipping: {reason}")
        pytest.skip(reason)
    return found


def test_the_rules_are_valid_and_pass_their_promtool_unit_tests() -> None:
    tool = promtool()
    checked = subprocess.run(
        [tool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [tool, "test", "rules", str(RULES_TEST)], capture_output=True, text=True, timeout=60
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_unit_test() -> None:
    alerts = set(re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), re.MULTILINE))
    tested = set(re.findall(r"^\s*alertname: (\w+)$", RULES_TEST.read_text(), re.MULTILINE))
    assert len(alerts) >= 8
    assert alerts == tested


def expressions(text: str) -> list[str]:
    """The `expr:` of every rule: inline, or the block (`|`, `>`) indented below it."""
    found: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not match:
            continue
        indent, rest = len(match.group(1)), match.group(2).strip()
        if rest and rest[0] not in "|>":
            found.append(rest)
            continue
        block = []
        for following in lines[i + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            block.append(following.strip())
        found.append(" ".join(block))
    return found


def metric_names(expression: str) -> set[str]:
    """The relay metric names an expression reads (label values and functions are not)."""
    without_matchers = re.sub(r"\{[^}]*\}", "", expression)
    return set(re.findall(r"\brelay_[a-z0-9_]+\b", without_matchers))


def test_the_expression_reader_finds_every_metric() -> None:
    exprs = expressions(RULES.read_text())
    assert len(exprs) == len(re.findall(r"^\s*- alert:", RULES.read_text(), re.MULTILINE))
    assert metric_names('sum(rate(relay_a_total{status="503"}[5m])) / relay_b') == {
        "relay_a_total",
        "relay_b",
    }


def exported(text: str) -> set[str]:
    """Every series name an exposition offers, samples or not (a family without samples yet
    still has its # TYPE line): counters with _total, histograms with their parts."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}_{part}" for part in ("bucket", "sum", "count"))
    return names


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
        return str(response.read().decode())


ROUTES = """
[sources.fellow]
kind = "form"
token_env = "FELLOW_TOKEN"
spool = true

[sources.fellow.reconcile]
api = "{api}"
api_key_env = "FELLOW_API_KEY"

[targets.crm]
url = "http://127.0.0.1:9/crm"

[[routes]]
source = "fellow"
events = ["*"]
targets = ["crm"]
"""


@pytest.mark.needs_redis_server
@pytest.mark.timeout(60)
def test_every_metric_the_rules_use_is_exported_by_a_running_relay(
    tmp_path: Path, redis_url: str, fellow_api: FellowApiServer
) -> None:
    wanted = set().union(*(metric_names(e) for e in expressions(RULES.read_text())))
    assert len(wanted) >= 9, wanted
    fellow_api.enrol("course", "7", "m1")
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES.format(api=fellow_api.url))
    env = relay_env(
        redis_url,
        routes,
        FELLOW_TOKEN="fellow-token-0123456789abcdef",
        FELLOW_API_KEY=KEY,
        RELAY_RECONCILE_TICK="0.2",
        RELAY_SPOOL_DIR=str(tmp_path / "spool"),
    )
    port = free_port()
    with relay_processes(tmp_path, env) as procs:
        _, base = procs.serve()
        worker = procs.worker("--metrics-port", str(port))
        receiver_url, worker_url = f"{base}/metrics", f"http://127.0.0.1:{port}/metrics"

        def passed() -> bool:  # the first pass ran: its timestamps are exported too
            return "relay_reconcile_last_success_timestamp_seconds{" in fetch(receiver_url)

        assert wait_until(passed, 20, 0.1), worker.output()
        names = exported(fetch(receiver_url)) | exported(fetch(worker_url))
    missing = sorted(wanted - names)
    assert not missing, f"alerts.yml uses metrics relay does not export: {missing}"
