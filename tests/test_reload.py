"""Live reloads of routes.toml: valid edits take effect, invalid ones change nothing."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import orjson
from structlog.testing import capture_logs

from relay.config.model import RouteTable
from relay.config.reload import RouteReloader
from tests.support.processes import post, relay_env, relay_processes, wait_until

BASE = """
[sources.chalk]
kind = "json"

[targets.crm]
url = "http://127.0.0.1:9/crm"

[targets.erp]
url = "http://127.0.0.1:9/erp"

[[routes]]
source = "chalk"
events = ["{pattern}"]
targets = ["{target}"]
"""
JSON = {"Content-Type": "application/json"}


def write(path: Path, pattern: str = "element_*", target: str = "crm") -> None:
    path.write_text(BASE.replace("{pattern}", pattern).replace("{target}", target))


def test_valid_edit_is_applied_and_invalid_edit_is_not(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    write(path)
    applied: list[RouteTable] = []
    reloader = RouteReloader(path, applied.append, env={})
    assert reloader.poll() is False  # nothing changed since it was created

    write(path, target="erp")
    assert reloader.poll() is True
    assert applied[-1].match("chalk", "element_published") == ("erp",)

    path.write_text(BASE.replace("{pattern}", "x").replace("{target}", "nosuch"))
    with capture_logs() as logs:
        assert reloader.poll() is False
    assert len(applied) == 1
    assert reloader.rejected == 1
    (line,) = [e for e in logs if e["event"] == "routes_reload_rejected"]
    assert any("no target named 'nosuch'" in p for p in line["problems"])
    assert reloader.poll() is False  # the same invalid content is not reported again


def test_missing_file_keeps_the_routes_in_force(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    write(path)
    applied: list[RouteTable] = []
    reloader = RouteReloader(path, applied.append, env={})
    path.unlink()
    assert reloader.poll() is False
    assert reloader.reload() is False  # an explicit SIGHUP with no file: rejected, logged
    assert applied == []
    assert reloader.rejected == 1


def test_running_receiver_follows_edits_and_sighup(tmp_path: Path, redis_url: str) -> None:
    path = tmp_path / "routes.toml"
    write(path, pattern="element_*", target="crm")
    with relay_processes(tmp_path, relay_env(redis_url, path)) as procs:
        serve, base = procs.serve()

        def targets_of(event: str) -> list[str]:
            status, body = post(f"{base}/hooks/chalk", orjson.dumps({"event": event}), JSON)
            assert status == 202, body
            return list(orjson.loads(body)["events"][0]["targets"])

        assert targets_of("element_published") == ["crm"]
        assert targets_of("user_created") == []

        # A valid edit: picked up by the file watch, no signal needed.
        write(path, pattern="user_*", target="erp")
        assert wait_until(lambda: targets_of("user_created") == ["erp"], 15)
        assert targets_of("element_published") == []

        # An invalid edit: logged, and the routes in force stay.
        path.write_text(BASE.replace("{pattern}", "*").replace("{target}", "nosuch"))
        assert wait_until(lambda: "routes_reload_rejected" in serve.output(), 15)
        assert targets_of("user_created") == ["erp"]

        # SIGHUP reloads at once (same content as on disk: still rejected, still in force).
        os.kill(serve.pid, signal.SIGHUP)
        assert wait_until(lambda: serve.output().count("routes_reload_rejected") >= 2, 15)
        write(path, pattern="*", target="crm")
        os.kill(serve.pid, signal.SIGHUP)
        assert wait_until(lambda: targets_of("anything") == ["crm"], 15)
        assert serve.alive()
