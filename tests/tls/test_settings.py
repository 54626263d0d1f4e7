"""TlsSettings and the factories' start-up checks: bad settings fail when the port is built,
with the file named, never at the first connection."""

from __future__ import annotations

import ssl

import pytest

from config.tls import (
    BCP195_CIPHERS,
    TlsConfigurationError,
    TlsSettings,
    client_context_factory,
    listen_tls,
    server_context_factory,
    ssl_context_for_client,
)
from reactor_support import call_in_reactor, reactor
from tls.helpers import Failures, https_get, stdlib_context, tls_exchange, echo_factory

FACTORIES = {
    "server": lambda tls: server_context_factory(tls),
    "twisted client": lambda tls: client_context_factory(tls, "localhost"),
    "stdlib client": lambda tls: ssl_context_for_client(tls),
}


@pytest.mark.parametrize("version", ["TLSv1.1", "TLSv1", "SSLv3", "1.2"])
def test_no_minimum_below_tls_1_2(pki, version):
    with pytest.raises(TlsConfigurationError, match="TLSv1.2"):
        TlsSettings(pki.server.certificate, pki.server.private_key, pki.ca_bundle, minimum_version=version)


def test_defaults_are_mutual_authentication_tls_1_2_and_bcp195(pki):
    tls = TlsSettings(str(pki.server.certificate), str(pki.server.private_key), str(pki.ca_bundle))
    assert (tls.require_client_certificate, tls.minimum_version, tls.cipher_string) == (True, "TLSv1.2", BCP195_CIPHERS)
    assert tls.certificate == pki.server.certificate  # str converted to Path


def test_from_mapping_resolves_relative_paths_and_defaults_the_key_to_the_certificate(pki):
    tls = TlsSettings.from_mapping(
        {"certificate": pki.combined.name, "ca_bundle": pki.ca_bundle.name,
         "require_client_certificate": "false", "minimum_version": "TLSv1.3"},
        base_dir=pki.ca_bundle.parent,
    )
    assert tls == TlsSettings(pki.combined, pki.combined, pki.ca_bundle, require_client_certificate=False,
                              minimum_version="TLSv1.3")


@pytest.mark.parametrize(("values", "message"), [
    ({}, "needs a certificate"),
    ({"certificate": "a.pem", "verify_client": True}, "unknown TLS setting"),
    ({"certificate": "a.pem", "minimum_version": "TLSv1.0"}, "TLSv1.2"),
])
def test_from_mapping_refuses_bad_tables(values, message):
    with pytest.raises(TlsConfigurationError, match=message):
        TlsSettings.from_mapping(values)


def test_a_certificate_and_key_in_one_file_work_everywhere(pki, server_tls):
    tls = TlsSettings.from_mapping({"certificate": str(pki.combined), "ca_bundle": str(pki.ca_bundle)})
    port = call_in_reactor(lambda: listen_tls(reactor(), 0, echo_factory(), server_tls, interface="127.0.0.1"))
    try:
        assert tls_exchange(port.getHost().port, ssl_context_for_client(tls), b"x")[0] == b"x"
    finally:
        call_in_reactor(port.stopListening)


@pytest.mark.parametrize("factory", FACTORIES)
def test_a_missing_file_is_named(pki, tmp_path, factory):
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(TlsConfigurationError, match="nowhere.pem"):
        FACTORIES[factory](TlsSettings(missing, pki.server.private_key, pki.ca_bundle))
    with pytest.raises(TlsConfigurationError, match="nowhere.pem"):
        FACTORIES[factory](TlsSettings(pki.server.certificate, pki.server.private_key, missing))


@pytest.mark.parametrize("factory", FACTORIES)
def test_a_key_that_does_not_match_the_certificate_is_refused(pki, factory):
    with pytest.raises(TlsConfigurationError, match="private key|key values mismatch|KEY_VALUES_MISMATCH"):
        FACTORIES[factory](TlsSettings(pki.server.certificate, pki.client.private_key, pki.ca_bundle))


@pytest.mark.parametrize("factory", FACTORIES)
def test_a_file_that_is_not_pem_is_refused(pki, tmp_path, factory):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(TlsConfigurationError, match="junk.pem"):
        FACTORIES[factory](TlsSettings(junk, pki.server.private_key, pki.ca_bundle))


@pytest.mark.parametrize("factory", FACTORIES)
def test_an_unknown_cipher_string_is_refused(pki, factory):
    with pytest.raises(TlsConfigurationError, match="cipher"):
        FACTORIES[factory](TlsSettings(pki.server.certificate, pki.server.private_key, pki.ca_bundle,
                                       ciphers="NO-SUCH-CIPHER"))


def test_requiring_client_certificates_needs_a_ca_bundle(pki):
    with pytest.raises(TlsConfigurationError, match="ca_bundle"):
        server_context_factory(TlsSettings(pki.server.certificate, pki.server.private_key))


def test_a_server_without_ca_bundle_and_without_requirement_does_not_ask_for_certificates(pki):
    tls = TlsSettings(pki.server.certificate, pki.server.private_key, require_client_certificate=False)
    port = call_in_reactor(lambda: listen_tls(reactor(), 0, echo_factory(), tls, interface="127.0.0.1"))
    try:
        assert tls_exchange(port.getHost().port, stdlib_context(pki.ca_bundle), b"x")[0] == b"x"
    finally:
        call_in_reactor(port.stopListening)


def test_the_stdlib_client_context_has_the_floor_and_checks_names(pki):
    tls = TlsSettings(pki.client.certificate, pki.client.private_key, pki.ca_bundle)
    ctx = ssl_context_for_client(tls)
    assert (ctx.minimum_version, ctx.verify_mode, ctx.check_hostname) == (ssl.TLSVersion.TLSv1_2, ssl.CERT_REQUIRED, True)
    assert {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"} == set(BCP195_CIPHERS.split(":"))
    assert ssl_context_for_client(tls, verify_hostname=False).check_hostname is False


def test_intermediate_certificates_in_the_certificate_file_are_sent(pki):
    """Both sides trust only the root; each sends leaf + issuing CA from its certificate file."""
    from config.tls import client_context_factory  # noqa: F401 - same loading path as the server

    server = TlsSettings(pki.chained_server.certificate, pki.chained_server.private_key, pki.ca_bundle)
    client = TlsSettings(pki.chained_client.certificate, pki.chained_client.private_key, pki.ca_bundle)
    failures = Failures()
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from config.tls import peer_subject

    class WhoAmI(Resource):
        isLeaf = True

        def render_GET(self, request):  # noqa: N802
            return (peer_subject(request.channel.transport) or "anonymous").encode()

    port = call_in_reactor(lambda: listen_tls(reactor(), 0, Site(WhoAmI()), server, interface="127.0.0.1",
                                              on_failure=failures))
    try:
        status, body = https_get(port.getHost().port, "/", ssl_context_for_client(client))
    finally:
        call_in_reactor(port.stopListening)
    assert (status, body.decode()) == (200, pki.chained_client.subject)
    assert failures.items == []
