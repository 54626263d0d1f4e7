"""Helpers for the audit transport tests: node certificates for rsyslogd and Carnet (written to files, as a
node's settings name them; made with tests/pki_support.py) and an rsyslogd run on free loopback ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from pki_support import Pem, make_ca, make_leaf
from support import IN_CI, free_port, wait_until

XML = (
    b'<?xml version="1.0" encoding="UTF-8"?><AuditMessage><EventIdentification EventActionCode="E" '
    b'EventDateTime="2026-11-23T10:00:00Z" EventOutcomeIndicator="0"><EventID csd-code="110112" '
    b'codeSystemName="DCM" originalText="Query"/></EventIdentification></AuditMessage>'
)


# ---------------------------------------------------------------------------------------------------
# PKI


@dataclass(frozen=True)
class PkiFiles:
    ca: Path
    server: Pem  # the ARR: localhost + arr.test + 127.0.0.1
    client: Pem  # the Carnet node: carnet-node.test, the name rsyslogd's PermittedPeer checks
    foreign: Pem  # same name, from a CA the server does not trust


def write_pki(directory: Path) -> PkiFiles:
    """Node certificates for TLS client and server use (ITI-19), with their names in subjectAltName."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca("Carnet Test Audit CA")
    other = make_ca("Some Other CA")
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.cert_pem)
    node = {"usage": "node", "ips": ("127.0.0.1",)}
    return PkiFiles(
        ca_path,
        make_leaf(ca, "arr.test", dns=("localhost", "arr.test"), **node).write(directory, "server"),
        make_leaf(ca, "carnet-node.test", dns=("carnet-node.test",), **node).write(directory, "client"),
        make_leaf(other, "carnet-node.test", dns=("carnet-node.test",), **node).write(directory, "foreign"),
    )


# ---------------------------------------------------------------------------------------------------
# processes and ports


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
  DefaultNetstreamDriverCertFile="{pki.server.certificate}"
  DefaultNetstreamDriverKeyFile="{pki.server.private_key}"
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
