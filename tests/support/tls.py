"""Throwaway TLS certificates for Redis test topologies, made with trustme in a temp directory.

One CA per call of `make_tls`: a certificate for 127.0.0.1 (SAN IP:127.0.0.1) that every Redis
node and Sentinel serves and also presents to its peers (Redis asks every client for one by
default, `tls-auth-clients yes`), and one for relay, the client. A second call makes an unrelated
CA, which is how the tests get a certificate authority that must not be trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trustme

#: The address every node listens on and that the servers' certificate names.
HOST = "127.0.0.1"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA to trust, and a certificate with its key to present."""

    ca: Path
    cert: Path
    key: Path

    def server_settings(self) -> list[tuple[str, str]]:
        """redis-server settings (name, value) for TLS on every link, replication and Sentinel's
        own links to the data nodes and to the other Sentinels included. The plain port is 0:
        a node (or Sentinel) that answers at all answered over TLS."""
        return [
            ("tls-cert-file", str(self.cert)),
            ("tls-key-file", str(self.key)),
            ("tls-ca-cert-file", str(self.ca)),
            ("tls-replication", "yes"),
        ]

    def client_options(self) -> dict[str, Any]:
        """redis-py keyword arguments of a client that trusts `ca` and presents `cert`."""
        return {
            "ssl": True,
            "ssl_ca_certs": str(self.ca),
            "ssl_certfile": str(self.cert),
            "ssl_keyfile": str(self.key),
        }

    def url_query(self) -> str:
        """The TLS options of a `rediss+sentinel://` URL (relay.core.redis_url)."""
        options = {
            "ssl_ca_certs": self.ca,
            "ssl_certfile": self.cert,
            "ssl_keyfile": self.key,
        }
        parts = [f"{name}={quote(str(path), safe='/')}" for name, path in options.items()]
        return "&".join([*parts, "ssl_cert_reqs=required"])


@dataclass(frozen=True)
class TlsSet:
    """A CA's files: what the Redis nodes use, and what relay (the client) uses."""

    server: TlsFiles
    client: TlsFiles


def make_tls(directory: Path) -> TlsSet:
    """A new throwaway CA in `directory`, with a server certificate for 127.0.0.1 and a client
    certificate for relay."""
    directory.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA(organization_name="relay tests")
    ca = directory / "ca.pem"
    authority.cert_pem.write_to_path(str(ca))

    def issue(name: str, *identities: str) -> TlsFiles:
        leaf = authority.issue_cert(*identities)
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        return TlsFiles(ca=ca, cert=cert, key=key)

    return TlsSet(server=issue("server", HOST), client=issue("relay", "relay.client.test"))
