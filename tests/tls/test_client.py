"""Outbound connections (ITI-19): Carnet presents its certificate and checks the server's.

Twisted clients use `client_context_factory` (syslog to the ARR, PIX notifications); blocking ones
(`SoapRegistryClient`) use `ssl_context_for_client`. The servers are config.tls servers whose
protocol answers the subject of the client certificate it authenticated."""

from __future__ import annotations

import ssl
from contextlib import contextmanager

import pytest
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from config.tls import TlsSettings, client_context_factory, listen_tls, peer_subject, ssl_context_for_client
from reactor_support import call_in_reactor, reactor
from tls.helpers import ClosedConnections, Failures, tls_exchange, tls_port


class Subject(Protocol):
    """Server side: answers the subject of the client's certificate to any data."""

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.transport.write((peer_subject(self.transport) or "anonymous").encode())
        self.transport.loseConnection()


@implementer(IHandshakeListener)
class Ask(Protocol):
    """Client side: once the handshake is done, sends a line and collects the answer."""

    def __init__(self) -> None:
        self.answer: Deferred = Deferred()
        self.received = b""

    def handshakeCompleted(self) -> None:  # noqa: N802
        self.transport.write(b"who am I?\r\n")

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.received += data

    def connectionLost(self, reason) -> None:  # noqa: N802
        if self.received:
            self.answer.callback(self.received)
        else:
            self.answer.errback(reason)


def ask(port: int, creator) -> bytes:
    """Connect to 127.0.0.1:`port` over TLS with `creator`; the server's answer (or its error)."""

    def go():
        protocol = Ask()
        endpoint = SSL4ClientEndpoint(reactor(), "127.0.0.1", port, creator)
        return connectProtocol(endpoint, protocol).addCallback(lambda _: protocol.answer)

    return call_in_reactor(go)


@contextmanager
def subject_server(pem, ca_bundle):
    """A config.tls server with `pem` as its certificate, trusting `ca_bundle` for clients."""
    with tls_port(Factory.forProtocol(Subject), TlsSettings(pem.certificate, pem.private_key, ca_bundle)) as listening:
        yield listening


@pytest.fixture
def carnet_tls(pki) -> TlsSettings:
    """Carnet as a client: its node certificate, the test CA trusted for servers."""
    return TlsSettings(pki.client.certificate, pki.client.private_key, pki.ca_bundle)


# --------------------------------------------------------------------------- Twisted clients


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_the_twisted_client_presents_its_certificate_and_trusts_our_ca(pki, carnet_tls, hostname):
    with subject_server(pki.server, pki.ca_bundle) as (port, failures, _):
        assert ask(port, client_context_factory(carnet_tls, hostname)).decode() == pki.client.subject
    assert failures.items == []


def test_the_twisted_client_refuses_a_server_from_an_unknown_ca(pki, carnet_tls):
    with subject_server(pki.rogue_server, pki.ca_bundle) as (port, failures, closed):
        with pytest.raises(SSL.Error, match="certificate verify failed"):
            ask(port, client_context_factory(carnet_tls, "localhost"))
        closed.wait_closed(1)
    # The rogue server received our alert: a refusal by its peer is not its node-auth failure.
    assert failures.items == []


def test_the_twisted_client_refuses_a_server_whose_name_does_not_match(pki, carnet_tls):
    with subject_server(pki.server, pki.ca_bundle) as (port, _, _closed):
        with pytest.raises(VerificationError):
            ask(port, client_context_factory(carnet_tls, "registry.example.org"))
        with pytest.raises(VerificationError):
            ask(port, client_context_factory(carnet_tls, "127.0.0.2"))


def test_pinning_to_the_ca_only_accepts_any_name_but_not_another_ca(pki, carnet_tls):
    with subject_server(pki.server, pki.ca_bundle) as (port, _, _closed):
        creator = client_context_factory(carnet_tls, "10.1.2.3", verify_hostname=False)
        assert ask(port, creator).decode() == pki.client.subject
    with subject_server(pki.rogue_server, pki.ca_bundle) as (port, _, _closed):
        with pytest.raises(SSL.Error, match="certificate verify failed"):
            ask(port, client_context_factory(carnet_tls, "10.1.2.3", verify_hostname=False))


def test_an_ip_only_server_certificate_is_verified_by_address(pki, carnet_tls):
    with subject_server(pki.server_ip_only, pki.ca_bundle) as (port, _, _closed):
        assert ask(port, client_context_factory(carnet_tls, "127.0.0.1")).decode() == pki.client.subject
        with pytest.raises(VerificationError):
            ask(port, client_context_factory(carnet_tls, "localhost"))


def test_a_server_requiring_tls_1_3_is_reached_by_a_client_with_the_1_2_floor(pki, carnet_tls):
    tls = TlsSettings(pki.server.certificate, pki.server.private_key, pki.ca_bundle, minimum_version="TLSv1.3")
    closed = ClosedConnections(Factory.forProtocol(Subject))
    port = call_in_reactor(lambda: listen_tls(reactor(), 0, closed, tls, interface="127.0.0.1"))
    try:
        assert ask(port.getHost().port, client_context_factory(carnet_tls, "localhost")).decode() == pki.client.subject
    finally:
        call_in_reactor(port.stopListening)


# --------------------------------------------------------------------------- stdlib clients


def test_the_stdlib_client_presents_its_certificate(pki, carnet_tls):
    with subject_server(pki.server, pki.ca_bundle) as (port, failures, _):
        received, version, _ = tls_exchange(port, ssl_context_for_client(carnet_tls), b"hello")
    assert received.decode() == pki.client.subject and version == "TLSv1.3"
    assert failures.items == []


def test_the_stdlib_client_refuses_an_unknown_ca_and_a_wrong_name(pki, carnet_tls):
    with subject_server(pki.rogue_server, pki.ca_bundle) as (port, _, _closed):
        with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
            tls_exchange(port, ssl_context_for_client(carnet_tls), b"hello")
    with subject_server(pki.server, pki.ca_bundle) as (port, _, _closed):
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
            tls_exchange(port, ssl_context_for_client(carnet_tls), b"hello", hostname="registry.example.org")
        pinned = ssl_context_for_client(carnet_tls, verify_hostname=False)
        assert tls_exchange(port, pinned, b"hello", hostname="registry.example.org")[0].decode() == pki.client.subject


# --------------------------------------------------------------------------- byte streams, HTTP


class Collect(Protocol):
    """Client side: sends `payload`, waits for it to come back whole, closes."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.received = b""
        self.done: Deferred = Deferred()

    def connectionMade(self) -> None:  # noqa: N802 - TLS buffers writes until the handshake is done
        self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.received += data
        if len(self.received) >= len(self.payload):
            self.transport.loseConnection()

    def connectionLost(self, reason) -> None:  # noqa: N802
        if len(self.received) >= len(self.payload):
            self.done.callback(self.received)
        else:
            self.done.errback(reason)


# An MLLP frame (HL7v2 over MLLP: <VT> message <FS><CR>) and an RFC 5425 §4.3 octet-counted syslog frame.
MLLP = b"\x0bMSH|^~\\&|CARNET|X|PIX|Y|20260101000000||QBP^Q23^QBP_Q21|1|P|2.5\r\x1c\r"
SYSLOG = b'<85>1 2026-01-01T00:00:00Z carnet carnet - IHE+RFC-3881 - <AuditMessage/>'
SYSLOG = str(len(SYSLOG)).encode() + b" " + SYSLOG


@pytest.mark.parametrize("payload", [MLLP, SYSLOG, MLLP * 5000], ids=["mllp", "syslog", "large"])
def test_a_byte_stream_protocol_works_over_mutual_tls(pki, server_tls, carnet_tls, payload):
    from tls.helpers import echo_factory

    failures = Failures()
    port = call_in_reactor(lambda: listen_tls(reactor(), 0, echo_factory(), server_tls, interface="127.0.0.1",
                                              on_failure=failures))

    def go():
        protocol = Collect(payload)
        endpoint = SSL4ClientEndpoint(reactor(), "127.0.0.1", port.getHost().port,
                                      client_context_factory(carnet_tls, "localhost"))
        return connectProtocol(endpoint, protocol).addCallback(lambda _: protocol.done)

    try:
        assert call_in_reactor(go) == payload
    finally:
        call_in_reactor(port.stopListening)
    assert failures.items == []


@pytest.mark.filterwarnings("ignore:Using readBody with a transport:DeprecationWarning")  # Twisted-internal
def test_a_twisted_web_agent_with_the_https_policy(pki, carnet_tls):
    from twisted.web.client import Agent, readBody
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from config.tls import HttpsPolicy

    class WhoAmI(Resource):
        isLeaf = True

        def render_GET(self, request):  # noqa: N802
            return (peer_subject(request.channel.transport) or "anonymous").encode()

    server = TlsSettings(pki.server.certificate, pki.server.private_key, pki.ca_bundle)
    port = call_in_reactor(lambda: listen_tls(reactor(), 0, Site(WhoAmI()), server, interface="127.0.0.1"))
    number = port.getHost().port

    def get(url: str):
        agent = Agent(reactor(), contextFactory=HttpsPolicy(carnet_tls))
        return agent.request(b"GET", url.encode()).addCallback(lambda r: readBody(r).addCallback(lambda b: (r.code, b)))

    try:
        assert call_in_reactor(get, f"https://localhost:{number}/") == (200, pki.client.subject.encode())
        assert call_in_reactor(get, f"https://127.0.0.1:{number}/") == (200, pki.client.subject.encode())
    finally:
        call_in_reactor(port.stopListening)
