"""Helpers for the audit transport tests: a throw-away TLS PKI (written to files, as a node's settings name
them), an rsyslogd run on free loopback ports, a Twisted syslog receiver, and polling."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Callable, Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from support import IN_CI

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
XML = (
    b'<?xml version="1.0" encoding="UTF-8"?><AuditMessage><EventIdentification EventActionCode="E" '
    b'EventDateTime="2026-11-23T10:00:00Z" EventOutcomeIndicator="0"><EventID csd-code="110112" '
    b'codeSystemName="DCM" originalText="Query"/></EventIdentification></AuditMessage>'
)


# ---------------------------------------------------------------------------------------------------
# PKI


@dataclass(frozen=True)
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        cert = directory / f"{stem}.pem"
        key = directory / f"{stem}.key"
        cert.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        key.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert, key


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Carnet Test"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def make_node(ca: Issued, cn: str, *, dns: tuple[str, ...] = ("localhost",)) -> Issued:
    """A node certificate for TLS client and server use (ITI-19), with its name in subjectAltName."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, True, False, False, False, False), critical=True
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(d) for d in dns] + [x509.IPAddress(IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(key, cert)


@dataclass(frozen=True)
class PkiFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    foreign_cert: Path  # a client certificate from a CA the server does not trust
    foreign_key: Path


def write_pki(directory: Path) -> PkiFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca("Carnet Test Audit CA")
    other = make_ca("Some Other CA")
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    server_cert, server_key = make_node(ca, "arr.test", dns=("localhost", "arr.test")).write(directory, "server")
    client_cert, client_key = make_node(ca, "carnet-node.test", dns=("carnet-node.test",)).write(directory, "client")
    foreign_cert, foreign_key = make_node(other, "carnet-node.test", dns=("carnet-node.test",)).write(directory, "foreign")
    return PkiFiles(ca_path, server_cert, server_key, client_cert, client_key, foreign_cert, foreign_key)


# ---------------------------------------------------------------------------------------------------
# processes and ports


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def need_rsyslogd() -> str:
    """rsyslogd's path; skip outside CI when absent (`make test` installs it), fail in CI."""
    path = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if os.path.exists("/usr/sbin/rsyslogd") else None)
    if path is None:
        if IN_CI:
            pytest.fail("rsyslogd is required in CI (make test installs rsyslog and rsyslog-gnutls)")
        pytest.skip("rsyslogd not installed (apt-get install rsyslog rsyslog-gnutls)")
    gtls = [p for p in ("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so", "/usr/lib/rsyslog/lmnsd_gtls.so") if os.path.exists(p)]
    if not gtls and not list(Path("/usr/lib").glob("**/rsyslog/lmnsd_gtls.so")):
        if IN_CI:
            pytest.fail("rsyslog-gnutls is required in CI")
        pytest.skip("rsyslog-gnutls not installed")
    return path


@dataclass
class Rsyslog:
    tls_port: int
    udp_port: int
    output: Path

    def lines(self) -> list[bytes]:
        if not self.output.exists():
            return []
        return [line for line in self.output.read_bytes().split(b"\n") if line]


@contextmanager
def rsyslogd(
    workdir: Path, pki: PkiFiles, *, tls_port: int | None = None, permitted_peer: str = "carnet-node.test"
) -> Iterator[Rsyslog]:
    """rsyslogd in the foreground on loopback: imtcp with the gtls driver, x509/name client authentication
    (RFC 5425 §5.2 with the peer's name checked), imudp, each received message written raw, one a line."""
    binary = need_rsyslogd()
    workdir.mkdir(parents=True, exist_ok=True)
    tls_port = tls_port or free_port()
    udp_port = free_port(socket.SOCK_DGRAM)
    out = workdir / "received.log"
    conf = workdir / "rsyslog.conf"
    conf.write_text(
        f"""
global(
  workDirectory="{workdir}"
  maxMessageSize="256k"
  parser.escapeControlCharactersOnReceive="off"
  DefaultNetstreamDriver="gtls"
  DefaultNetstreamDriverCAFile="{pki.ca}"
  DefaultNetstreamDriverCertFile="{pki.server_cert}"
  DefaultNetstreamDriverKeyFile="{pki.server_key}"
)
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="x509/name"
       PermittedPeer=["{permitted_peer}"])
input(type="imtcp" port="{tls_port}" address="127.0.0.1")
module(load="imudp")
input(type="imudp" port="{udp_port}" address="127.0.0.1")
template(name="raw" type="string" string="%rawmsg%\\n")
*.* action(type="omfile" file="{out}" template="raw")
"""
    )
    pidfile = workdir / "rsyslogd.pid"
    log = open(workdir / "rsyslogd.out", "wb")
    proc = subprocess.Popen([binary, "-n", "-f", str(conf), "-i", str(pidfile)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _listening(tls_port) or proc.poll() is not None, 30, "rsyslogd to listen")
        if proc.poll() is not None:
            raise AssertionError(f"rsyslogd exited: {(workdir / 'rsyslogd.out').read_text()}")
        yield Rsyslog(tls_port, udp_port, out)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()
