"""ITI-43 Retrieve Document Set: the Document Repository side (ITI TF-2b §3.43.4).

Pure but for two ports: the `BlobStore` (where the encrypted documents are) and the key vault
(`get(key_id) -> DataKey`, e.g. `repository.keys.KeyVault`). No Twisted: the SOAP edge writes the
reply, pulling each document's plaintext from a `StreamingAttachment` on a worker thread, so a
document is decrypted while it is sent and never held whole in memory (issue 3).

Per document (ITI TF-2b §3.43.4.2.2): a repositoryUniqueId that is not ours is
XDSUnknownRepositoryId, a document we do not hold is XDSDocumentUniqueIdError, each with the
requested DocumentUniqueId as location; the response is Success (all found), PartialSuccess (some) or Failure
(none). Before a document is committed to the stream its blob is opened, its header parsed and
its data key fetched: a destroyed or unknown key, a bad header or a store failure makes that
document an XDSRepositoryError entry (DESIGN.md §3 rule 3), not a broken stream. Once streaming,
a segment that fails authentication (a tampered blob) raises, and the edge aborts the
connection: altered bytes are never delivered as a complete document. A reply small enough for
the edge to produce in one pass (`soap.edge.ONE_PASS_BYTES`: each attachment announces the size
its blob's length implies) is decrypted whole before anything is sent: a tampered document there
makes the answer an env:Receiver fault (HTTP 500), the whole request failing, still without a
byte of it.
"""

from __future__ import annotations

import logging
import uuid
from urllib.parse import unquote
from typing import Any, Callable, Iterator

import attrs
from lxml import etree

from registry import constants as C
from registry import ebrim
from registry.errors import RegistryError, XdsErrorCode
from repository.blobs import BlobNotFound, BlobStoreError, object_key
from repository.crypto import (
    DEFAULT_SEGMENT_SIZE,
    HEADER_SIZE,
    TAG_SIZE,
    BlobIntegrityError,
    DataKey,
    DocumentBinding,
    SegmentDecryptor,
    plaintext_size,
    read_header,
)
from repository.keys import KeyVaultError
from soap.envelope import SenderFault, SoapRequest
from soap.mtom import xop_include
from soap.operation import FunctionOperation, SoapReply, StreamingAttachment

log = logging.getLogger("carnet.repository.iti43")

ACTION_ITI43 = "urn:ihe:iti:2007:RetrieveDocumentSet"
ACTION_ITI43_RESPONSE = "urn:ihe:iti:2007:RetrieveDocumentSetResponse"

_X = f"{{{C.NS_XDSB}}}"
RETRIEVE_DOCUMENT_SET_REQUEST = _X + "RetrieveDocumentSetRequest"
RETRIEVE_DOCUMENT_SET_RESPONSE = _X + "RetrieveDocumentSetResponse"
_DOCUMENT_REQUEST = _X + "DocumentRequest"
_HOME = _X + "HomeCommunityId"
_REPOSITORY = _X + "RepositoryUniqueId"
_DOCUMENT = _X + "DocumentUniqueId"
LONG_NAME_MAX = 256  # rim:LongName
# Whole segments per blob read (64 KiB of plaintext + its tag each): one read and one decryption
# call per four segments, none split across reads.
READ_CHUNK = 4 * (DEFAULT_SEGMENT_SIZE + TAG_SIZE)

VaultGet = Callable[[str], DataKey]


# --- request ---------------------------------------------------------------------------------


@attrs.frozen
class DocumentRequest:
    """One xdsb:DocumentRequest (XDS.b_DocumentRepository.xsd, RetrieveDocumentSetRequestType)."""

    repository_unique_id: str
    document_unique_id: str
    home_community_id: str | None = None


def parse_retrieve_document_set_request(element: etree._Element) -> list[DocumentRequest]:
    """The DocumentRequests of an xdsb:RetrieveDocumentSetRequest, in order. A request that does
    not follow the schema (missing or misplaced element, empty or over-long value) is the peer's
    error: `SenderFault` (ITI TF-2b §3.43.4.1.2: HomeCommunityId?, RepositoryUniqueId,
    DocumentUniqueId, in that order)."""
    if element.tag != RETRIEVE_DOCUMENT_SET_REQUEST:
        raise SenderFault(f"the SOAP Body holds {element.tag}, ITI-43 expects {RETRIEVE_DOCUMENT_SET_REQUEST}")
    requests = []
    for n, child in enumerate(_elements(element), start=1):
        if child.tag != _DOCUMENT_REQUEST:
            raise SenderFault(f"RetrieveDocumentSetRequest: unexpected element {child.tag}")
        requests.append(_document_request(child, n))
    if not requests:
        raise SenderFault("RetrieveDocumentSetRequest holds no DocumentRequest")
    return requests


def _elements(parent: etree._Element) -> list[etree._Element]:
    return [c for c in parent if isinstance(c.tag, str)]  # skip comments and PIs


def _document_request(element: etree._Element, n: int) -> DocumentRequest:
    children = _elements(element)
    home = None
    if children and children[0].tag == _HOME:
        home = _long_name(children.pop(0), n)
    tags = [c.tag for c in children]
    if tags != [_REPOSITORY, _DOCUMENT]:
        found = ", ".join(etree.QName(t).localname for t in tags) or "nothing"
        raise SenderFault(
            f"DocumentRequest {n}: expected HomeCommunityId?, RepositoryUniqueId, DocumentUniqueId; found {found}"
        )
    return DocumentRequest(_long_name(children[0], n), _long_name(children[1], n), home)


def _long_name(element: etree._Element, n: int) -> str:
    value = (element.text or "").strip()
    name = etree.QName(element).localname
    if not value or len(element):
        raise SenderFault(f"DocumentRequest {n}: {name} must hold a value")
    if len(value) > LONG_NAME_MAX:
        raise SenderFault(f"DocumentRequest {n}: {name} is longer than {LONG_NAME_MAX} characters")
    return value


# --- streaming one document --------------------------------------------------------------------


class DecryptedDocument:
    """The plaintext of one stored document, decrypted and authenticated while it is iterated.
    Owns the open blob reader (closed when iteration ends, fails, or `close()` is called).
    Raises `BlobIntegrityError` on a tampered, truncated or mis-sized blob."""

    def __init__(self, reader: Any, header: bytes, key: DataKey, binding: DocumentBinding, size: int | None):
        self._reader = reader
        self._header = header
        self._key = key
        self._binding = binding
        self.size = size  # the stored size (metadata), checked at the end
        self.expected_size: int | None = size  # what the blob's length implies: a hint

    def __iter__(self) -> Iterator[bytes]:
        try:
            decryptor = SegmentDecryptor(self._key, self._binding)
            decryptor.update(self._header)
            total = 0
            for chunk in self._reader:
                plain = decryptor.update(chunk)
                if plain:
                    total += len(plain)
                    yield plain
            plain = decryptor.finalize()  # a missing final segment fails here
            total += len(plain)
            if self.size is not None and total != self.size:
                raise BlobIntegrityError("document size differs from the stored size")
            if plain:
                yield plain
        finally:
            self.close()

    def close(self) -> None:
        reader, self._reader = self._reader, ()
        close = getattr(reader, "close", None)
        if close is not None:
            close()


@attrs.frozen
class RetrievedDocument:
    """What was found for one DocumentRequest (for audit: ITI TF-2b §3.43.5)."""

    request: DocumentRequest
    mime_type: str
    patient_id: str | None
    size: int | None


@attrs.frozen(eq=False)
class RetrieveResult:
    reply: SoapReply
    status: str
    errors: tuple[RegistryError, ...]
    documents: tuple[RetrievedDocument, ...]


def _read_exactly(reader: Any, n: int) -> bytes:
    out = b""
    while len(out) < n:
        data = reader.read(n - len(out))
        if not data:
            break
        out += data
    return out


def _open_document(
    req: DocumentRequest, blobs: Any, vault_get: VaultGet
) -> tuple[DecryptedDocument, RetrievedDocument] | RegistryError:
    """Open the blob, check its header and fetch its key before committing to stream it."""
    uid = req.document_unique_id
    try:
        reader = blobs.open_read(object_key(req.repository_unique_id, uid), chunk_size=READ_CHUNK)
    except BlobNotFound:
        return RegistryError(XdsErrorCode.XDSDocumentUniqueIdError, f"document {uid} is not in this repository", uid)
    except (BlobStoreError, OSError) as exc:
        log.error("ITI-43: blob store failure for %s: %s", uid, exc)
        return RegistryError(XdsErrorCode.XDSRepositoryError, f"document {uid} could not be read", uid)
    try:
        metadata = dict(reader.metadata)
        header = _read_exactly(reader, HEADER_SIZE)
        parsed = read_header(header)
        key_id = parsed.key_id
        if metadata.get("key-id", key_id) != key_id:
            raise BlobIntegrityError("the blob header names another data key than its metadata")
        key = vault_get(key_id)
        size = int(metadata["size"]) if metadata.get("size", "").isdigit() else None
        # what the reply will carry (a hint for the edge, never trusted: the stream is checked)
        expected = size if size is not None else _expected_size(reader, parsed.segment_size)
    except KeyVaultError as exc:  # destroyed (crypto-shredded), unknown, wrong master key, database
        reader.close()
        log.warning("ITI-43: no usable data key for %s: %s", uid, type(exc).__name__)
        return RegistryError(XdsErrorCode.XDSRepositoryError, f"document {uid} can no longer be decrypted", uid)
    except (BlobIntegrityError, BlobStoreError, OSError) as exc:
        reader.close()
        log.error("ITI-43: stored blob of %s is unusable: %s", uid, exc)
        return RegistryError(XdsErrorCode.XDSRepositoryError, f"document {uid} could not be read", uid)
    except BaseException:
        reader.close()
        raise
    binding = DocumentBinding(req.repository_unique_id, uid)
    # Blob metadata is printable ASCII: ITI-41 percent-encoded what it kept there
    # (`repository.intake.metadata_text`); the mimeType is echoed as the source gave it.
    mime_type, patient_id = metadata.get("mime-type"), metadata.get("patient-id")
    found = RetrievedDocument(
        req,
        unquote(mime_type) if mime_type else "application/octet-stream",
        unquote(patient_id) if patient_id is not None else None,
        size,
    )
    stream = DecryptedDocument(reader, header, key, binding, size)
    stream.expected_size = expected
    return stream, found


def _expected_size(reader: Any, segment_size: int) -> int | None:
    """The plaintext size a well-formed blob of this size holds (unauthenticated)."""
    blob_size = getattr(reader, "size", None)
    if not isinstance(blob_size, int):
        return None
    try:
        return plaintext_size(blob_size, segment_size)
    except BlobIntegrityError:
        return None  # decryption will say what is wrong


# --- the transaction ---------------------------------------------------------------------------


def retrieve_document_set(
    request_element: etree._Element,
    *,
    blobs: Any,
    vault: Any,
    repository_unique_id: str,
    home_community_id: str | None = None,
) -> RetrieveResult:
    """ITI-43 (ITI TF-2b §3.43.4): the reply (a RetrieveDocumentSetResponse whose Documents are
    streamed MTOM attachments), its status, errors and what was found (for the audit record).
    `vault`: a KeyVault, or any `get(key_id) -> DataKey` function. `home_community_id`: when set,
    a DocumentRequest naming another community is XDSUnknownCommunity. Raises `SenderFault`
    for a malformed request."""
    requests = parse_retrieve_document_set_request(request_element)
    vault_get: VaultGet = getattr(vault, "get", vault)
    errors: list[RegistryError] = []
    streams: list[DecryptedDocument] = []
    found: list[tuple[DocumentRequest, RetrievedDocument, DecryptedDocument]] = []
    try:
        for req in requests:
            # ITI TF-2b §3.43.4.2.2: a DocumentRequest that fails gets a RegistryError whose
            # "@location contains the DocumentUniqueId of the document requested", whatever the
            # code: the repository or community asked for is named in the codeContext only.
            if req.repository_unique_id != repository_unique_id:  # ITI TF-3 Table 4.2.4.1-2
                errors.append(
                    RegistryError(
                        XdsErrorCode.XDSUnknownRepositoryId,
                        f"document {req.document_unique_id}: repositoryUniqueId {req.repository_unique_id} "
                        f"is not this repository's",
                        req.document_unique_id,
                    )
                )
                continue
            if home_community_id and req.home_community_id and req.home_community_id != home_community_id:
                errors.append(
                    RegistryError(
                        XdsErrorCode.XDSUnknownCommunity,
                        f"document {req.document_unique_id}: homeCommunityId {req.home_community_id} "
                        f"is not this community",
                        req.document_unique_id,
                    )
                )
                continue
            opened = _open_document(req, blobs, vault_get)
            if isinstance(opened, RegistryError):
                errors.append(opened)
                continue
            stream, document = opened
            streams.append(stream)
            found.append((req, document, stream))
        status = _status(len(found), len(requests))
        body = etree.Element(RETRIEVE_DOCUMENT_SET_RESPONSE, nsmap={"xdsb": C.NS_XDSB, "rs": C.NS_RS})
        body.append(ebrim.registry_response(errors, status=status))
        attachments = []
        for req, document, stream in found:
            content_id = f"doc.{uuid.uuid4().hex}@carnet"
            _document_response(body, req, document.mime_type, content_id)
            attachments.append(StreamingAttachment(content_id, document.mime_type, stream, size=stream.expected_size))
    except BaseException:
        for stream in streams:
            stream.close()
        raise
    reply = SoapReply(body, attachments=attachments)
    return RetrieveResult(reply, status, tuple(errors), tuple(doc for _, doc, _ in found))


def retrieve(
    request_element: etree._Element,
    *,
    blobs: Any,
    vault: Any,
    repository_unique_id: str,
    home_community_id: str | None = None,
) -> SoapReply:
    """ITI-43 Retrieve Document Set: the `SoapReply` of `retrieve_document_set`."""
    return retrieve_document_set(
        request_element,
        blobs=blobs,
        vault=vault,
        repository_unique_id=repository_unique_id,
        home_community_id=home_community_id,
    ).reply


def _status(found: int, requested: int) -> str:
    # ITI TF-2b §3.43.4.2.3: PartialSuccess when some but not all documents are returned
    if found == requested:
        return C.RESPONSE_SUCCESS
    return C.RESPONSE_PARTIAL_SUCCESS if found else C.RESPONSE_FAILURE


def _document_response(parent: etree._Element, req: DocumentRequest, mime_type: str, content_id: str) -> None:
    # XDS.b_DocumentRepository.xsd: HomeCommunityId?, RepositoryUniqueId, DocumentUniqueId, mimeType, Document
    response = etree.SubElement(parent, _X + "DocumentResponse")
    if req.home_community_id:
        etree.SubElement(response, _HOME).text = req.home_community_id
    etree.SubElement(response, _REPOSITORY).text = req.repository_unique_id
    etree.SubElement(response, _DOCUMENT).text = req.document_unique_id
    etree.SubElement(response, _X + "mimeType").text = mime_type
    xop_include(etree.SubElement(response, _X + "Document"), content_id)


def retrieve_operation(
    *,
    blobs: Any,
    vault: Any,
    repository_unique_id: str,
    home_community_id: str | None = None,
    on_result: Callable[[RetrieveResult, SoapRequest, Any], None] | None = None,
) -> FunctionOperation:
    """The ITI-43 `Operation` for a `soap.edge.SoapEndpoint` (action
    urn:ihe:iti:2007:RetrieveDocumentSet). `on_result(result, request, context)` is called after
    each successful parse (e.g. to audit); its failures are logged, never answered."""

    def handle(request: SoapRequest, context: Any) -> SoapReply:
        result = retrieve_document_set(
            request.body,
            blobs=blobs,
            vault=vault,
            repository_unique_id=repository_unique_id,
            home_community_id=home_community_id,
        )
        if on_result is not None:
            try:
                on_result(result, request, context)
            except Exception:  # noqa: BLE001 - a failing audit must not lose the answer
                log.exception("ITI-43: on_result failed")
        return result.reply

    return FunctionOperation(ACTION_ITI43, ACTION_ITI43_RESPONSE, handle, "ITI-43")
