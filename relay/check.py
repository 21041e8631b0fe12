"""`relay check`: validate routes.toml, or dry-run a sample request through it.

    relay check [PATH] [--json] [--allow-missing-env]
    relay check PATH --source S --body FILE [--header K:V ...] [--content-type T] [--method M]

Validation prints every problem as `file: [table.key] message` and exits 1, or a summary and
exits 0; warnings never fail. The dry run feeds the sample to `relay.extract.parse_request`, the
same pure function the receiver runs, and prints each event's type and the targets it reaches.
Secret values are never printed: only the names of the variables that hold them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from relay.config_fields import sort_problems
from relay.decoding import accepted_coding, decode_body
from relay.errors import BadRequest, ConfigError, HTTPError, Problem
from relay.extract import parse_request
from relay.route_table import RouteTable, Source, Target, event_location
from relay.routes import load_routes
from relay.settings import Settings
from relay.signatures import verify_ms_signature
from relay.units import format_duration, format_size

#: Content type a dry run sends when none is given, per source kind.
DEFAULT_CONTENT_TYPES: Mapping[str, str] = {
    "json": "application/json",
    "form": "application/x-www-form-urlencoded",
    "aspnet": "application/json; charset=utf-8",
}

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


# ---------------------------------------------------------------------------------------------
# Validation


@dataclass(frozen=True)
class CheckResult:
    """What `relay check PATH` found: the table when valid, problems, and warnings."""

    path: str
    table: RouteTable | None
    problems: tuple[Problem, ...]
    warnings: tuple[Problem, ...]  # includes `unset`
    unset: tuple[Problem, ...] = ()  # unset variables, when allowed (otherwise problems)
    raw: Mapping[str, Any] = field(default_factory=dict)  # the TOML document, for variable names

    @property
    def ok(self) -> bool:
        """Whether relay would start with this file."""
        return not self.problems


def check_file(path: str, env: Mapping[str, str], require_env: bool = True) -> CheckResult:
    """Validate routes.toml at `path`; missing variables are warnings when not `require_env`."""
    try:
        table = load_routes(path, env)
        strict: list[Problem] = []
    except ConfigError as exc:
        table, strict = None, exc.problems
    soft: list[Problem] = []
    if table is None and not require_env:
        try:
            table = load_routes(path, env, require_env=False)
            lax: list[Problem] = []
        except ConfigError as exc:
            lax = exc.problems
        # What only the strict load complains about is exactly the missing variables.
        soft = [p for p in strict if p not in lax]
        strict = lax
    raw = _raw_document(path) if table is not None else {}
    warnings = soft + (lint(table, raw) if table is not None else [])
    return CheckResult(
        path=path,
        table=table,
        problems=tuple(sort_problems(strict)),
        warnings=tuple(sort_problems(warnings)),
        unset=tuple(sort_problems(soft)),
        raw=raw,
    )


def _raw_document(path: str) -> Mapping[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def lint(table: RouteTable, raw: Mapping[str, Any] | None = None) -> list[Problem]:
    """Things that work but are probably not meant: unused names, unauthenticated sources."""
    raw = raw or {}
    warnings: list[Problem] = []

    def warn(where: str, message: str) -> None:
        warnings.append(Problem(table.path, where, "", message))

    used_sources = {r.source for r in table.routes}
    used_targets = {t for r in table.routes for t in r.targets}
    for name, source in table.sources.items():
        if name not in used_sources:
            warn(f"sources.{name}", "no route takes events from it: they are recorded as unrouted")
        names_token = bool(_var_name(raw, "sources", name, "token"))
        if source.token is None and source.secret is None and not names_token:
            warn(
                f"sources.{name}",
                "no token_env: anyone who can reach the relay can post events as this source",
            )
    for name, target in table.targets.items():
        if name not in used_targets:
            warn(f"targets.{name}", "no route sends events to it")
        parts = urlsplit(target.url)
        if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
            warn(f"targets.{name}", "plain http to a remote host: use https")
    return warnings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _var_name(raw: Mapping[str, Any], kind: str, name: str, key: str) -> str | None:
    """The environment variable a table's `key_env` or `key = "${VAR}"` names, if any."""
    data = raw.get(kind, {}).get(name, {}) if isinstance(raw.get(kind), Mapping) else {}
    if not isinstance(data, Mapping):
        return None
    by_env, direct = data.get(f"{key}_env"), data.get(key)
    if isinstance(by_env, str) and by_env:
        return by_env
    if isinstance(direct, str) and direct.startswith("${") and direct.endswith("}"):
        return direct[2:-1]
    return None


def _shown_var(result: CheckResult, kind: str, name: str, key: str) -> str | None:
    var = _var_name(result.raw, kind, name, key)
    if var is None:
        return None
    missing = result.table is not None and var in result.table.missing_env
    return f"${var}" + (" (not set)" if missing else "")


def show_url(url: str) -> str:
    """A target URL for display: the query may carry a downstream app's key, so it is hidden."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="...")) if parts.query else url


def _source_summary(result: CheckResult, source: Source) -> dict[str, Any]:
    assert result.table is not None
    table = result.table
    token = _shown_var(result, "sources", source.name, "token")
    return {
        "kind": source.kind,
        "event": event_location(source),
        "methods": list(source.methods),
        "path": f"/hooks/{source.name}" + (f"/<{token.split()[0]}>" if token else ""),
        "token": token,
        "secret": _shown_var(result, "sources", source.name, "secret"),
        "max_body": format_size(source.max_body),
        "dedupe": (
            {"key": list(source.dedupe.key), "window": format_duration(source.dedupe.window)}
            if source.dedupe
            else None
        ),
        "spool": source.spool,
        "routes": [
            {"events": list(r.events), "targets": list(r.targets)}
            for r in table.routes_of(source.name)
        ],
        "reaches": list(table.reachable(source.name)),
    }


def _target_summary(result: CheckResult, target: Target) -> dict[str, Any]:
    assert result.table is not None
    fed_by = dict.fromkeys(r.source for r in result.table.routes if target.name in r.targets)
    return {
        "url": show_url(target.url),
        "timeout": format_duration(target.timeout),
        "signing": _shown_var(result, "targets", target.name, "signing_secret"),
        "keys": len(target.signing_secrets),
        "retry": {
            "attempts": target.retry.attempts,
            "first": format_duration(target.retry.first),
            "max": format_duration(target.retry.max),
        },
        "headers": [name for name, _ in target.headers],
        "body": target.body,
        "pause_on_gone": target.pause_on_gone,
        "fed_by": list(fed_by),
    }


def result_json(result: CheckResult) -> dict[str, Any]:
    """The machine-readable form of a check (`--json`)."""

    def problems(items: Sequence[Problem]) -> list[dict[str, str]]:
        return [
            {"file": p.file, "table": p.table, "key": p.key, "message": p.message, "text": str(p)}
            for p in items
        ]

    out: dict[str, Any] = {
        "ok": result.ok,
        "path": result.path,
        "problems": problems(result.problems),
        "warnings": problems(result.warnings),
    }
    if result.table is not None and result.ok:
        table = result.table
        out["sources"] = {n: _source_summary(result, s) for n, s in table.sources.items()}
        out["targets"] = {n: _target_summary(result, t) for n, t in table.targets.items()}
        out["routes"] = [
            {"source": r.source, "events": list(r.events), "targets": list(r.targets)}
            for r in table.routes
        ]
    return out


def render_check(result: CheckResult) -> str:
    """The human report of a check."""
    lines: list[str] = []
    if not result.ok:
        lines.extend(str(p) for p in result.problems)
        lines.extend(f"warning: {p}" for p in result.warnings)
        count = len(result.problems)
        lines.append(
            f"{result.path}: {count} problem{'s' if count != 1 else ''}; relay would not start"
        )
        return "\n".join(lines) + "\n"
    assert result.table is not None
    table = result.table
    lines.append(
        f"{result.path}: OK: {_plural(len(table.sources), 'source')}, "
        f"{_plural(len(table.targets), 'target')}, {_plural(len(table.routes), 'route')}"
    )
    for name, source in table.sources.items():
        info = _source_summary(result, source)
        lines.append("")
        lines.append(f"source {name} ({source.kind})")
        lines.append(f"  url      {'|'.join(source.methods)} {info['path']}")
        lines.append(f"  event    {info['event']}")
        auth = []
        if info["token"]:
            auth.append(f"path token from {info['token']}")
        if info["secret"]:
            auth.append(f"ms-signature keyed by {info['secret']}")
        lines.append(f"  auth     {', '.join(auth) or 'none'}")
        extras = [f"max body {info['max_body']}"]
        if source.dedupe:
            extras.append(
                f"dedupe on {', '.join(source.dedupe.key)} for {info['dedupe']['window']}"
            )
        if source.spool:
            extras.append("spools to disk while Redis is down")
        lines.append(f"  intake   {'; '.join(extras)}")
        for route in info["routes"]:
            lines.append(
                f"  route    {', '.join(route['events'])} -> {', '.join(route['targets'])}"
            )
        lines.append(f"  reaches  {', '.join(info['reaches']) or 'nothing (unrouted)'}")
    for name, target in table.targets.items():
        info = _target_summary(result, target)
        lines.append("")
        lines.append(f"target {name}")
        lines.append(f"  url      {info['url']}")
        signing = info["signing"]
        lines.append(
            f"  signing  Standard Webhooks, key from {signing}"
            if signing
            else "  signing  unsigned"
        )
        retry = info["retry"]
        lines.append(
            f"  delivery timeout {info['timeout']}; {retry['attempts']} attempts, "
            f"backoff from {retry['first']} up to {retry['max']}"
            + ("; a 410 pauses it" if target.pause_on_gone else "")
        )
        if info["headers"] or target.body != "original":
            lines.append(
                f"  extra    headers: {', '.join(info['headers']) or 'none'}; body: {target.body}"
            )
        lines.append(f"  fed by   {', '.join(info['fed_by']) or 'no source'}")
    if result.warnings:
        lines.append("")
        lines.extend(f"warning: {p}" for p in result.warnings)
    return "\n".join(lines) + "\n"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


# ---------------------------------------------------------------------------------------------
# Dry run


@dataclass(frozen=True)
class DryEvent:
    """One event a sample request yields."""

    type: str | None
    dedupe: str | None
    targets: tuple[str, ...]


@dataclass(frozen=True)
class DryRun:
    """What the receiver would do with one sample request."""

    source: str
    method: str
    content_type: str
    status: int  # the HTTP status the receiver would answer
    message: str  # why, when it is not 202
    signature: str = ""  # aspnet: what became of the ms-signature check
    events: tuple[DryEvent, ...] = ()

    @property
    def accepted(self) -> bool:
        """Whether the receiver would take the request (or answer its handshake)."""
        return self.status < 300


def default_content_type(source: Source, body: bytes) -> str:
    """The content type a provider of this kind sends, guessed from the body where it varies."""
    if source.kind in DEFAULT_CONTENT_TYPES:
        return DEFAULT_CONTENT_TYPES[source.kind]
    looks_json = body.lstrip()[:1] in (b"{", b"[")
    if source.kind == "json_or_form":
        return "application/json" if looks_json else "application/x-www-form-urlencoded"
    return "application/json" if looks_json else "application/octet-stream"


def dry_run(
    table: RouteTable,
    source_name: str,
    body: bytes,
    headers: Mapping[str, str],
    content_type: str | None = None,
    method: str = "POST",
) -> DryRun:
    """Run a sample through the receiver's pure steps; `headers` must be lower-cased."""
    method = method.upper()
    source = table.sources.get(source_name)
    if source is None:
        known = ", ".join(table.sources) or "none"
        return DryRun(source_name, method, "", 404, f"no source named '{source_name}' ({known})")
    ctype = content_type or headers.get("content-type") or default_content_type(source, body)

    def answer(status: int, message: str, signature: str = "") -> DryRun:
        return DryRun(source.name, method, ctype, status, message, signature)

    if method == "GET" and source.kind == "aspnet":
        return answer(200, "the ASP.NET WebHooks ?echo= handshake: no event is recorded")
    if method not in source.methods:
        return answer(405, f"source '{source.name}' takes {', '.join(source.methods)}")
    if source.kind == "resthooks" and "x-hook-secret" in headers:
        return answer(200, "the REST Hooks X-Hook-Secret handshake: no event is recorded")
    sent = body  # the bytes as sent: what ms-signature is over
    coding = None
    try:
        # As the receiver does: 415 for a coding the source does not take, then decoded within
        # max_body (413 once it passes, 400 when it does not decode).
        if "content-encoding" in headers:
            coding = accepted_coding(headers["content-encoding"], source.content_encodings)
        if coding is not None:
            body = decode_body(coding, body, source.max_body)
    except HTTPError as exc:
        return answer(int(exc.status), exc.message)
    if coding is None and len(body) > source.max_body:
        limit = format_size(source.max_body)
        return answer(413, f"the body is {len(body)} bytes; this source takes at most {limit}")
    signature = ""
    rejection: HTTPError | None = None
    if source.kind == "aspnet":
        # The receiver checks the signature before it parses the body.
        signature, rejection = _check_ms_signature(source, sent, headers)
    try:
        parsed = parse_request(source, ctype, headers, body)
    except HTTPError as exc:
        first = rejection or exc
        return answer(int(first.status), first.message, signature)
    events = tuple(
        DryEvent(p.type, p.dedupe_value, table.match(source.name, p.type)) for p in parsed
    )
    if rejection is not None:
        status, message = int(rejection.status), rejection.message
    else:
        status, message = 202, "accepted"
    return DryRun(source.name, method, ctype, status, message, signature, events)


def _check_ms_signature(
    source: Source, body: bytes, headers: Mapping[str, str]
) -> tuple[str, HTTPError | None]:
    """(what to say about the signature, the receiver's rejection or None)."""
    header = headers.get("ms-signature")
    if source.secret is None:
        if header is None:
            missing = BadRequest("the ms-signature header is missing")
            return "missing (pass --header ms-signature:sha256=...)", missing
        return "not verified: the secret's environment variable is not set", None
    try:
        verify_ms_signature(source.secret.reveal(), body, header)
    except HTTPError as exc:
        return f"rejected: {exc.message}", exc
    return f"verified with ${source.secret.name}", None


def dry_run_json(run: DryRun) -> dict[str, Any]:
    """The machine-readable form of a dry run (`--json`)."""
    return {
        "source": run.source,
        "method": run.method,
        "content_type": run.content_type,
        "status": run.status,
        "accepted": run.accepted,
        "message": run.message,
        "signature": run.signature or None,
        "events": [
            {"type": e.type, "dedupe": e.dedupe, "targets": list(e.targets)} for e in run.events
        ],
    }


def render_dry_run(run: DryRun) -> str:
    """The human report of a dry run."""
    lines = [f"{run.method} /hooks/{run.source}  content-type: {run.content_type or '-'}"]
    if run.signature:
        lines.append(f"ms-signature: {run.signature}")
    if run.status == 202:
        lines.append(f"the receiver would answer 202 with {_plural(len(run.events), 'event')}")
    else:
        lines.append(f"the receiver would answer {run.status}: {run.message}")
        if run.events:
            lines.append("were it accepted, the body yields:")
    for index, event in enumerate(run.events, 1):
        kind = event.type if event.type is not None else "none: recorded as unrouted"
        lines.append(f"event {index}: {kind}")
        if event.dedupe is not None:
            lines.append(f"  dedupe   {event.dedupe.replace(chr(0x1F), ' | ')}")
        if event.type is not None:
            lines.append(f"  targets  {', '.join(event.targets) or 'none: recorded as unrouted'}")
    return "\n".join(lines) + "\n"


def parse_header(text: str) -> tuple[str, str]:
    """`("x-event-type", "enrollment.create")` from `"X-Event-Type: enrollment.create"`."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"--header {text!r}: write NAME:VALUE")
    return name.strip().lower(), value.strip()


# ---------------------------------------------------------------------------------------------
# The command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `relay check`."""
    parser.add_argument(
        "path", nargs="?", help="routes.toml to check (default: $RELAY_ROUTES or ./routes.toml)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON report for scripts")
    parser.add_argument(
        "--allow-missing-env",
        action="store_true",
        help="report unset environment variables as warnings, not problems (CI without secrets)",
    )
    dry = parser.add_argument_group("dry run: what would a sample request do?")
    dry.add_argument("--source", help="the source the sample is posted to")
    dry.add_argument("--body", metavar="FILE", help="the sample body ('-' reads stdin)")
    dry.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="K:V",
        help="a request header (repeatable), e.g. x-event-type:enrollment.create",
    )
    dry.add_argument("--content-type", help="default: what the source's kind takes")
    dry.add_argument("--method", default="POST", help="default: POST")


def run(args: argparse.Namespace) -> int:
    """Run `relay check`: validate, or dry-run when --source is given."""
    env = os.environ
    path = args.path
    if path is None:
        try:
            path = Settings.from_env(env).routes_path
        except ConfigError as exc:
            return _print_problems(exc.problems, as_json=args.json)
    if args.source is None and args.body is None:
        result = check_file(path, env, require_env=not args.allow_missing_env)
        _out(orjson_text(result_json(result)) if args.json else render_check(result))
        return EXIT_OK if result.ok else EXIT_PROBLEMS
    if args.source is None or args.body is None:
        sys.stderr.write("relay check: a dry run needs both --source and --body\n")
        return EXIT_USAGE
    try:
        headers = dict(parse_header(h) for h in args.header)
        body = sys.stdin.buffer.read() if args.body == "-" else Path(args.body).read_bytes()
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"relay check: {exc}\n")
        return EXIT_USAGE
    # A dry run works without the production secrets: unset ones are noted, not fatal.
    result = check_file(path, env, require_env=False)
    if not result.ok or result.table is None:
        return _print_problems(list(result.problems), as_json=args.json)
    outcome = dry_run(result.table, args.source, body, headers, args.content_type, args.method)
    if args.json:
        _out(orjson_text(dry_run_json(outcome)))
    else:
        notes = "".join(f"note: {p}\n" for p in result.unset)
        _out(notes + render_dry_run(outcome))
    return EXIT_OK if outcome.accepted else EXIT_PROBLEMS


def _print_problems(problems: Sequence[Problem], as_json: bool) -> int:
    if as_json:
        items = [
            {"file": p.file, "table": p.table, "key": p.key, "message": p.message, "text": str(p)}
            for p in problems
        ]
        _out(orjson_text({"ok": False, "problems": items}))
    else:
        _out("".join(f"{p}\n" for p in problems))
    return EXIT_PROBLEMS


def orjson_text(data: Any) -> str:
    """Indented JSON text with a final newline."""
    return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n"


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
