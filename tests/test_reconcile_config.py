"""`[sources.NAME.reconcile]`: loading, defaults, mistakes with file, table and key; and the
dedupe key a synthesized event claims is the one the receiver computes for Fellow's webhook."""

from __future__ import annotations

import pytest

from relay.config.loading import parse_routes
from relay.config.model import RECONCILE_DEDUPE_KEY, RouteTable
from relay.core.errors import ConfigError
from relay.receiver.accept import Accepted, Request, accept
from relay.store.reconcile import Kind, Membership
from worker.fellow.plan import Change, form_body
from worker.fellow.synth import dedupe_key_of

ENV = {"FELLOW_API_KEY": "fellow-api-key-0123456789"}
BASE = """
[sources.fellow]
kind = "{kind}"
{extra}
[sources.fellow.reconcile]
{reconcile}
"""
GOOD = 'api = "https://academy.example.com/"\napi_key_env = "FELLOW_API_KEY"'


def load(reconcile: str = GOOD, kind: str = "form", extra: str = "") -> RouteTable:
    text = BASE.format(kind=kind, extra=extra, reconcile=reconcile)
    return parse_routes(text, "routes.toml", ENV)


def problems(
    reconcile: str, kind: str = "form", extra: str = "", env: dict[str, str] | None = None
) -> list[str]:
    text = BASE.format(kind=kind, extra=extra, reconcile=reconcile)
    with pytest.raises(ConfigError) as info:
        parse_routes(text, "routes.toml", ENV if env is None else env)
    return [str(p) for p in info.value.problems]


def test_defaults_and_the_default_dedupe() -> None:
    source = load().sources["fellow"]
    config = source.reconcile
    assert config is not None
    assert config.api == "https://academy.example.com"
    assert (config.every, config.grace, config.page_size, config.concurrency) == (900, 300, 100, 8)
    assert (config.id_field, config.completed_field) == ("id", "completed")
    assert config.api_key.reveal() == ENV["FELLOW_API_KEY"]
    assert "fellow-api-key" not in repr(config)
    assert source.dedupe is not None
    assert source.dedupe.key == RECONCILE_DEDUPE_KEY


def test_every_key_is_read() -> None:
    config = (
        load(
            GOOD + '\nevery = "30m"\ngrace = "2m"\nid_field = "memberId"\n'
            'completed_field = "isCompleted"\npage_size = 500\nconcurrency = 16\ntimeout = "10s"'
        )
        .sources["fellow"]
        .reconcile
    )
    assert config is not None
    assert (config.every, config.grace, config.timeout) == (1800, 120, 10)
    assert (config.id_field, config.completed_field) == ("memberId", "isCompleted")
    assert (config.page_size, config.concurrency) == (500, 16)


def test_http_only_for_loopback() -> None:
    assert load('api = "http://127.0.0.1:8123"\napi_key_env = "FELLOW_API_KEY"').sources
    [problem] = problems('api = "http://academy.example.com"\napi_key_env = "FELLOW_API_KEY"')
    assert problem == (
        "routes.toml: [sources.fellow.reconcile.api] must be https (http only for a loopback "
        "address)"
    )


@pytest.mark.parametrize(
    ("reconcile", "key", "words"),
    [
        ('api_key_env = "FELLOW_API_KEY"', "api", "missing"),
        ('api = "https://a.example"', "api_key_env", "missing"),
        ('api = "https://a.example"\napi_key_env = "NOPE_KEY"', "api_key_env", "NOPE_KEY"),
        (GOOD + '\nevery = "10s"', "every", "at least 60s"),
        (GOOD + '\ngrace = "soon"', "grace", "duration"),
        (GOOD + "\npage_size = 1000", "page_size", "1 to 500"),
        (GOOD + "\nconcurrency = 0", "concurrency", "1 to 32"),
        (GOOD + '\nid_field = ""', "id_field", "non-empty"),
        ('api = "https://a.example"\napi_key = "plain-text-key"', "api_key", "environment"),
        (GOOD + "\nevry = 5", "evry", "unknown"),
    ],
)
def test_mistakes_name_file_table_and_key(reconcile: str, key: str, words: str) -> None:
    found = problems(reconcile)
    assert any(
        p.startswith(f"routes.toml: [sources.fellow.reconcile.{key}]") and words in p for p in found
    ), found


def test_form_sources_only_and_dedupe_required() -> None:
    [problem] = problems(GOOD, kind="json")
    assert "form sources only, not json" in problem
    [problem] = problems(GOOD, extra="dedupe = false")
    assert problem.startswith("routes.toml: [sources.fellow.dedupe] a reconciled source needs")
    # A synthesized event has no provider headers: a header part could never match a webhook's.
    [problem] = problems(GOOD, extra='dedupe = { key = ["header:x-id", "body:memberId"] }')
    assert "dedupes on body fields only" in problem


@pytest.mark.parametrize(
    "membership",
    [Membership(Kind.COURSE, "8812", "31337"), Membership(Kind.PROGRAM, "77", "jane@example.com")],
)
@pytest.mark.parametrize("action", ["CREATED", "COMPLETED", "DELETED"])
def test_synthesized_dedupe_key_is_the_receivers(membership: Membership, action: str) -> None:
    table = load()
    source = table.sources["fellow"]
    change = Change(membership, action)
    request = Request(
        source="fellow",
        token=None,
        method="POST",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    decision = accept(table, request, form_body(change), event_id="e1", received_at=1.0)
    assert isinstance(decision, Accepted)
    [event] = decision.events
    assert event.type == change.event
    assert event.dedupe_key
    assert event.dedupe_key == dedupe_key_of(source, change)
