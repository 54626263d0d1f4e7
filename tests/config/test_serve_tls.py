"""`carnet serve` as a secure node (ITI-19): HTTPS and MLLP over TLS with client certificates, a
refused node audited in the built-in Audit Record Repository (ITI-20, read back with ITI-81)."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import time
import urllib.request

import pytest

from pix.mllp import MllpDecoder, frame
from pki_support import write_pki
from support import free_port, start_serve


@pytest.fixture
def secure_carnet(tmp_path):
    pki = write_pki(tmp_path / "pki")
    http_port, mllp_port = free_port(), free_port()
    proc, out = start_serve(
        ["--data-dir", str(tmp_path / "var")],
        CARNET_HTTP_PORT=str(http_port), CARNET_MLLP_PORT=str(mllp_port),
        CARNET_PIX_DOMAINS="1.2.250.1.999.1.1",
        CARNET_TLS_CERTIFICATE=str(pki.server.certificate), CARNET_TLS_PRIVATE_KEY=str(pki.server.private_key),
        CARNET_TLS_CA_BUNDLE=str(pki.ca_bundle), CARNET_TLS_HTTP="true", CARNET_TLS_MLLP="true",
    )
    try:
        assert f"https://127.0.0.1:{http_port}/xds/registry".encode() in out, out.decode()
        assert b"MLLP over TLS" in out, out.decode()
        yield pki, http_port, mllp_port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def _client_context(pki, pem=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_bundle))
    if pem is not None:
        ctx.load_cert_chain(pem.certificate, pem.private_key)
    return ctx


def _get(url: str, ctx: ssl.SSLContext):
    with urllib.request.urlopen(url, timeout=15, context=ctx) as r:
        return r.status, r.read()


def test_https_and_mllp_need_a_trusted_client_certificate_and_refusals_are_audited(secure_carnet):
    pki, http_port, mllp_port = secure_carnet
    base = f"https://localhost:{http_port}"
    trusted = _client_context(pki, pki.client)

    status, wsdl = _get(base + "/xds/registry?wsdl", trusted)
    assert status == 200 and b"RegisterDocumentSet-b" in wsdl

    # no client certificate, an expired one, one from another CA: refused at the handshake
    for pem in (None, pki.expired, pki.foreign):
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            _get(base + "/xds/registry?wsdl", _client_context(pki, pem))

    # MLLP over TLS: an ITI-8 feed from a trusted node is answered
    raw = socket.create_connection(("127.0.0.1", mllp_port), timeout=15)
    with trusted.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(frame(
            b"MSH|^~\\&|HIS|HOP|CARNET|CARNET|20261123||ADT^A01^ADT_A01|tls-1|P|2.5\r"
            b"EVN||20261123\rPID|||IPP-9^^^&1.2.250.1.999.1.1&ISO^PI||NOM^PRENOM||19700101|F\rPV1||N\r"))
        decoder, answer = MllpDecoder(1 << 20), []
        while not answer:
            answer = [m for m in decoder.feed(tls.recv(65536)) if isinstance(m, bytes)]
    assert b"MSA|AA|tls-1" in answer[0]

    # the three refused nodes are security alerts in the ARR (DCM 110113, node authentication 110126)
    def alerts():
        _, body = _get(base + "/atna/AuditEvent?type=110113&_count=100", trusted)
        return json.loads(body).get("entry", [])

    deadline = time.monotonic() + 20
    found = alerts()
    while len(found) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
        found = alerts()
    assert len(found) >= 3, found
    subtypes = {c.get("code") for e in found for c in e["resource"].get("subtype", [])}
    assert "110126" in subtypes, found
