"""`relay subscribe`: manage a provider's webhook subscriptions from the command line (Elucidat).

    relay subscribe elucidat --event release_course --callback https://relay.example.com/hooks/elucidat/T
    relay subscribe elucidat --unsubscribe --event release_course
    relay subscribe elucidat --list

Calls are dry runs (`simulation_mode=simulation`) unless `--live` is given. The API keys come from
ELUCIDAT_PUBLIC_KEY and ELUCIDAT_PRIVATE_KEY and are never printed; path tokens in callback URLs
are masked in the human output. Exit status: 0 done, 1 Elucidat refused or could not be reached,
2 a usage or configuration mistake (nothing was sent).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import structlog

from relay.cli.common import UsageError, redact_url
from relay.core.logs import configure_logging
from relay.core.secrets import Secret
from relay.ops.providers import elucidat

log = structlog.get_logger("relay.subscribe")

PROVIDERS = ("elucidat",)
PUBLIC_KEY_ENV = "ELUCIDAT_PUBLIC_KEY"
PRIVATE_KEY_ENV = "ELUCIDAT_PRIVATE_KEY"
API_ROOT_ENV = "ELUCIDAT_API_ROOT"

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2

#: A relay hook path with its token: /hooks/<source>/<token>.
_HOOK_PATH = re.compile(r"^/hooks/[^/]+/[^/]+")
_URL_IN_TEXT = re.compile(r"https?://[^\s\"'<>]+")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `relay subscribe`."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  relay subscribe elucidat --event release_course \\\n"
        "      --callback https://relay.example.com/hooks/elucidat/TOKEN        (dry run)\n"
        "  relay subscribe elucidat --event release_course --callback URL --live\n"
        "  relay subscribe elucidat --unsubscribe --event release_course --live\n"
        "  relay subscribe elucidat --list\n\n"
        f"environment: {PUBLIC_KEY_ENV}, {PRIVATE_KEY_ENV} (required), "
        f"{API_ROOT_ENV} (default {elucidat.DEFAULT_API_ROOT})"
    )
    parser.add_argument("provider", choices=PROVIDERS, help="the provider (only elucidat so far)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--list", action="store_true", help="list the subscriptions of these API keys"
    )
    action.add_argument(
        "--unsubscribe", action="store_true", help="remove the subscription to --event"
    )
    parser.add_argument("--event", help=f"event name: {', '.join(elucidat.EVENTS)}")
    parser.add_argument(
        "--callback",
        metavar="URL",
        help="the relay URL Elucidat will call: https://<relay host>/hooks/<source>/<token>",
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="really change the subscription (default: Elucidat's simulation mode, a dry run)",
    )
    parser.add_argument(
        "--force-event",
        action="store_true",
        help="send an event name relay does not know (one Elucidat added since)",
    )
    parser.add_argument(
        "--insecure-callback",
        action="store_true",
        help="allow an http:// callback (local tests only: Elucidat requires https)",
    )
    parser.add_argument("--json", action="store_true", help="print Elucidat's answer as JSON")
    parser.add_argument(
        "--timeout",
        type=float,
        default=elucidat.DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"per-request timeout (default {elucidat.DEFAULT_TIMEOUT:g})",
    )


# ---------------------------------------------------------------------------------------------
# Pure checks


def event_problem(event: str, force: bool) -> str | None:
    """Why an event name should not be sent, with a did-you-mean; None when it is fine."""
    if not event.strip():
        return "--event must not be empty"
    if event in elucidat.EVENTS or force:
        return None
    close = difflib.get_close_matches(event, elucidat.EVENTS, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return (
        f"unknown Elucidat event {event!r} (known: {', '.join(elucidat.EVENTS)}){hint} "
        "Use --force-event to send it anyway."
    )


def callback_problem(url: str, insecure: bool) -> str | None:
    """Why a callback URL cannot be given to Elucidat (https, a domain name, a path), or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"--callback is not a valid URL: {exc}"
    allowed = ("https", "http") if insecure else ("https",)
    if parts.scheme not in allowed:
        if parts.scheme == "http":
            return "--callback must be https:// (http:// only with --insecure-callback, for tests)"
        return "--callback must be an https:// URL"
    host = parts.hostname or ""
    if not host:
        return "--callback has no host"
    if "." not in host and not insecure:
        return f"--callback host {host!r} is not a fully-qualified domain name (Elucidat needs one)"
    if parts.username or parts.password:
        return "--callback must not carry credentials; use a path token (/hooks/<source>/<token>)"
    if parts.path in ("", "/"):
        return "--callback needs a path (Elucidat requires one): /hooks/<source>/<token>"
    if parts.fragment:
        return "--callback must not have a #fragment"
    return None


def callback_warnings(url: str) -> list[str]:
    """Advice about a usable callback: a relay hook path without its token is guessable."""
    path = urlsplit(url).path
    if path.startswith("/hooks/") and not _HOOK_PATH.match(path):
        return [
            "the callback has no path token: Elucidat does not sign its calls, so anyone who "
            "learns this URL can post events; use /hooks/<source>/<token> with token_env set"
        ]
    return []


def redact(value: Any) -> Any:
    """A JSON value with every URL inside its strings redacted (hook tokens, passwords)."""
    if isinstance(value, str):
        return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), value)
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------------------------
# The command


def _keys(env: Mapping[str, str]) -> tuple[Secret, Secret]:
    missing = [name for name in (PUBLIC_KEY_ENV, PRIVATE_KEY_ENV) if not env.get(name, "").strip()]
    if missing:
        raise UsageError(
            f"{' and '.join(missing)} not set: export your Elucidat account's API keys "
            "(public and private) before running relay subscribe"
        )
    return (
        Secret(env[PUBLIC_KEY_ENV].strip(), name=PUBLIC_KEY_ENV),
        Secret(env[PRIVATE_KEY_ENV].strip(), name=PRIVATE_KEY_ENV),
    )


def _check_arguments(args: argparse.Namespace) -> str:
    """Which call the arguments ask for: 'subscribe', 'unsubscribe' or 'list'."""
    if args.list:
        if args.event or args.callback:
            raise UsageError("--list takes neither --event nor --callback")
        return "list"
    if not args.event:
        what = "--unsubscribe needs --event" if args.unsubscribe else "--event is required"
        raise UsageError(f"{what} (or use --list)")
    problem = event_problem(args.event, args.force_event)
    if problem:
        raise UsageError(problem)
    if args.unsubscribe:
        if args.callback:
            raise UsageError("--unsubscribe takes only --event (one subscription per event)")
        return "unsubscribe"
    if not args.callback:
        raise UsageError("--callback URL is required to subscribe")
    problem = callback_problem(args.callback, args.insecure_callback)
    if problem:
        raise UsageError(problem)
    return "subscribe"


def _client(args: argparse.Namespace, env: Mapping[str, str]) -> elucidat.ElucidatClient:
    if not args.timeout > 0:
        raise UsageError("--timeout must be more than 0 seconds")
    public, private = _keys(env)
    root = env.get(API_ROOT_ENV, "").strip() or elucidat.DEFAULT_API_ROOT
    problem = elucidat.api_root_problem(root)
    if problem:
        raise UsageError(f"{API_ROOT_ENV}: {problem}")
    return elucidat.ElucidatClient(public, private, api_root=root, timeout=args.timeout)


def _print_answer(args: argparse.Namespace, response: elucidat.Response, summary: str) -> None:
    if args.json:
        data = response.data if response.data is not None else {"text": response.text}
        print(json.dumps(data, indent=2, sort_keys=True))
        return
    print(summary)
    if isinstance(response.data, dict) and response.data.get("message"):
        print(f"Elucidat says: {redact(str(response.data['message']))}")


def _print_list(args: argparse.Namespace, response: elucidat.Response) -> None:
    if args.json:
        data = response.data if response.data is not None else {"text": response.text}
        print(json.dumps(data, indent=2, sort_keys=True))
        return
    print(f"Subscriptions of these API keys (HTTP {response.status}):")
    if response.data is None:
        print(redact(response.text.strip()) or "(empty answer)")
    else:
        print(json.dumps(redact(response.data), indent=2, sort_keys=True))


def execute(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run the command against `env`; raise UsageError or ElucidatError on failure."""
    action = _check_arguments(args)
    client = _client(args, env)
    simulate = not args.live
    mode = "simulation (dry run)" if simulate else "live"
    if action == "list":
        _print_list(args, client.subscriptions())
        return EXIT_OK
    if action == "unsubscribe":
        response = client.unsubscribe(args.event, simulate=simulate)
        log.info("elucidat_unsubscribed", event_type=args.event, mode=mode, status=response.status)
        summary = f"Unsubscribed {args.event} [{mode}, HTTP {response.status}]"
    else:
        for warning in callback_warnings(args.callback):
            print(f"relay subscribe: warning: {warning}", file=sys.stderr)
        response = client.subscribe(args.event, args.callback, simulate=simulate)
        shown = redact_url(args.callback)
        log.info("elucidat_subscribed", event_type=args.event, mode=mode, status=response.status)
        summary = f"Subscribed {args.event} -> {shown} [{mode}, HTTP {response.status}]"
    _print_answer(args, response, summary)
    if simulate and not args.json:
        print("Nothing was changed: Elucidat ran it in simulation mode. Add --live to do it.")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Entry point of `relay subscribe`."""
    env = os.environ
    configure_logging(env.get("RELAY_LOG_LEVEL", "warning"), env.get("RELAY_LOG_FORMAT", "auto"))
    try:
        return execute(args, env)
    except UsageError as exc:
        print(f"relay subscribe: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except elucidat.ElucidatError as exc:
        print(f"relay subscribe: {redact(exc.message)}", file=sys.stderr)
        return EXIT_REFUSED
