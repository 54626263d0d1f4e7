"""Helpers for the ARR tests: a throw-away TLS PKI, the WUSTL/IPF samples as syslog messages,
and blocking senders over TLS, TCP and UDP (real sockets)."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from atna.syslog import audit_message, format_message, format_structured_data, octet_frame
from pki_support import Issued, make_ca, make_leaf
from support import need_shared


# --- PKI -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pki:
    ca: Issued
    server: Issued
    client: Issued
    foreign_client: Issued  # issued by another CA


def make_pki() -> Pki:
    ca, other = make_ca("ARR Test CA"), make_ca("Some Other CA")
    return Pki(ca, make_leaf(ca, "localhost", usage="server", dns=("localhost",), ips=("127.0.0.1",)),
               make_leaf(ca, "node-a", usage="client"), make_leaf(other, "mallory", usage="client"))


def server_context(pki: Pki):
    """A Twisted server context requiring a client certificate from the test CA (ITI-19 style)."""
    from OpenSSL import crypto
    from twisted.internet import ssl as tssl

    return tssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(pki.server.key),
        certificate=crypto.X509.from_cryptography(pki.server.cert),
        verify=True,
        caCerts=[crypto.X509.from_cryptography(pki.ca.cert)],
        requireCertificate=True,
        raiseMinimumTo=tssl.TLSVersion.TLSv1_2,
    )


def client_context(pki: Pki, tmp: Path, client: Issued | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=pki.ca.cert_pem.decode())
    if client is not None:
        pem = client.write(tmp, f"client-{id(client)}")
        ctx.load_cert_chain(pem.certificate, pem.private_key)
    return ctx


# --- samples -------------------------------------------------------------------------------------

def sample_files() -> list[Path]:
    files = sorted(need_shared("samples", "atna").glob("*.xml"))
    assert len(files) >= 20, files
    return files


def sample_xml(path: Path, when: str = "2024-05-01T10:00:00Z") -> bytes:
    """A sample with its template placeholder filled in (samples/README.md: `${timeStamp}`);
    otherwise as the peer wrote it (the WUSTL leading comment included)."""
    return path.read_bytes().replace(b"${timeStamp}", when.encode())


def syslog_message(xml: bytes, event_id: str | None = None, *, hostname: str = "node-a.example") -> bytes:
    sd = format_structured_data([("carnet@32473", [("eventId", event_id)])]) if event_id else "-"
    return format_message(
        audit_message(xml, timestamp="2024-05-01T10:00:01.000Z", hostname=hostname, app_name="arrtest",
                      structured_data=sd)
    )


# --- senders -------------------------------------------------------------------------------------

def send_tcp(port: int, messages: list[bytes], *, raw: bytes = b"") -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw + b"".join(octet_frame(m) for m in messages))
        _close_after_reading(s)


def send_tls(port: int, ctx: ssl.SSLContext, messages: list[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw_sock:
        with ctx.wrap_socket(raw_sock, server_hostname="localhost") as s:
            s.sendall(b"".join(octet_frame(m) for m in messages))
            _close_after_reading(s)


def _close_after_reading(s: socket.socket) -> None:
    """Half-close, then read until the peer closes: closing a socket with unread data (TLS 1.3
    session tickets) sends RST, and a RST makes the peer drop what it has not read yet."""
    s.shutdown(socket.SHUT_WR)
    try:
        while s.recv(65536):
            pass
    except OSError:
        pass


def send_udp(port: int, messages: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for m in messages:
            s.sendto(m, ("127.0.0.1", port))
