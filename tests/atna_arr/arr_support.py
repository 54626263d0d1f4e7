"""Helpers for the ARR tests: a throw-away TLS PKI, the WUSTL/IPF samples as syslog messages,
and blocking senders over TLS, TCP and UDP (real sockets)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from atna.syslog import audit_message, format_message, format_structured_data, octet_frame
from support import need_shared

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


# --- PKI -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Carnet ARR Test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def make_leaf(ca: Issued, cn: str, *, server: bool) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1)).not_valid_after(NOW + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return Issued(key, builder.sign(ca.key, hashes.SHA256()))


@dataclass(frozen=True)
class Pki:
    ca: Issued
    server: Issued
    client: Issued
    foreign_client: Issued  # issued by another CA


def make_pki() -> Pki:
    ca, other = make_ca("ARR Test CA"), make_ca("Some Other CA")
    return Pki(ca, make_leaf(ca, "localhost", server=True), make_leaf(ca, "node-a", server=False),
               make_leaf(other, "mallory", server=False))


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
        cert, key = tmp / f"client-{id(client)}.pem", tmp / f"client-{id(client)}.key"
        cert.write_bytes(client.cert_pem)
        key.write_bytes(client.key_pem)
        ctx.load_cert_chain(cert, key)
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


def wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    """Poll `predicate` until true (not a timing assertion: the deadline only bounds a hang)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
