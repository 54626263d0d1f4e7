"""The ITI-41 intake (repository.intake): streaming hash + size + encryption into staged blobs.

Unit level: an in-memory key vault fake where the database plays no part, the filesystem blob store
where memory is measured (the in-memory store keeps every byte by design).
"""

from __future__ import annotations

import base64
import hashlib
import tracemalloc
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from registry import constants as C
from registry.errors import XdsErrorCode as E
from repository.blobs import object_key
from repository.blobs.fs import FilesystemBlobStore
from repository.blobs.memory import MemoryBlobStore
from repository.crypto import DocumentBinding, ciphertext_size, decrypt
from repository.intake import (
    DiscardedPart,
    InvalidBase64,
    Iti41Intake,
    StagedDocument,
    iter_base64,
    metadata_text,
    plaintext_size,
)
from repository.keys import MemoryKeyVault, MasterKey
from soap.envelope import SoapRequest

REPO = "1.2.250.1.999.1.1"
PATIENT = "1234567890123^^^&1.2.250.1.213.1.4.10&ISO"
XOP = "http://www.w3.org/2004/08/xop/include"
RIM = "{%s}" % C.NS_RIM


def _entry(doc_id: str, unique_id: str, *, mime="application/pdf", slots=()) -> str:
    slot_xml = "".join(
        f'<rim:Slot name="{n}"><rim:ValueList><rim:Value>{v}</rim:Value></rim:ValueList></rim:Slot>' for n, v in slots
    )
    return f"""
      <rim:ExtrinsicObject id="{doc_id}" mimeType="{mime}" objectType="{C.DOC_ENTRY_STABLE}">{slot_xml}
        <rim:ExternalIdentifier id="{doc_id}-p" registryObject="{doc_id}" identificationScheme="{C.DE_PATIENT_ID}"
                                value="{PATIENT.replace('&', '&amp;')}"/>
        <rim:ExternalIdentifier id="{doc_id}-u" registryObject="{doc_id}" identificationScheme="{C.DE_UNIQUE_ID}"
                                value="{unique_id}"/>
      </rim:ExtrinsicObject>"""


def pnr_body(entries: str, documents: str) -> etree._Element:
    xml = f"""<xdsb:ProvideAndRegisterDocumentSetRequest xmlns:xdsb="{C.NS_XDSB}" xmlns:lcm="{C.NS_LCM}"
        xmlns:rim="{C.NS_RIM}" xmlns:xop="{XOP}">
      <lcm:SubmitObjectsRequest><rim:RegistryObjectList>{entries}</rim:RegistryObjectList></lcm:SubmitObjectsRequest>
      {documents}
    </xdsb:ProvideAndRegisterDocumentSetRequest>"""
    return etree.fromstring(xml.encode())


def request(body: etree._Element) -> SoapRequest:
    return SoapRequest(action="x", message_id=None, to=None, reply_to=None, relates_to=None,
                       header_elements=(), body=body, envelope=body)


@pytest.fixture
def vault():
    return MemoryKeyVault(MasterKey.generate())


def read_plain(blobs, vault, unique_id: str) -> bytes:
    with blobs.open_read(object_key(REPO, unique_id)) as r:
        return decrypt(vault.get, DocumentBinding(REPO, unique_id), b"".join(r))


# --- streaming ---------------------------------------------------------------------------------


def test_a_50_mb_part_streams_in_bounded_memory(tmp_path, vault):
    blobs = FilesystemBlobStore(tmp_path / "blobs", durable=False)
    intake = Iti41Intake(blobs, vault, REPO)
    body = pnr_body(_entry("Doc1", "1.2.3.1"), '<xdsb:Document id="Doc1"><xop:Include href="cid:big@x"/></xdsb:Document>')
    intake.on_root(request(body))
    chunk = bytes(range(256)) * 256  # 64 KiB
    total = 50 * 1024 * 1024
    expected = hashlib.sha1()
    tracemalloc.start()
    try:
        sink = intake.open_part("big@x", {"content-type": "application/pdf"})
        for _ in range(total // len(chunk)):
            sink.write(chunk)
            expected.update(chunk)
        doc = sink.close()
        doc.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(doc, StagedDocument)
    assert doc.hash == expected.hexdigest() and doc.size == total
    assert peak < 4 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
    key = object_key(REPO, "1.2.3.1")
    assert blobs.size(key) == ciphertext_size(total)
    assert plaintext_size(blobs.size(key), 64 * 1024) == total
    meta = blobs.read_metadata(key)
    assert meta["patient-id"] == PATIENT and meta["mime-type"] == "application/pdf"
    assert "hash" not in meta  # not known before the first byte of a streamed part


def test_streamed_part_contradicting_its_supplied_hash_is_never_committed(vault):
    blobs = MemoryBlobStore()
    claimed = hashlib.sha1(b"what was announced").hexdigest()
    body = pnr_body(_entry("Doc1", "1.2.3.1", slots=[("hash", claimed)]),
                    '<xdsb:Document id="Doc1"><xop:Include href="cid:a@x"/></xdsb:Document>')
    intake = Iti41Intake(blobs, vault, REPO)
    intake.on_root(request(body))
    sink = intake.open_part("a@x", {})
    sink.write(b"what was sent")
    doc = sink.close()
    assert doc.hash == hashlib.sha1(b"what was sent").hexdigest()
    assert doc.writer is None and blobs.staged_count() == 0  # aborted: its metadata would lie
    doc.commit()
    assert blobs.keys() == []


def test_parts_no_document_or_entry_claims_are_discarded(vault):
    blobs = MemoryBlobStore()
    body = pnr_body(
        _entry("Doc1", "1.2.3.1"),
        '<xdsb:Document id="Doc1"><xop:Include href="cid:a@x"/></xdsb:Document>'
        '<xdsb:Document id="Orphan"><xop:Include href="cid:b@x"/></xdsb:Document>',
    )
    intake = Iti41Intake(blobs, vault, REPO)
    intake.on_root(request(body))
    for cid in ("b@x", "stray@x"):
        sink = intake.open_part(cid, {})
        sink.write(b"data")
        result = sink.close()
        assert isinstance(result, DiscardedPart) and result.problem.code == E.XDSMissingDocumentMetadata
    assert blobs.staged_count() == 0 and intake.staged == {}


def test_existing_blob_is_only_hashed_never_staged_again(vault):
    blobs = MemoryBlobStore()
    body = pnr_body(_entry("Doc1", "1.2.3.1"), '<xdsb:Document id="Doc1">aGVsbG8=</xdsb:Document>')
    first = Iti41Intake(blobs, vault, REPO)
    first.expect(body)
    first.stage_inline("Doc1", body.find("{%s}Document" % C.NS_XDSB)).commit()
    before = blobs.read_metadata(object_key(REPO, "1.2.3.1"))
    second = Iti41Intake(blobs, vault, REPO)
    second.expect(body)
    doc = second.stage_inline("Doc1", body.find("{%s}Document" % C.NS_XDSB))
    assert doc.writer is None and doc.existing == (hashlib.sha1(b"hello").hexdigest(), 5)
    assert blobs.staged_count() == 0 and blobs.read_metadata(object_key(REPO, "1.2.3.1")) == before
    assert read_plain(blobs, vault, "1.2.3.1") == b"hello"


def test_inline_document_is_staged_with_hash_and_size_in_its_metadata(vault):
    blobs = MemoryBlobStore()
    content = b"<ClinicalDocument/>" * 3000
    b64 = base64.encodebytes(content).decode()  # with line breaks, as many sources send it
    body = pnr_body(_entry("Doc1", "1.2.3.1", mime="text/xml"), f'<xdsb:Document id="Doc1">{b64}</xdsb:Document>')
    intake = Iti41Intake(blobs, vault, REPO)
    intake.expect(body)
    doc = intake.stage_inline("Doc1", body.find("{%s}Document" % C.NS_XDSB))
    assert blobs.keys() == []  # staged, not visible
    doc.commit()
    meta = blobs.read_metadata(object_key(REPO, "1.2.3.1"))
    assert meta["hash"] == hashlib.sha1(content).hexdigest() and meta["size"] == str(len(content))
    assert meta["intake-id"] == intake.intake_id
    assert read_plain(blobs, vault, "1.2.3.1") == content


def test_store_failure_while_streaming_is_a_repository_error(vault):
    class FailingStore(MemoryBlobStore):
        def open_staged(self, key, metadata=None):
            writer = super().open_staged(key, metadata)

            def broken(data):
                from repository.blobs import BlobStoreError

                raise BlobStoreError("disk full")

            writer._write = broken
            return writer

    blobs = FailingStore()
    body = pnr_body(_entry("Doc1", "1.2.3.1"), '<xdsb:Document id="Doc1"><xop:Include href="cid:a@x"/></xdsb:Document>')
    intake = Iti41Intake(blobs, vault, REPO, segment_size=16)
    intake.on_root(request(body))
    sink = intake.open_part("a@x", {})
    sink.write(b"x" * 100)
    doc = sink.close()
    assert doc.problem.code == E.XDSRepositoryError and doc.writer is None
    assert blobs.staged_count() == 0


# --- helpers (property tests) ------------------------------------------------------------------


@given(data=st.binary(max_size=3000), width=st.integers(1, 100), slice_chars=st.integers(1, 500))
@settings(max_examples=200)
def test_iter_base64_decodes_any_wrapping_and_slicing(data, width, slice_chars):
    text = base64.b64encode(data).decode()
    wrapped = "\n ".join(text[i : i + width] for i in range(0, len(text), width))
    assert b"".join(iter_base64(wrapped, slice_chars)) == data


@given(text=st.text(alphabet="ABCabc012+/=!-_ \n", max_size=60))
@settings(max_examples=300)
def test_iter_base64_accepts_exactly_valid_base64(text):
    import binascii

    compact = "".join(text.split())
    try:
        expected = binascii.a2b_base64(compact, strict_mode=True) if len(compact) % 4 == 0 else None
    except binascii.Error:
        expected = None
    if expected is None:
        with pytest.raises(InvalidBase64):
            b"".join(iter_base64(text, 1000))
    else:
        assert b"".join(iter_base64(text, 1000)) == expected


@given(st.text(max_size=80))
def test_metadata_text_is_storable_and_reversible(value):
    from repository.blobs import check_metadata

    text = metadata_text(value)
    check_metadata({"patient-id": text})
    assert unquote(text) == value


@given(size=st.integers(0, 5_000_000), segment=st.sampled_from([1, 16, 4096, 65536]))
def test_plaintext_size_inverts_ciphertext_size(size, segment):
    if size // segment > 100_000:
        size = segment * 1000 + size % segment
    assert plaintext_size(ciphertext_size(size, segment), segment) == size
