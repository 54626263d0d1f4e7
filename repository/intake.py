"""ITI-41 intake: document bytes → SHA-1 + size + AES-GCM segments → a staged blob, as they arrive.

ITI TF-2b §3.41.4.1.3: the Document Repository computes each document's `hash` (SHA-1 of its bytes,
hex) and `size`, and stores it under its uniqueId. Issue 3 / DESIGN.md §1: a document never sits
whole in memory; each MTOM part streams through `DocumentSink` (hash, count, encrypt, write) into
`BlobStore.open_staged(object_key(repositoryUniqueId, uniqueId))`. Nothing becomes visible until
the handler (`repository.iti41_provide_register`) commits the staged blobs.

`Iti41Intake` is the `soap.operation.StreamingIntake` of one request:
- `on_root(request)` reads the ProvideAndRegisterDocumentSetRequest metadata: each
  `xdsb:Document/@id` → its DocumentEntry, each `xop:Include` Content-ID → its Document;
- `open_part(cid, headers)` returns the sink of that document (`close()` → `StagedDocument`), or a
  `DiscardedPart` sink that stages nothing when no Document / DocumentEntry claims the part
  (XDSMissingDocumentMetadata, reported by the handler);
- `stage_inline(document_id, element)` / `stage_bytes(document_id, data)`: the same pipeline for an
  inline base64 `xdsb:Document` (non-MTOM requests) or an attachment already in memory.

Blob metadata (the contract read by ITI-43): `mime-type`, `patient-id`, `key-id`, `intake-id`, and
`hash` / `size` when they are known before the first byte (the store fixes metadata when staging
starts): always for inline and in-memory documents (hashed in a first pass), for a streamed part
only when the submitter supplied them (checked at close: a difference aborts the blob). A reader
needing the size of a blob without `size` derives it from the blob size
(`plaintext_size`). `intake-id` names the submission that wrote the blob: a rollback deletes a
blob only if it is still its own.

A key that already holds a blob is never written again (a resubmission): the part is only hashed,
and the handler compares with the stored document (identical: accepted, no rewrite; different:
XDSNonIdenticalHash / XDSNonIdenticalSize).

Every method blocks (key vault, blob store): it runs on a worker thread.
"""

from __future__ import annotations

import binascii
import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from urllib.parse import quote

import attrs
from lxml import etree

from registry import constants as C
from registry import ebrim
from registry.errors import RegistryError, XdsErrorCode, XdsFailure, infrastructure_code, infrastructure_message
from registry.model import DocumentEntry, SubmitObjectsRequest
from repository.blobs import BlobNotFound, BlobStoreError, StagedWriter, object_key
from repository.crypto import (
    DEFAULT_SEGMENT_SIZE,
    HEADER_SIZE,
    TAG_SIZE,
    DocumentBinding,
    SegmentDecryptor,
    SegmentEncryptor,
)

from soap.mtom import normalize_content_id
from soap.operation import PartSink

log = logging.getLogger("carnet.repository")

E = XdsErrorCode
NS_XDSB = C.NS_XDSB
NS_XOP = "http://www.w3.org/2004/08/xop/include"
T_PNR_REQUEST = f"{{{NS_XDSB}}}ProvideAndRegisterDocumentSetRequest"
T_DOCUMENT = f"{{{NS_XDSB}}}Document"
T_SUBMIT_OBJECTS_REQUEST = f"{{{C.NS_LCM}}}SubmitObjectsRequest"
T_XOP_INCLUDE = f"{{{NS_XOP}}}Include"

# Blob metadata names (the ITI-41 → ITI-43 contract, repository/blobs).
META_MIME_TYPE = "mime-type"
META_PATIENT_ID = "patient-id"
META_HASH = "hash"
META_SIZE = "size"
META_KEY_ID = "key-id"
META_INTAKE_ID = "intake-id"

DSG_DETACHED_FORMAT_CODE = "urn:ihe:iti:dsg:detached:2014"  # ITI TF-3 §5.5
BASE64_SLICE = 256 * 1024  # characters of base64 text decoded at a time


class InvalidBase64(ValueError):
    pass


# --------------------------------------------------------------------------------------- documents


@attrs.frozen
class EntryInfo:
    """What the intake needs from one DocumentEntry (ITI TF-3 §4.2.3.2)."""

    entry_id: str
    unique_id: str | None
    patient_id: str | None
    mime_type: str | None
    supplied_hash: str | None
    supplied_size: str | None
    format_codes: tuple[str, ...] = ()

    @classmethod
    def of(cls, entry: DocumentEntry) -> "EntryInfo":
        return cls(
            entry_id=entry.id,
            unique_id=entry.unique_id,
            patient_id=entry.patient_id,
            mime_type=entry.mime_type,
            supplied_hash=entry.slot1("hash"),
            supplied_size=entry.slot1("size"),
            format_codes=tuple(c.code for c in entry.codes(C.DE_FORMAT_CODE)),
        )


@attrs.define(eq=False)
class StagedDocument:
    """One document of the submission after intake: its hash and size, and either a staged (not yet
    committed) blob `writer`, or `existing` = (hash, size) of the blob already stored under `key`
    (nothing staged then). `problem` is set when the document could not be staged."""

    document_id: str
    unique_id: str
    patient_id: str
    mime_type: str
    key: str
    intake_id: str
    format_codes: tuple[str, ...] = ()
    hash: str | None = None
    size: int | None = None
    writer: StagedWriter | None = None
    existing: tuple[str, int] | None = None
    sha256: bytes | None = None  # computed only when the repository seals (repository.seal)
    retained: bytes | None = None  # the bytes, kept for signature checks (bounded)
    retained_complete: bool = False
    problem: RegistryError | None = None
    committed: bool = False
    content_id: str | None = None
    intake: "Iti41Intake | None" = attrs.field(default=None, repr=False)

    @property
    def is_new(self) -> bool:
        """True when this submission writes the blob (the key held nothing when staging began)."""
        return self.existing is None

    def commit(self) -> None:
        if self.writer is not None and not self.committed:
            self.writer.commit()
            self.committed = True

    def abort(self) -> None:
        if self.writer is not None and not self.committed:
            try:
                self.writer.abort()
            except Exception:  # noqa: BLE001 - the sweep removes what an abort leaves
                log.warning("could not abort the staged blob %s", self.key, exc_info=True)


@attrs.frozen
class DiscardedPart:
    """What `close()` returns for an MTOM part no Document (or no DocumentEntry) claims."""

    content_id: str
    problem: RegistryError | None
    size: int = 0


class DocumentSink:
    """Streams one document: SHA-1 + size + `SegmentEncryptor` + staged blob writer (or only the hash
    when the key already holds a blob). Memory: one segment plus the retained bytes, if any."""

    def __init__(self, doc: StagedDocument, encryptor: SegmentEncryptor | None, retain_limit: int,
                 *, sha256: bool = False) -> None:
        self.doc = doc
        self._sha1 = hashlib.sha1()
        self._sha256 = hashlib.sha256() if sha256 else None  # for the repository's seal (repository.seal)
        self._size = 0
        self._encryptor = encryptor
        self._retain_limit = retain_limit
        self._retained: bytearray | None = bytearray() if retain_limit > 0 else None
        self._closed = False

    def write(self, data: bytes) -> None:
        if self._closed:
            raise ValueError("write on a closed document sink")
        if not data:
            return
        self._sha1.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        self._size += len(data)
        if self._retained is not None:
            if len(self._retained) + len(data) <= self._retain_limit:
                self._retained += data
            else:
                self._retained = None  # too large to keep: signature not verifiable
        doc = self.doc
        if doc.writer is not None and doc.problem is None:
            try:
                out = self._encryptor.update(data)
                if out:
                    doc.writer.write(out)
            except Exception as exc:  # noqa: BLE001 - store/crypto failure: XDSRepositoryError
                self._fail(exc)

    def close(self) -> StagedDocument:
        if self._closed:
            return self.doc
        self._closed = True
        doc = self.doc
        doc.hash = self._sha1.hexdigest()
        doc.size = self._size
        if self._sha256 is not None:
            doc.sha256 = self._sha256.digest()
        if self._retained is not None:
            doc.retained, doc.retained_complete = bytes(self._retained), True
        if doc.writer is not None and doc.problem is None:
            try:
                doc.writer.write(self._encryptor.finalize())
            except Exception as exc:  # noqa: BLE001
                self._fail(exc)
        if doc.writer is not None and doc.problem is None and _mismatch_with_metadata(doc):
            doc.abort()  # the staged metadata claims another hash/size: never commit it
            doc.writer = None
        return doc

    def _fail(self, exc: Exception) -> None:
        log.error("ITI-41: staging document %s failed: %s", self.doc.unique_id, exc)
        code = infrastructure_code(exc, registry=False)
        self.doc.problem = RegistryError(
            code, infrastructure_message(code, f"document {self.doc.unique_id} could not be stored"), self.doc.unique_id
        )
        self.doc.abort()
        self.doc.writer = None


def _mismatch_with_metadata(doc: StagedDocument) -> bool:
    meta = getattr(doc.writer, "metadata", None) or {}
    staged_hash, staged_size = meta.get(META_HASH), meta.get(META_SIZE)
    if staged_hash is not None and staged_hash.lower() != (doc.hash or "").lower():
        return True
    return staged_size is not None and staged_size != str(doc.size)


# --------------------------------------------------------------------------------------- the intake


def retention_limit(signatures, entry: EntryInfo, submission_has_dsg: bool) -> int:
    """How many bytes of a document to keep in memory for the signature policy (0: none): XML
    documents (enveloped signatures), and every document of a submission carrying a DSG detached
    signature (its references are digested over them), up to the policy's parse cap."""
    mode = getattr(getattr(signatures, "mode", None), "value", "off")
    if signatures is None or mode == "off":
        return 0
    mime = (entry.mime_type or "").split(";", 1)[0].strip().lower()
    if submission_has_dsg or mime in ("text/xml", "application/xml") or mime.endswith("+xml"):
        return int(getattr(signatures, "max_bytes", 64 * 1024 * 1024))
    return 0


class Iti41Intake:
    """The `soap.operation.StreamingIntake` of one ITI-41 request (see the module docstring)."""

    def __init__(
        self,
        blobs,
        vault,
        repository_unique_id: str,
        *,
        signatures=None,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        sealing: bool = False,
    ) -> None:
        self.blobs = blobs
        self.sealing = sealing  # new documents' SHA-256 is computed for the repository's seal
        self.vault = vault
        self.repository_unique_id = repository_unique_id
        self.signatures = signatures
        self.segment_size = segment_size
        self.intake_id = uuid.uuid4().hex
        self.submission: SubmitObjectsRequest | None = None
        self.entries: dict[str, EntryInfo] = {}  # xdsb:Document/@id (= DocumentEntry id) → entry
        self.cids: dict[str, str] = {}  # Content-ID → xdsb:Document/@id
        self.staged: dict[str, StagedDocument] = {}  # xdsb:Document/@id → staged document
        self.problems: list[RegistryError] = []
        self.metadata_failed = False
        self._keys: set[str] = set()
        self._has_dsg = False
        self._root_seen = False

    # --- StreamingIntake -------------------------------------------------------------------------

    def on_root(self, request) -> None:
        self.expect(request.body)

    def open_part(self, content_id: str, headers: Mapping[str, str] | None = None) -> PartSink:
        document_id = self.cids.get(content_id)
        if document_id is None:
            problem = None
            if self._root_seen and not self.metadata_failed:
                problem = RegistryError(
                    E.XDSMissingDocumentMetadata,
                    f"MIME part <{content_id}> is not the content of any xdsb:Document",
                    content_id,
                    rule="iti41.part.unreferenced",
                )
            return _DiscardSink(content_id, problem)
        sink = self._open_document(document_id)
        if isinstance(sink, _DiscardSink):
            sink.content_id = content_id
        else:
            sink.doc.content_id = content_id
        return sink

    def abort(self) -> None:
        for doc in self.staged.values():
            doc.abort()

    # --- metadata ----------------------------------------------------------------------------------

    def expect(self, body: etree._Element, submission: SubmitObjectsRequest | None = None) -> None:
        """Read the request's metadata: DocumentEntries by id, xop:Include Content-IDs by Document."""
        self._root_seen = True
        if body.tag != T_PNR_REQUEST:
            self.metadata_failed = True
            return
        if submission is None:
            sor_el = body.find(T_SUBMIT_OBJECTS_REQUEST)
            if sor_el is None:
                self.metadata_failed = True
                self.problems.append(
                    RegistryError(E.XDSRepositoryMetadataError, "the request has no lcm:SubmitObjectsRequest",
                                  rule="iti41.request.structure")
                )
                return
            try:
                submission = ebrim.parse_submit_objects_request(sor_el)
            except XdsFailure as failure:
                self.metadata_failed = True
                self.problems.extend(failure.errors)
                return
        self.submission = submission
        for entry in submission.documents:
            info = EntryInfo.of(entry)
            self.entries.setdefault(entry.id, info)
            self._has_dsg = self._has_dsg or DSG_DETACHED_FORMAT_CODE in info.format_codes
        for document in body.iterchildren(T_DOCUMENT):
            include = document.find(T_XOP_INCLUDE)
            doc_id = document.get("id")
            if include is not None and doc_id:
                self.cids.setdefault(normalize_content_id(include.get("href") or ""), doc_id)

    # --- staging -----------------------------------------------------------------------------------

    def stage_inline(self, document_id: str, element: etree._Element) -> StagedDocument | DiscardedPart:
        """An inline base64 `xdsb:Document` (ITI TF-2b §3.41.4.1.2): decoded in slices, twice (hash
        first, so that the blob metadata carries hash and size), never held whole as bytes."""
        text = element.text or ""
        try:
            for _ in iter_base64(text):  # validate before staging anything
                pass
        except InvalidBase64:
            problem = RegistryError(E.XDSRepositoryMetadataError,
                                    f"xdsb:Document {document_id}: content is not valid base64", document_id,
                                    rule="iti41.document.base64")
            self.problems.append(problem)
            return DiscardedPart(document_id, problem)
        return self.stage_chunks(document_id, lambda: iter_base64(text))

    def stage_bytes(self, document_id: str, data: bytes) -> StagedDocument | DiscardedPart:
        """A document already in memory (an MTOM part the edge collected itself)."""
        view = memoryview(data)
        step = 1024 * 1024
        return self.stage_chunks(document_id, lambda: (bytes(view[i : i + step]) for i in range(0, len(view), step)))

    def stage_chunks(
        self, document_id: str, chunks: Callable[[], Iterable[bytes]]
    ) -> StagedDocument | DiscardedPart:
        """Stage from a re-iterable source: a first pass computes hash and size (blob metadata)."""
        sha1, size = hashlib.sha1(), 0
        for chunk in chunks():
            sha1.update(chunk)
            size += len(chunk)
        sink = self._open_document(document_id, known=(sha1.hexdigest(), size))
        for chunk in chunks():
            sink.write(chunk)
        return sink.close()

    def _open_document(self, document_id: str, known: tuple[str, int] | None = None):
        entry = self.entries.get(document_id)
        if entry is None:
            problem = None
            if not self.metadata_failed:
                problem = RegistryError(
                    E.XDSMissingDocumentMetadata,
                    f"xdsb:Document {document_id} has no DocumentEntry in the submission",
                    document_id,
                    rule="iti41.document.entry",
                )
            return _DiscardSink(document_id, problem, document_id=document_id)
        if document_id in self.staged:
            problem = RegistryError(E.XDSRepositoryMetadataError,
                                    f"more than one xdsb:Document with id {document_id}", document_id,
                                    rule="iti41.document.unique")
            return _DiscardSink(document_id, problem, document_id=document_id)
        if not entry.unique_id or not entry.patient_id:
            missing = "uniqueId" if not entry.unique_id else "patientId"
            problem = RegistryError(E.XDSRepositoryMetadataError,
                                    f"DocumentEntry {entry.entry_id} has no {missing}", entry.entry_id,
                                    rule="iti41.entry.identity")
            return _DiscardSink(document_id, problem, document_id=document_id)
        key = object_key(self.repository_unique_id, entry.unique_id)
        if key in self._keys:
            # ITI TF-3 Table 4.2.4.1-2: the same uniqueId twice in one submission.
            problem = RegistryError(E.XDSRepositoryDuplicateUniqueIdInMessage,
                                    f"uniqueId {entry.unique_id} is used by more than one document",
                                    entry.unique_id, rule="iti41.entry.unique_id")
            return _DiscardSink(document_id, problem, document_id=document_id)
        self._keys.add(key)
        doc = StagedDocument(
            document_id=document_id,
            unique_id=entry.unique_id,
            patient_id=entry.patient_id,
            mime_type=entry.mime_type or "application/octet-stream",
            key=key,
            intake_id=self.intake_id,
            format_codes=entry.format_codes,
            intake=self,
        )
        self.staged[document_id] = doc
        binding = DocumentBinding(self.repository_unique_id, entry.unique_id)
        encryptor = None
        try:
            if self.blobs.exists(key):
                # A resubmission: never overwrite a stored document (ITI TF-2b §3.41.4.1.3); hash only.
                doc.existing = stored_digest(self.blobs, self.vault, key, binding)
            else:
                data_key = self.vault.data_key_for(entry.patient_id)
                encryptor = SegmentEncryptor(data_key, binding, self.segment_size)
                meta = {
                    META_MIME_TYPE: metadata_text(doc.mime_type),
                    META_PATIENT_ID: metadata_text(doc.patient_id),
                    META_KEY_ID: data_key.id,
                    META_INTAKE_ID: self.intake_id,
                }
                hash_, size = known or (entry.supplied_hash, entry.supplied_size)
                if hash_ and _is_sha1_hex(hash_):
                    meta[META_HASH] = hash_.lower()
                if size is not None and str(size).isdigit():
                    meta[META_SIZE] = str(int(size))
                doc.writer = self.blobs.open_staged(key, meta)
        except Exception as exc:  # noqa: BLE001 - vault or store down: XDSRepositoryError
            log.error("ITI-41: cannot stage document %s: %s", entry.unique_id, exc)
            code = infrastructure_code(exc, registry=False)
            doc.problem = RegistryError(code, infrastructure_message(code, f"document {entry.unique_id} could not be stored"),
                                        entry.unique_id)
            doc.abort()
            doc.writer = None
        limit = retention_limit(self.signatures, entry, self._has_dsg)
        return DocumentSink(doc, encryptor, limit, sha256=self.sealing and doc.writer is not None)


class _DiscardSink:
    """Counts and drops the bytes of a part no document claims."""

    def __init__(self, content_id: str, problem: RegistryError | None, document_id: str | None = None) -> None:
        self.content_id = content_id
        self.problem = problem
        self.document_id = document_id
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)

    def close(self) -> DiscardedPart:
        return DiscardedPart(self.content_id, self.problem, self.size)


# --------------------------------------------------------------------------------------- helpers


def iter_base64(text: str, slice_chars: int = BASE64_SLICE) -> Iterator[bytes]:
    """Decode base64 text (whitespace allowed, as in xs:base64Binary) slice by slice."""
    carry = ""
    for start in range(0, len(text), slice_chars):
        piece = carry + "".join(text[start : start + slice_chars].split())
        cut = len(piece) - len(piece) % 4
        carry = piece[cut:]
        if cut:
            try:
                yield binascii.a2b_base64(piece[:cut], strict_mode=True)
            except (binascii.Error, ValueError):
                raise InvalidBase64("invalid base64") from None
    if carry:
        raise InvalidBase64("truncated base64")


def _is_sha1_hex(value: str) -> bool:
    return len(value) == 40 and all(c in "0123456789abcdefABCDEF" for c in value)


_METADATA_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%") + " "


def metadata_text(value: str) -> str:
    """`value` as a blob metadata value (printable ASCII, no outer spaces): other characters and
    '%' are percent-encoded (UTF-8), so the original is `urllib.parse.unquote(value)`."""
    text = quote(value, safe=_METADATA_SAFE)
    if text != text.strip():
        text = quote(value, safe=_METADATA_SAFE.replace(" ", ""))
    return text


def plaintext_size(blob_size: int, segment_size: int) -> int:
    """A document's size from its blob's size (repository.crypto layout: header, segments + tags)."""
    body = blob_size - HEADER_SIZE
    segments = max(1, -(-body // (segment_size + TAG_SIZE)))
    return body - segments * TAG_SIZE


def stored_digest(blobs, vault, key: str, binding: DocumentBinding) -> tuple[str, int]:
    """(hash, size) of the document stored under `key`: from its metadata when they are there, else
    by decrypting it (streaming; a blob staged by a streamed part without supplied hash/size)."""
    meta = blobs.read_metadata(key)
    h, s = meta.get(META_HASH), meta.get(META_SIZE)
    if h and s and s.isdigit():
        return h.lower(), int(s)
    sha1, size = hashlib.sha1(), 0
    with blobs.open_read(key) as reader:
        dec = SegmentDecryptor(vault.get, binding)
        for chunk in reader:
            out = dec.update(chunk)
            sha1.update(out)
            size += len(out)
        out = dec.finalize()
        sha1.update(out)
        size += len(out)
    return sha1.hexdigest(), size


__all__ = [
    "BlobNotFound",
    "BlobStoreError",
    "DiscardedPart",
    "DocumentSink",
    "EntryInfo",
    "InvalidBase64",
    "Iti41Intake",
    "StagedDocument",
    "iter_base64",
    "metadata_text",
    "plaintext_size",
    "stored_digest",
]
