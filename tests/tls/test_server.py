"""Listening ports over TLS (ITI-19): who gets in, who is refused, and what `on_failure` is told.

Real sockets on 127.0.0.1; the clients are plain stdlib `ssl` clients so that the server side
(config.tls) is what is under test."""

from __future__ import annotations

import ssl

import pytest
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.web.resource import Resource
from twisted.web.server import Site

from config.tls import (
    FailureReason,
    TlsSettings,
    listen_tls,
    peer_subject,
    server_context_factory,
)
from reactor_support import call_in_reactor, reactor
from tls.helpers import (
    ClosedConnections,
    Failures,
    client_hello,
    echo_factory,
    first_record,
    https_get,
    refused,
    stdlib_context,
    tls_exchange,
    tls_port,
)


class WhoAmI(Resource):
    """A trivial resource answering the subject of the client certificate."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.renders = 0

    def render_GET(self, request):  # noqa: N802
        self.renders += 1
        return (peer_subject(request.channel.transport) or "anonymous").encode()


VERSIONS = [pytest.param(ssl.TLSVersion.TLSv1_2, id="TLSv1.2"), pytest.param(None, id="TLSv1.3")]


@pytest.mark.parametrize("maximum", VERSIONS)
def test_a_valid_client_certificate_gets_in_and_is_seen_by_the_resource(pki, server_tls, maximum):
    resource = WhoAmI()
    with tls_port(Site(resource), server_tls) as (port, failures, closed):
        status, body = https_get(port, "/", stdlib_context(pki.ca_bundle, pki.client, maximum=maximum))
        closed.wait_closed(1)
    assert (status, body.decode()) == (200, pki.client.subject)
    assert failures.items == []


def test_an_rsa_client_certificate_gets_in_too(pki, server_tls):
    with tls_port(Site(WhoAmI()), server_tls) as (port, failures, _):
        status, body = https_get(port, "/", stdlib_context(pki.ca_bundle, pki.client_rsa))
    assert (status, body.decode()) == (200, pki.client_rsa.subject)
    assert failures.items == []


REFUSALS = [
    # (client certificate, reason reported, TLS alert the client receives)
    ("expired", FailureReason.CERTIFICATE_EXPIRED, "CERTIFICATE_EXPIRED"),
    ("not_yet_valid", FailureReason.CERTIFICATE_NOT_YET_VALID, "BAD_CERTIFICATE"),
    ("foreign", FailureReason.UNTRUSTED_ISSUER, "UNKNOWN_CA"),
    ("self_signed", FailureReason.UNTRUSTED_ISSUER, "UNKNOWN_CA"),
]


@pytest.mark.parametrize("maximum", VERSIONS)
@pytest.mark.parametrize(("who", "reason", "alert"), REFUSALS)
def test_a_bad_client_certificate_is_refused_and_reported_once(pki, server_tls, who, reason, alert, maximum):
    pem = getattr(pki, who)
    resource = WhoAmI()
    with tls_port(Site(resource), server_tls) as (port, failures, closed):
        error, client_port = refused(port, stdlib_context(pki.ca_bundle, pem, maximum=maximum))
        closed.wait_closed(1)  # the server side is gone: no later report can come
    assert isinstance(error, ssl.SSLError) and alert in str(error), error
    assert resource.renders == 0
    [failure] = failures.items
    assert failure.reason is reason
    assert (failure.peer_host, failure.peer_port, failure.local_port) == ("127.0.0.1", client_port, port)
    assert failure.subject == pem.subject
    assert failure.issuer is not None
    assert failure.verify_error is not None and failure.detail


@pytest.mark.parametrize(("maximum", "alert"), [
    pytest.param(ssl.TLSVersion.TLSv1_2, "HANDSHAKE_FAILURE", id="TLSv1.2"),  # RFC 5246 §7.4.6
    pytest.param(None, "CERTIFICATE_REQUIRED", id="TLSv1.3"),  # RFC 8446 §4.4.2.4
])
def test_a_client_without_certificate_is_refused_and_reported_once(pki, server_tls, maximum, alert):
    resource = WhoAmI()
    with tls_port(Site(resource), server_tls) as (port, failures, closed):
        error, client_port = refused(port, stdlib_context(pki.ca_bundle, None, maximum=maximum))
        closed.wait_closed(1)
    assert isinstance(error, ssl.SSLError) and alert in str(error), error
    assert resource.renders == 0
    [failure] = failures.items
    assert failure.reason is FailureReason.NO_CERTIFICATE
    assert (failure.peer_host, failure.peer_port) == ("127.0.0.1", client_port)
    assert failure.subject is None and failure.verify_error is None


def test_each_refused_connection_is_reported_once_among_accepted_ones(pki, server_tls):
    with tls_port(echo_factory(), server_tls) as (port, failures, closed):
        good = stdlib_context(pki.ca_bundle, pki.client)
        assert tls_exchange(port, good, b"one")[0] == b"one"
        _, first = refused(port, stdlib_context(pki.ca_bundle, pki.expired))
        assert tls_exchange(port, good, b"two")[0] == b"two"
        _, second = refused(port, stdlib_context(pki.ca_bundle, pki.foreign))
        _, third = refused(port, stdlib_context(pki.ca_bundle))
        closed.wait_closed(5)
    assert [(f.peer_port, f.reason) for f in failures.items] == [
        (first, FailureReason.CERTIFICATE_EXPIRED),
        (second, FailureReason.UNTRUSTED_ISSUER),
        (third, FailureReason.NO_CERTIFICATE),
    ]


@pytest.mark.parametrize("version", [pytest.param(0x0301, id="TLSv1.0"), pytest.param(0x0302, id="TLSv1.1")])
def test_tls_below_1_2_is_refused_with_a_protocol_version_alert(server_tls, version):
    with tls_port(echo_factory(), server_tls) as (port, failures, closed):
        content_type, fragment = first_record(port, client_hello(version))
        closed.wait_closed(1)
    # RFC 5246 §7.2: Alert record (21), level fatal (2), protocol_version (70).
    assert (content_type, fragment) == (21, bytes([2, 70]))
    [failure] = failures.items
    assert failure.reason is FailureReason.PROTOCOL_VERSION and failure.alert == 70


def test_the_same_hand_built_hello_in_tls_1_2_gets_a_server_hello(server_tls):
    """The control for the test above: the hello is well formed, only its version is refused."""
    with tls_port(echo_factory(), server_tls) as (port, failures, _):
        content_type, fragment = first_record(port, client_hello(0x0303))
    assert (content_type, fragment[0]) == (22, 2)  # Handshake record, ServerHello
    assert failures.items == []


def test_a_minimum_of_tls_1_3_refuses_tls_1_2(pki):
    tls = TlsSettings(pki.server.certificate, pki.server.private_key, pki.ca_bundle, minimum_version="TLSv1.3")
    with tls_port(echo_factory(), tls) as (port, failures, closed):
        refused(port, stdlib_context(pki.ca_bundle, pki.client, maximum=ssl.TLSVersion.TLSv1_2))
        assert tls_exchange(port, stdlib_context(pki.ca_bundle, pki.client), b"hi")[:2] == (b"hi", "TLSv1.3")
        closed.wait_closed(2)
    assert [f.reason for f in failures.items] == [FailureReason.PROTOCOL_VERSION]


def test_a_cipher_suite_outside_bcp195_is_refused(pki, server_tls):
    # TLS_RSA_WITH_AES_128_CBC_SHA: no forward secrecy, not in RFC 9325 §4.2.
    ctx = stdlib_context(pki.ca_bundle, pki.client_rsa, maximum=ssl.TLSVersion.TLSv1_2, ciphers="AES128-SHA")
    with tls_port(echo_factory(), server_tls) as (port, failures, closed):
        error, _ = refused(port, ctx)
        closed.wait_closed(1)
    assert "HANDSHAKE_FAILURE" in str(error)
    assert [f.reason for f in failures.items] == [FailureReason.HANDSHAKE]


def test_optional_client_certificate_lets_anonymous_clients_in_but_still_checks_presented_ones(pki):
    tls = TlsSettings(pki.server.certificate, pki.server.private_key, pki.ca_bundle,
                      require_client_certificate=False)
    with tls_port(Site(WhoAmI()), tls) as (port, failures, closed):
        assert https_get(port, "/", stdlib_context(pki.ca_bundle)) == (200, b"anonymous")
        assert https_get(port, "/", stdlib_context(pki.ca_bundle, pki.client)) == (200, pki.client.subject.encode())
        refused(port, stdlib_context(pki.ca_bundle, pki.expired))
        closed.wait_closed(3)
    assert [f.reason for f in failures.items] == [FailureReason.CERTIFICATE_EXPIRED]


def test_a_failing_on_failure_callback_does_not_break_the_port(pki, server_tls):
    calls = []

    def broken(failure):
        calls.append(failure)
        raise RuntimeError("audit sink down")

    closed = ClosedConnections(echo_factory())
    port = call_in_reactor(lambda: listen_tls(reactor(), 0, closed, server_tls, interface="127.0.0.1",
                                              on_failure=broken))
    try:
        error, _ = refused(port.getHost().port, stdlib_context(pki.ca_bundle, pki.expired))
        assert "CERTIFICATE_EXPIRED" in str(error)
        assert tls_exchange(port.getHost().port, stdlib_context(pki.ca_bundle, pki.client), b"ok")[0] == b"ok"
        closed.wait_closed(2)
    finally:
        call_in_reactor(port.stopListening)
    assert [f.reason for f in calls] == [FailureReason.CERTIFICATE_EXPIRED]


@pytest.mark.parametrize("how", ["listenSSL", "SSL4ServerEndpoint"])
def test_the_context_factory_works_with_twisted_s_own_tls_listeners(pki, server_tls, how):
    failures = Failures()
    creator = server_context_factory(server_tls, on_failure=failures)
    closed = ClosedConnections(echo_factory())

    def start():
        if how == "listenSSL":
            return reactor().listenSSL(0, closed, creator, interface="127.0.0.1")
        return SSL4ServerEndpoint(reactor(), 0, creator, interface="127.0.0.1").listen(closed)

    port = call_in_reactor(start)
    try:
        number = port.getHost().port
        assert tls_exchange(number, stdlib_context(pki.ca_bundle, pki.client), b"MSH|")[0] == b"MSH|"
        _, client_port = refused(number, stdlib_context(pki.ca_bundle, pki.foreign))
        closed.wait_closed(2)
    finally:
        call_in_reactor(port.stopListening)
    assert [(f.reason, f.peer_port) for f in failures.items] == [(FailureReason.UNTRUSTED_ISSUER, client_port)]


def test_plain_text_on_a_tls_port_gets_no_answer_and_no_report(server_tls):
    """Not a node authentication failure: no certificate was presented or refused (see config.tls)."""
    import socket

    with tls_port(echo_factory(), server_tls) as (port, failures, closed):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert s.recv(100) == b""
        closed.wait_closed(1)
    assert failures.items == []


def test_the_per_connection_handshake_state_is_freed_with_the_connection(pki, server_tls):
    """The refusal bookkeeping is keyed weakly by connection: a long-running port does not grow."""
    import gc

    creator = server_context_factory(server_tls)
    closed = ClosedConnections(echo_factory())
    port = call_in_reactor(lambda: reactor().listenSSL(0, closed, creator, interface="127.0.0.1"))
    try:
        number = port.getHost().port
        for _ in range(5):
            tls_exchange(number, stdlib_context(pki.ca_bundle, pki.client), b"x")
            refused(number, stdlib_context(pki.ca_bundle, pki.expired))
        closed.wait_closed(10)
    finally:
        call_in_reactor(port.stopListening)
    call_in_reactor(gc.collect)
    assert len(creator._handshakes) == 0  # noqa: SLF001 - the state this test is about
