"""Route filters end to end: a real `relay serve` and `relay worker`, real loopback targets.

A filtered event reaches only the targets of the routes whose filters it passes, as stored at
intake (the 202 answer), as delivered, and as `relay check`'s dry run predicts; an edit of a
filter in routes.toml is in force after the receiver's reload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.check_cli import run_check
from tests.support.processes import post, relay_env, relay_processes, wait_until
from tests.support.targets import TargetServer

ROUTES = """
[sources.lms]
kind = "json"
event = "type"

[targets.archive]
url = "{archive}"

[targets.acme]
url = "{acme}"

[targets.all]
url = "{all}"

[[routes]]
source = "lms"
events = ["course.*"]
targets = ["archive"]
filter = {{ "body:course.id" = {courses} }}

[[routes]]
source = "lms"
events = ["course.*"]
targets = ["acme"]
filter = {{ "header:x-tenant" = "acme", "body:course.id" = ["*"] }}

[[routes]]
source = "lms"
events = ["*"]
targets = ["all"]
"""

#: (body, headers, the targets it must reach)
CASES: list[tuple[dict[str, Any], dict[str, str], list[str]]] = [
    ({"type": "course.completed", "course": {"id": 42}}, {"x-tenant": "acme"}, ["archive", "acme"]),
    ({"type": "course.completed", "course": {"id": "71"}}, {}, ["archive"]),
    ({"type": "course.completed", "course": {"id": "9"}}, {"x-tenant": "acme"}, ["acme"]),
    ({"type": "course.completed", "course": {"id": "9"}}, {"x-tenant": "ACME"}, []),
    ({"type": "course.completed"}, {"x-tenant": "acme"}, []),  # no course.id: missing
    ({"type": "user.created", "course": {"id": 42}}, {"x-tenant": "acme"}, []),
]


def write_routes(path: Path, targets: TargetServer, courses: list[str]) -> None:
    path.write_text(
        ROUTES.format(
            archive=targets.url("/ok/archive"),
            acme=targets.url("/ok/acme"),
            all=targets.url("/ok/all"),
            courses=orjson.dumps(courses).decode(),
        )
    )


def send(base: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[str, list[str]]:
    status, answer = post(
        f"{base}/hooks/lms", orjson.dumps(body), {"content-type": "application/json", **headers}
    )
    assert status == 202, answer
    [event] = orjson.loads(answer)["events"]
    return str(event["id"]), list(event["targets"])


@pytest.mark.timeout(60)
def test_serve_routes_a_filtered_event_only_to_the_routes_it_passes(
    tmp_path: Path, redis_url: str, targets: TargetServer
) -> None:
    path = tmp_path / "routes.toml"
    write_routes(path, targets, ["42", "7*"])
    with relay_processes(tmp_path, relay_env(redis_url, path)) as procs:
        _, base = procs.serve()
        procs.worker()
        sent = []
        for body, headers, expected in CASES:
            event_id, stored = send(base, body, headers)
            assert stored == [*expected, "all"], (body, headers)
            sent.append((event_id, [*expected, "all"]))

            # `relay check` predicts the same targets, from the same file.
            sample = tmp_path / "sample.json"
            sample.write_bytes(orjson.dumps(body))
            argv = [f"--header={k}:{v}" for k, v in headers.items()]
            code, out = run_check(str(path), "--source", "lms", "--body", str(sample), *argv)
            assert code == 0
            assert f"  targets  {', '.join([*expected, 'all'])}\n" in out

        # Every delivery arrives at exactly the targets stored, and nowhere else.
        total = sum(len(t) for _, t in sent)
        received = targets.wait_for(lambda got: len(got) >= total, 30)
        delivered = sorted((r.headers["webhook-id"], r.name) for r in received)
        assert delivered == sorted((i, name) for i, names in sent for name in names)

        # An edit of the filter is in force once the receiver reloads the file.
        write_routes(path, targets, ["9"])
        body, headers, _ = CASES[2]  # course 9, tenant acme
        assert wait_until(lambda: send(base, body, headers)[1] == ["archive", "acme", "all"], 15)
        assert send(base, *CASES[0][:2])[1] == ["acme", "all"]  # course 42: no longer archived
