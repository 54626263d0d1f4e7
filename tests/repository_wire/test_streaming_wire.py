"""ITI-41 over MTOM processed as the body arrives (issue 3: "each document part streams through
SHA-1 and size counting, encryption and into the blob store as it arrives"), on a listening Carnet
with its filesystem blob store: a request sent in two halves is already being staged (encrypted)
before its second half is sent; an early fault is answered once the body is in, on a connection
that stays usable; a client gone mid-body leaves nothing staged and nothing registered."""

from __future__ import annotations

import http.client
import os
import socket
import time
from urllib.parse import urlsplit

from carnet_support import running_carnet
from repository.blobs.fs import STAGING_DIR
from repository_wire.xds_wire import (
    INS,
    REPO_UID,
    Doc,
    HttpAnswer,
    as_mtom,
    assert_success,
    new_oid,
    pnr,
    provide,
    read_soap,
    retrieve,
)

SIZE = 6 * 1024 * 1024  # above soap.edge.STREAM_MIN_BYTES


def _document(n: int = SIZE) -> bytes:
    block = b"<ClinicalDocument>streamed as it arrives " + os.urandom(16).hex().encode() + b"</ClinicalDocument>\n"
    return (block * (n // len(block) + 1))[:n]


def _staged_bytes(carnet) -> int:
    staging = carnet.app.settings.blob_path / STAGING_DIR
    return sum(p.stat().st_size for p in staging.glob("*")) if staging.exists() else 0


def _open(url: str, content_type: str, length: int) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.putrequest("POST", parts.path)
    conn.putheader("Content-Type", content_type)
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    return conn


def _half_sent(carnet) -> tuple[http.client.HTTPConnection, str, bytes, bytes]:
    """An ITI-41 of a SIZE document over MTOM whose first half only is sent: (connection, uniqueId,
    document, the whole body)."""
    carnet.store.add_patient(INS)
    uid, document = new_oid(), _document()
    content_type, body = as_mtom(pnr(INS, [Doc(document, uid)], inline=False), {"Document01": document})
    conn = _open(carnet.repository_url, content_type, len(body))
    conn.send(body[: len(body) // 2])
    return conn, uid, document, body


def _until(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_a_document_is_staged_while_its_request_is_still_arriving(engine, tmp_path):
    with running_carnet(engine, tmp_path, repository_unique_id=REPO_UID) as carnet:
        conn, uid, document, body = _half_sent(carnet)
        # Half the body sent, the rest held back: its document part is already being encrypted
        # into the staging area (the body is not kept whole first).
        assert _until(lambda: _staged_bytes(carnet) >= SIZE // 4), _staged_bytes(carnet)
        staged = next((carnet.app.settings.blob_path / STAGING_DIR).iterdir())
        assert document[:4096] not in staged.read_bytes()
        conn.send(body[len(body) // 2:])
        response = conn.getresponse()
        answer = read_soap(HttpAnswer(response.status, response.getheader("content-type", ""), response.read()))
        conn.close()
        assert_success(answer)
        got = retrieve(carnet.repository_url, [(REPO_UID, uid)])
        assert got.documents[uid][2] == document


def test_an_early_fault_is_answered_once_the_body_is_in_and_the_connection_stays_usable(engine, tmp_path):
    with running_carnet(engine, tmp_path, repository_unique_id=REPO_UID) as carnet:
        # no patient added: the registry refuses; and an unknown action in the root: a fault at once
        document = _document()
        content_type, body = as_mtom(pnr(INS, [Doc(document, new_oid())], inline=False), {"Document01": document})
        body = body.replace(b"urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b", b"urn:example:not-an-action", 2)
        content_type = content_type.replace("urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b", "urn:example:not-an-action")
        conn = _open(carnet.repository_url, content_type, len(body))
        for k in range(0, len(body), 256 * 1024):
            conn.send(body[k:k + 256 * 1024])
        response = conn.getresponse()
        data = response.read()
        assert response.status == 400 and b"ActionNotSupported" in data
        # the same connection, a second request: the rest of the first body was not taken for it
        conn.request("GET", urlsplit(carnet.repository_url).path + "?wsdl")
        again = conn.getresponse()
        assert again.status == 200 and b"definitions" in again.read()
        conn.close()
        assert _staged_bytes(carnet) == 0


def test_a_client_gone_mid_body_leaves_nothing_staged_nor_registered(engine, tmp_path):
    with running_carnet(engine, tmp_path, repository_unique_id=REPO_UID) as carnet:
        conn, uid, _document_sent, _body = _half_sent(carnet)
        assert _until(lambda: _staged_bytes(carnet) > 0)
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        assert _until(lambda: _staged_bytes(carnet) == 0), "the half-received document stays staged"
        got = retrieve(carnet.repository_url, [(REPO_UID, uid)])
        assert uid not in got.documents
        # and Carnet goes on serving
        uid2, small = new_oid(), b"<ClinicalDocument>after</ClinicalDocument>"
        assert_success(provide(carnet.repository_url, pnr(INS, [Doc(small, uid2)]), mtom=True))
