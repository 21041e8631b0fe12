"""routes.toml as data for the API: every setting, and each secret only as its variable's name.

Pure functions of the loaded RouteTable. A `Secret` is shown by `name` (the environment variable
it came from), never revealed.
"""

from __future__ import annotations

from typing import Any

from relay.config.model import RouteTable, Source, Target
from relay.core.secrets import Secret


def _env(secret: Secret | None) -> str | None:
    return (secret.name or None) if secret is not None else None


def source_config(source: Source) -> dict[str, Any]:
    """One [sources.NAME] table."""
    return {
        "kind": str(source.kind),
        "event": source.event,
        "methods": list(source.methods),
        "path": f"/hooks/{source.name}" + ("/{token}" if source.token is not None else ""),
        "token_env": _env(source.token),
        "secret_env": _env(source.secret),
        "max_body": source.max_body,
        "spool": source.spool,
        "call_once": source.call_once,
        "content_encodings": [str(c) for c in source.content_encodings],
        "dedupe": None
        if source.dedupe is None
        else {"key": list(source.dedupe.key), "window_s": source.dedupe.window},
        "reconcile": None
        if source.reconcile is None
        else {"api": source.reconcile.api, "api_key_env": _env(source.reconcile.api_key)},
    }


def target_config(target: Target) -> dict[str, Any]:
    """One [targets.NAME] table."""
    return {
        "url": target.url,  # never holds credentials: routes.toml refuses them
        "timeout_s": target.timeout,
        "signing_secret_env": [s.name for s in target.signing_secrets if s.name],
        "headers": [{"name": name, "env": _env(value)} for name, value in target.headers],
        "retry": {
            "attempts": target.retry.attempts,
            "first_s": target.retry.first,
            "max_s": target.retry.max,
        },
        "body": target.body,
        "pause_on_gone": target.pause_on_gone,
        # Delivery control (docs/delivery-control.md) as written in routes.toml; null: none.
        "rate": target.rate.text if target.rate is not None else None,
        "concurrency": target.concurrency,
        "order": target.order.text if target.order is not None else None,
        "breaker": None
        if target.breaker is None
        else {"failures": target.breaker.failures, "probe_s": target.breaker.probe},
        "enrich": target.enrich,
    }


def routes_document(table: RouteTable) -> dict[str, Any]:
    """The whole file."""
    return {
        "path": table.path,
        "sources": {name: source_config(s) for name, s in table.sources.items()},
        "targets": {name: target_config(t) for name, t in table.targets.items()},
        "routes": [
            {"source": r.source, "events": list(r.events), "targets": list(r.targets)}
            for r in table.routes
        ],
        "missing_env": list(table.missing_env),
    }
