"""The real Carnet site (config.site.build) over mutual TLS: the XDS endpoints answer authenticated
nodes, refuse the others (reported once each), and the repository's SOAP registry client reaches a
remote registry over HTTPS with `ssl_context_for_client`."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from config.settings import Settings
from config.site import REGISTRY_PATH, build
from config.tls import FailureReason, TlsSettings, ssl_context_for_client
from reactor_support import reactor
from registry.db import create_schema, make_engine
from repository.registry_client import RegistryUnavailable, SoapRegistryClient
from tls.helpers import https_get, tls_port


@contextmanager
def carnet_over_tls(tmp_path, tls: TlsSettings):
    """A whole Carnet (SQLite) listening with `listen_tls` on 127.0.0.1; yields (port, failures, closed)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    create_schema(engine)
    app = build(Settings(data_dir=tmp_path, database_url="sqlite://", threads=2), reactor(), engine=engine)
    try:
        with tls_port(app.site, tls) as listening:
            yield listening
    finally:
        app.stop()


def node(pki, who: str) -> TlsSettings:
    pem = getattr(pki, who)
    return TlsSettings(pem.certificate, pem.private_key, pki.ca_bundle)


def test_the_registry_wsdl_is_served_to_an_authenticated_node(tmp_path, pki, server_tls):
    with carnet_over_tls(tmp_path, server_tls) as (port, failures, _):
        status, body = https_get(port, REGISTRY_PATH + "?wsdl", ssl_context_for_client(node(pki, "client")))
    assert status == 200 and b"definitions" in body and f"https://localhost:{port}".encode() in body
    assert failures.items == []


def test_an_iti18_query_over_mutual_tls_with_the_soap_registry_client(tmp_path, pki, server_tls):
    with carnet_over_tls(tmp_path, server_tls) as (port, failures, _):
        client = SoapRegistryClient(f"https://localhost:{port}{REGISTRY_PATH}", timeout=10,
                                    ssl_context=ssl_context_for_client(node(pki, "client")))
        assert client.known_document_unique_ids(["1.2.250.1.999.1.1"]) == set()
    assert failures.items == []


@pytest.mark.parametrize(("who", "reason"), [
    ("expired", FailureReason.CERTIFICATE_EXPIRED),
    ("foreign", FailureReason.UNTRUSTED_ISSUER),
])
def test_a_refused_node_gets_no_answer_and_is_reported_once(tmp_path, pki, server_tls, who, reason):
    with carnet_over_tls(tmp_path, server_tls) as (port, failures, closed):
        client = SoapRegistryClient(f"https://localhost:{port}{REGISTRY_PATH}", timeout=10,
                                    ssl_context=ssl_context_for_client(node(pki, who)))
        with pytest.raises(RegistryUnavailable):
            client.known_document_unique_ids(["1.2.250.1.999.1.1"])
        closed.wait_closed(1)
    [failure] = failures.items
    assert (failure.reason, failure.subject, failure.peer_host) == (reason, getattr(pki, who).subject, "127.0.0.1")


def test_a_node_without_certificate_is_refused_and_reported_once(tmp_path, pki, server_tls):
    import ssl

    anonymous = ssl.create_default_context(cafile=str(pki.ca_bundle))
    with carnet_over_tls(tmp_path, server_tls) as (port, failures, closed):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            https_get(port, REGISTRY_PATH + "?wsdl", anonymous)
        closed.wait_closed(1)
    assert [f.reason for f in failures.items] == [FailureReason.NO_CERTIFICATE]


def test_the_registry_client_refuses_a_registry_from_an_unknown_ca(tmp_path, pki):
    rogue = TlsSettings(pki.rogue_server.certificate, pki.rogue_server.private_key, pki.ca_bundle)
    with carnet_over_tls(tmp_path, rogue) as (port, failures, _):
        client = SoapRegistryClient(f"https://localhost:{port}{REGISTRY_PATH}", timeout=10,
                                    ssl_context=ssl_context_for_client(node(pki, "client")))
        with pytest.raises(RegistryUnavailable, match="CERTIFICATE_VERIFY_FAILED") as caught:
            client.known_document_unique_ids(["1.2.250.1.999.1.1"])
    assert caught.value.delivered is False  # refused before anything was sent
    assert failures.items == []
