"""Test helpers for TLS over real sockets: failure recorders, a factory that tells when server-side
connections are closed, blocking TLS clients, and a hand-built ClientHello for old protocol versions."""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import struct
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import WrappingFactory

from config.tls import NodeAuthFailure, TlsSettings, listen_tls
from pki_support import Pem
from reactor_support import call_in_reactor, reactor

WAIT = 10.0  # seconds before a wait is declared failed (a bound, never a timing assertion)


class Failures:
    """An `on_failure` callback that records what it is given."""

    def __init__(self) -> None:
        self.items: list[NodeAuthFailure] = []
        self._cond = threading.Condition()

    def __call__(self, failure: NodeAuthFailure) -> None:
        with self._cond:
            self.items.append(failure)
            self._cond.notify_all()


class ClosedConnections(WrappingFactory):
    """Wraps the application factory (inside TLS) to count server-side connections fully closed:
    once a refused connection is closed, no further report can come for it."""

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self.closed = 0
        self._cond = threading.Condition()

    def unregisterProtocol(self, p: Any) -> None:  # noqa: N802 - Twisted's name
        super().unregisterProtocol(p)
        with self._cond:
            self.closed += 1
            self._cond.notify_all()

    def wait_closed(self, count: int) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self.closed >= count, WAIT):
                raise AssertionError(f"only {self.closed} of {count} server connections closed")


class Echo(Protocol):
    """What an MLLP or syslog port is at the transport level: a byte stream protocol."""

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.transport.write(data)


def echo_factory() -> Factory:
    return Factory.forProtocol(Echo)


def client_settings(pki_pem: Pem | None, ca_bundle, **kw) -> TlsSettings | None:
    if pki_pem is None:
        return None
    return TlsSettings(pki_pem.certificate, pki_pem.private_key, ca_bundle, **kw)


def stdlib_context(
    ca_bundle, pem: Pem | None = None, *, maximum: ssl.TLSVersion | None = None, ciphers: str | None = None
) -> ssl.SSLContext:
    """A plain stdlib client context, independent of config.tls (the peer under test is the server)."""
    ctx = ssl.create_default_context(cafile=str(ca_bundle))
    if pem is not None:
        ctx.load_cert_chain(pem.certificate, pem.private_key)
    if maximum is not None:
        ctx.maximum_version = maximum
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    return ctx


def tls_exchange(port: int, ctx: ssl.SSLContext, payload: bytes, *, hostname: str = "localhost") -> tuple[bytes, str, int]:
    """Connect, send `payload`, read until `len(payload)` bytes came back or the server closed;
    returns (received, negotiated TLS version, our local port). Raises the client-side error."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    local_port = raw.getsockname()[1]
    with ctx.wrap_socket(raw, server_hostname=hostname) as tls:
        tls.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = tls.recv(65536)
            if not chunk:
                break
            received += chunk
        return received, tls.version() or "", local_port


def refused(port: int, ctx: ssl.SSLContext, *, hostname: str = "localhost") -> tuple[Exception, int]:
    """Try an exchange that the server must refuse; returns (the client-side error, local port).
    In TLS 1.3 the client sends its certificate after it considers the handshake done, so the
    server's alert arrives on the first read (RFC 8446 §4.4.2.4)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    local_port = raw.getsockname()[1]
    try:
        with ctx.wrap_socket(raw, server_hostname=hostname) as tls:
            tls.sendall(b"ping")
            data = tls.recv(100)
    except (ssl.SSLError, ConnectionError) as exc:
        return exc, local_port
    raise AssertionError(f"the server accepted the connection and answered {data!r}")


def https_get(port: int, path: str, ctx: ssl.SSLContext, *, hostname: str = "localhost") -> tuple[int, bytes]:
    """GET over HTTPS; `hostname` is both the address looked up and the name verified."""
    conn = http.client.HTTPSConnection(hostname, port, timeout=WAIT, context=ctx)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# ----------------------------------------------------------------------- a raw ClientHello


def client_hello(version: int) -> bytes:
    """A ClientHello record offering exactly `version` (0x0301 TLS 1.0, 0x0302 TLS 1.1, 0x0303
    TLS 1.2), without supported_versions (RFC 8446 §4.1.2: legacy_version is then the offer).
    Built by hand because current OpenSSL clients refuse to offer TLS < 1.2 at all."""
    suites = [0xC02B, 0xC02F, 0xC013, 0xC014, 0x002F, 0x0035]  # ECDHE-GCM (BCP195) and old CBC ones

    def ext(kind: int, data: bytes) -> bytes:
        return struct.pack("!HH", kind, len(data)) + data

    extensions = b"".join(
        [
            ext(10, struct.pack("!HH", 2, 23)),  # supported_groups: secp256r1
            ext(11, b"\x01\x00"),  # ec_point_formats: uncompressed
            ext(13, struct.pack("!HHHH", 6, 0x0403, 0x0804, 0x0401)),  # signature_algorithms
        ]
    )
    body = (
        struct.pack("!H", version)
        + os.urandom(32)
        + b"\x00"  # no session id
        + struct.pack("!H", 2 * len(suites))
        + b"".join(struct.pack("!H", s) for s in suites)
        + b"\x01\x00"  # compression: null
        + struct.pack("!H", len(extensions))
        + extensions
    )
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


def first_record(port: int, hello: bytes) -> tuple[int, bytes]:
    """Send `hello`; (content type, fragment) of the server's first TLS record (RFC 5246 §6.2.1)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(hello)
        header = _read_exactly(s, 5)
        length = struct.unpack("!H", header[3:5])[0]
        return header[0], _read_exactly(s, min(length, 64))


def _read_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise AssertionError(f"the server closed after {data!r}")
        data += chunk
    return data


@contextmanager
def tls_port(factory, tls: TlsSettings) -> Iterator[tuple[int, Failures, ClosedConnections]]:
    """`factory` over TLS with `listen_tls` on 127.0.0.1; yields (port, failures, closed)."""
    failures = Failures()
    closed = ClosedConnections(factory)
    port = call_in_reactor(
        lambda: listen_tls(reactor(), 0, closed, tls, interface="127.0.0.1", on_failure=failures)
    )
    try:
        yield port.getHost().port, failures, closed
    finally:
        call_in_reactor(port.stopListening)
