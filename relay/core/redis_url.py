"""REDIS_URL: the plain schemes redis-py reads itself, and the Sentinel URLs it does not.

    redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB][?OPTIONS]
    rediss+sentinel://...   the same, with TLS to the Sentinels and to the Redis servers

The hosts are Sentinels (port 26379 when left out); SERVICE is the name the Sentinels monitor
(`sentinel monitor SERVICE ...`); DB defaults to 0. USER and PASSWORD are those of the Redis
servers (primary and replicas). OPTIONS: `sentinel_password` and `sentinel_username` when the
Sentinels themselves ask for AUTH, and for TLS `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`,
`ssl_cert_reqs` (none | optional | required).

Pure: parsing never connects anywhere. It lives in the kernel because both relay.config (which
reports a bad REDIS_URL at start-up) and relay.store (which builds the clients) read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, unquote

from relay.core.secrets import Secret

__all__ = [
    "DEFAULT_SENTINEL_PORT",
    "PLAIN_SCHEMES",
    "SENTINEL_SCHEMES",
    "SentinelURL",
    "check_redis_url",
    "parse_sentinel_url",
    "redact_sentinel_url",
    "scheme_of",
]

DEFAULT_SENTINEL_PORT = 26379
#: Schemes redis-py's own `from_url` reads; relay hands such URLs to it unchanged.
PLAIN_SCHEMES = ("redis", "rediss", "unix")
#: Sentinel schemes and whether they mean TLS.
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}

_TEXT_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "sentinel_username")
_CERT_REQS = ("none", "optional", "required")
#: What an error message shows of the URL: never the password.
_MASK = "****"


@dataclass(frozen=True)
class SentinelURL:
    """A parsed `redis+sentinel://` URL: where the Sentinels are, which service, which DB."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: Secret | None = None
    sentinel_username: str | None = None
    sentinel_password: Secret | None = None
    #: TLS options by redis-py's keyword (ssl_ca_certs, ...), as given.
    tls_options: tuple[tuple[str, str], ...] = field(default=())

    def redacted(self) -> str:
        """The URL with every password masked, safe to print and log."""
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        auth = ""
        if self.password is not None or self.username:
            auth = quote(self.username or "", safe="")
            auth += f":{_MASK}@" if self.password is not None else "@"
        hosts = ",".join(f"{_host(h)}:{p}" for h, p in self.sentinels)
        query = [f"{k}={quote(v, safe='/')}" for k, v in self.tls_options]
        if self.sentinel_username:
            query.append(f"sentinel_username={quote(self.sentinel_username, safe='')}")
        if self.sentinel_password is not None:
            query.append(f"sentinel_password={_MASK}")
        tail = f"?{'&'.join(query)}" if query else ""
        return f"{scheme}://{auth}{hosts}/{quote(self.service, safe='')}/{self.db}{tail}"


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def scheme_of(url: str) -> str:
    """The URL's scheme, lower-cased ("" when it has none)."""
    head, sep, _ = url.partition("://")
    return head.lower() if sep else ""


def check_redis_url(url: str) -> None:
    """Raise ValueError with a clear message when `url` is no Redis URL relay can use."""
    scheme = scheme_of(url)
    if scheme in SENTINEL_SCHEMES:
        parse_sentinel_url(url)
    elif scheme not in PLAIN_SCHEMES:
        allowed = ", ".join(f"{s}://" for s in (*PLAIN_SCHEMES, *SENTINEL_SCHEMES))
        raise ValueError(f"must start with one of {allowed}")


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse a `redis+sentinel://` or `rediss+sentinel://` URL; ValueError says what is wrong."""
    scheme = scheme_of(url)
    if scheme not in SENTINEL_SCHEMES:
        raise ValueError("a Sentinel URL starts with redis+sentinel:// or rediss+sentinel://")
    rest = url.split("://", 1)[1]
    netloc, _, path_query = rest.partition("/")
    path, _, query = path_query.partition("?")
    if "#" in url:
        raise ValueError("a Sentinel URL has no #fragment")
    userinfo, at, hostlist = netloc.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    sentinels = tuple(_sentinel(part) for part in hostlist.split(","))
    service, db = _service_and_db(path)
    options = _options(query)
    sentinel_password = options.pop("sentinel_password", None)
    sentinel_username = options.pop("sentinel_username", None)
    return SentinelURL(
        sentinels=sentinels,
        service=service,
        db=db,
        tls=SENTINEL_SCHEMES[scheme],
        username=username,
        password=password,
        sentinel_username=sentinel_username,
        sentinel_password=None if sentinel_password is None else Secret(sentinel_password),
        tls_options=tuple(sorted(options.items())),
    )


def _credentials(userinfo: str) -> tuple[str | None, Secret | None]:
    user, colon, password = userinfo.partition(":")
    if not colon:
        raise ValueError(f"credentials go as USER:PASSWORD@ or :PASSWORD@, not {_MASK}@")
    return (unquote(user) or None), Secret(unquote(password))


def _sentinel(part: str) -> tuple[str, int]:
    if not part:
        raise ValueError("a Sentinel address is empty (hosts go as host1:26379,host2:26379)")
    if part.startswith("["):
        host, bracket, after = part[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ValueError(f"bad IPv6 Sentinel address {part!r} (write it as [::1]:26379)")
        port_text = after[1:] if after else ""
    else:
        host, _, port_text = part.partition(":")
        if ":" in port_text:
            raise ValueError(f"bad Sentinel address {part!r} (IPv6 goes in brackets: [::1]:26379)")
    if not host:
        raise ValueError(f"the Sentinel address {part!r} has no host")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"the Sentinel address {part!r} has no valid port (1-65535)")
    return host, int(port_text)


def _service_and_db(path: str) -> tuple[str, int]:
    parts = path.split("/") if path else []
    if not parts or not parts[0]:
        raise ValueError("the URL names no service: redis+sentinel://HOSTS/SERVICE[/DB]")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1]):
        raise ValueError("the path is /SERVICE or /SERVICE/DB, nothing more")
    service = unquote(parts[0])
    db_text = parts[1] if len(parts) == 2 else "0"
    if not db_text.isdigit():
        raise ValueError(f"the database must be a number, not {db_text!r}")
    return service, int(db_text)


def _options(query: str) -> dict[str, str]:
    if not query:
        return {}
    try:
        parsed = parse_qs(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise ValueError("the query is not NAME=VALUE&NAME=VALUE") from None
    known = {*_TEXT_OPTIONS, "sentinel_password", "ssl_cert_reqs"}
    options: dict[str, str] = {}
    for name, values in parsed.items():
        if name not in known:
            raise ValueError(f"unknown option {name!r}; known: {', '.join(sorted(known))}")
        if len(values) != 1:
            raise ValueError(f"the option {name!r} is given more than once")
        options[name] = values[0]
    reqs = options.get("ssl_cert_reqs")
    if reqs is not None and reqs not in _CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be {', '.join(_CERT_REQS)}, not {reqs!r}")
    return options


def redact_sentinel_url(url: str) -> str | None:
    """`url` with its passwords masked if it is a valid Sentinel URL, else None."""
    try:
        return parse_sentinel_url(url).redacted()
    except ValueError:
        return None
