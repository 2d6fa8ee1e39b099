"""Throwaway TLS material for the emulated Azure endpoints.

The product talks to ARM, the managed-identity endpoint and Table Storage over HTTPS only, and
azure-core refuses to send bearer tokens over plain HTTP. Rather than weakening any client (no
``verify=False`` anywhere), the tests mint a private CA with ``trustme``, serve the emulators with a
certificate it signed, and point ``SSL_CERT_FILE`` / ``REQUESTS_CA_BUNDLE`` at the CA file.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

#: Names the server certificate is valid for: every loopback spelling a client might use.
SERVER_NAMES: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class TlsMaterial:
    """Paths of a CA certificate and a server certificate/key it signed (all PEM)."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_ssl_context(self) -> ssl.SSLContext:
        """Return a server-side context presenting the emulator certificate (TLS 1.2+)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx

    def client_ssl_context(self) -> ssl.SSLContext:
        """Return a verifying client context that trusts only the throwaway CA (for probes)."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def make_tls(directory: Path) -> TlsMaterial:
    """Create a fresh CA plus a loopback server certificate under ``directory``.

    Writes ``ca.pem``, ``server.pem`` (leaf followed by the chain) and ``server-key.pem``.
    A new CA per test session keeps the trust scoped: nothing outside the test run trusts it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="clientcert-audit test CA")
    leaf = ca.issue_cert(*SERVER_NAMES)
    ca_file = directory / "ca.pem"
    cert_file = directory / "server.pem"
    key_file = directory / "server-key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    # Leaf first, then intermediates/root: the order both OpenSSL and Node expect for a chain file.
    with cert_file.open("wb") as fh:
        for blob in leaf.cert_chain_pems:
            fh.write(blob.bytes())
    leaf.private_key_pem.write_to_path(str(key_file))
    key_file.chmod(0o600)
    return TlsMaterial(ca_file=ca_file, cert_file=cert_file, key_file=key_file)
