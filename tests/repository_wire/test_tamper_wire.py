"""Tampering seen from the wire (issue 3: "tampered ciphertext, a wrong master key ... are each
detected"): a corrupted blob file never yields altered bytes (the MTOM response is aborted after
the last authentic segment), and a Carnet restarted with another master key answers
XDSRepositoryError for the documents it cannot decrypt, not garbage."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import struct
from typing import NamedTuple
from urllib.parse import urlsplit

import pytest
from lxml import etree

from carnet_support import running_carnet
from registry import constants as C
from repository.blobs import object_key
from repository.crypto import DEFAULT_SEGMENT_SIZE, HEADER_SIZE
from repository_wire.xds_wire import (
    ACTION_ITI43,
    REPO_UID,
    SELF5,
    SOAP_CONTENT_TYPE,
    Doc,
    assert_success,
    error_codes,
    new_oid,
    pnr,
    provide,
    retrieve,
    retrieve_request,
)
from soap.edge import ONE_PASS_BYTES, STREAM_BATCH_BYTES
from soap.envelope import parse_content_type
from soap.mtom import MultipartParser, PartData, PartHeaders
from support import soap_envelope

pytestmark = pytest.mark.integration

MASTER_KEY_ENV = "CARNET_MASTER_KEY"


def _content(n_bytes: int) -> bytes:
    return b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n_bytes // 32))


class RawRetrieve(NamedTuple):
    status: int
    received: bytes  # the document part's bytes, as far as they came
    error: BaseException | None  # what ended the read early, if anything
    root: bytes  # the root part (or the whole body of a non-MTOM answer)


def retrieve_raw(url: str, doc_uid: str) -> RawRetrieve:
    """ITI-43, the MTOM answer parsed as it arrives and read as far as the server sends it."""
    parts = urlsplit(url)
    envelope = soap_envelope(etree.tostring(retrieve_request([(REPO_UID, doc_uid)])), ACTION_ITI43)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    received, root, error = bytearray(), bytearray(), None
    try:
        conn.request("POST", parts.path, body=envelope, headers={"Content-Type": SOAP_CONTENT_TYPE})
        resp = conn.getresponse()
        mime, params = parse_content_type(resp.getheader("Content-Type"))
        if mime != "multipart/related":
            return RawRetrieve(resp.status, b"", None, resp.read())
        parser, in_root = MultipartParser(params["boundary"].encode()), True
        try:
            while chunk := resp.read(16 * 1024):
                for event in parser.feed(chunk):
                    if isinstance(event, PartHeaders):
                        in_root = event.headers["content-id"].strip("<>") == params["start"].strip("<>")
                    elif isinstance(event, PartData):
                        (root if in_root else received).extend(event.data)
            parser.end()
        except (http.client.HTTPException, ConnectionError) as exc:
            error = exc
        return RawRetrieve(resp.status, bytes(received), error, bytes(root))
    finally:
        conn.close()


def _ciphertext_start(blob_file: bytes) -> int:
    """Where the crypto output starts in a filesystem blob file (`repository.blobs.fs` layout:
    8-byte magic, 4-byte big-endian metadata length, the metadata, then the object's bytes)."""
    (n,) = struct.unpack(">I", blob_file[8:12])
    return 12 + n


def test_corrupted_blob_byte_never_reaches_the_consumer(carnet):
    carnet.store.add_patient(SELF5)
    content = _content(2 * ONE_PASS_BYTES)  # large enough to be streamed, not sent in one pass
    uid = new_oid()
    assert_success(provide(carnet.repository_url, pnr(SELF5, [Doc(content, uid, "application/pdf")]), mtom=True))
    path = carnet.repository.blobs.path(object_key(REPO_UID, uid))
    original = path.read_bytes()
    first_segment = _ciphertext_start(original) + HEADER_SIZE + 100

    positions = {
        "first segment": first_segment,
        "middle": len(original) // 2,
        "last byte (final GCM tag)": len(original) - 1,
    }
    for where, position in positions.items():
        tampered = bytearray(original)
        tampered[position] ^= 0x01
        path.write_bytes(bytes(tampered))
        got = retrieve_raw(carnet.repository_url, uid)
        if position < first_segment + STREAM_BATCH_BYTES // 2:
            # detected before anything was sent (the edge pulls the first batch first): a Receiver fault
            assert got.status == 500, where
            assert b"Receiver" in got.root and b"RetrieveDocumentSetResponse" not in got.root, where
        else:
            # detected mid-stream: the connection is aborted after the last authentic segment
            assert got.status == 200, where
            assert got.error is not None, f"a blob corrupted at its {where} was retrieved in full"
            assert isinstance(got.error, (http.client.IncompleteRead, ConnectionError)), (where, got.error)
            assert b"RetrieveDocumentSetResponse" in got.root
            assert len(got.received) > DEFAULT_SEGMENT_SIZE, where  # authentic segments did come first
        # never an altered byte: what came is a strict prefix of the document
        assert len(got.received) < len(content) and content.startswith(got.received), where

        path.write_bytes(original)  # the same request succeeds once the blob is restored
        assert retrieve(carnet.repository_url, [(REPO_UID, uid)]).documents[uid][2] == content


def test_wrong_master_key_is_a_repository_error_not_garbage(engine, tmp_path, monkeypatch):
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    uid, content = new_oid(), _content(200 * 1024)
    with running_carnet(engine, tmp_path, repository_unique_id=REPO_UID) as carnet:
        carnet.store.add_patient(SELF5)
        assert_success(provide(carnet.repository_url, pnr(SELF5, [Doc(content, uid, "text/plain")]), mtom=True))
    assert (tmp_path / "master.key").exists()  # generated on first start

    monkeypatch.setenv(MASTER_KEY_ENV, base64.b64encode(os.urandom(32)).decode())
    with running_carnet(engine, tmp_path, repository_unique_id=REPO_UID) as carnet:
        got = retrieve(carnet.repository_url, [(REPO_UID, uid)])
        assert got.status == C.RESPONSE_FAILURE
        assert [code for code, _ in got.errors] == ["XDSRepositoryError"]
        assert got.documents == {}
        assert got.answer.attachments == {}  # not a byte of the document
        # a new document for the same dossier cannot be encrypted under an unusable key either
        answer = provide(carnet.repository_url, pnr(SELF5, [Doc(b"new", new_oid())]), mtom=True)
        assert answer.body.get("status") == C.RESPONSE_FAILURE
        assert "XDSRepositoryError" in error_codes(answer.body)

    monkeypatch.delenv(MASTER_KEY_ENV)
    with running_carnet(engine, tmp_path, repository_unique_id=REPO_UID) as carnet:  # the right key again
        got = retrieve(carnet.repository_url, [(REPO_UID, uid)])
        assert (got.status, got.documents[uid][2]) == (C.RESPONSE_SUCCESS, content)


def test_corrupted_small_blob_is_a_receiver_fault_with_no_document_bytes(carnet):
    """A reply small enough to be built in one pass is checked whole before anything is sent."""
    carnet.store.add_patient(SELF5)
    content = _content(ONE_PASS_BYTES // 4)
    uid = new_oid()
    assert_success(provide(carnet.repository_url, pnr(SELF5, [Doc(content, uid, "application/pdf")]), mtom=True))
    path = carnet.repository.blobs.path(object_key(REPO_UID, uid))
    original = path.read_bytes()
    tampered = bytearray(original)
    tampered[len(original) // 2] ^= 0x01
    path.write_bytes(bytes(tampered))
    got = retrieve_raw(carnet.repository_url, uid)
    assert got.status == 500
    assert b"Receiver" in got.root and b"RetrieveDocumentSetResponse" not in got.root
    assert got.received == b""
    path.write_bytes(original)
    assert retrieve(carnet.repository_url, [(REPO_UID, uid)]).documents[uid][2] == content
