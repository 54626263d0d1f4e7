"""ITI-41 Provide and Register Document Set-b, handler level (ITI TF-2b §3.41.4.1.3; issue 3).

A real registry (RegistryStore on SQLite and PostgreSQL, through InProcessRegistryClient), a real
KeyVault on the same engine, the pending journal, and the in-memory blob store. Each test replays
the IHE sample (inline base64) or an MTOM stream fed through the intake as the edge does, and
checks the answer, the registry's rows, and the blobs (decrypted).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import socket
import uuid

import pytest
from lxml import etree
from sqlalchemy import func, select

from pki_support import make_signing_pki
from registry.fragments import unpack
from registry import constants as C
from registry import schema as S
from registry.endpoint import DocumentRegistry
from registry.errors import XdsErrorCode as E
from repository import pending as P
from repository.blobs import object_key
from repository.blobs.memory import MemoryBlobStore
from repository.crypto import DocumentBinding, decrypt
from repository.endpoint import ACTION_ITI41, DocumentRepository
from repository.intake import DiscardedPart, StagedDocument
from repository.registry_client import InProcessRegistryClient, RegistryUnavailable, SoapRegistryClient
from repository.sweep import sweep_orphans
from soap.envelope import SoapRequest
from soap.mtom import Attachment, parse_mtom
from soap.xmlparse import parse_xml
from repository_support import PATIENT
from support import need_shared

NS = {"rim": C.NS_RIM, "rs": C.NS_RS, "xdsb": C.NS_XDSB, "lcm": C.NS_LCM}
RIM = "{%s}" % C.NS_RIM
XOP = "http://www.w3.org/2004/08/xop/include"
REPO = "1.2.250.1.999.1.1"
DOC_UID = "1.3.6.1.4.1.21367.2005.3.9999.32"
SAMPLE_BYTES = base64.b64decode("UjBsR09EbGhjZ0dTQUxNQUFBUUNBRU1tQ1p0dU1GUXhEUzhi")


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def registry(store):
    return DocumentRegistry(store=store)


@pytest.fixture
def journal(engine, store):
    return P.PendingJournal(engine)


class _Inspected:
    """A filesystem or S3 blob store, with the two look-ups the in-memory fake offers tests:
    `keys()` (committed objects) and `staged_count()` (data staged and not committed: the
    filesystem's `.staging` files, S3's multipart uploads; a single-part S3 writer stages in memory)."""

    def __init__(self, inner, kind: str) -> None:
        self._inner, self._kind = inner, kind
        self._writers: list = []

    def open_staged(self, key, metadata=None):
        writer = self._inner.open_staged(key, metadata)
        self._writers.append(writer)
        return writer

    def keys(self) -> list[str]:
        if self._kind == "fs":
            from repository.blobs.fs import STAGING_DIR

            root = self._inner.root
            return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                          if p.is_file() and STAGING_DIR not in p.relative_to(root).parts)
        return sorted(o.object_name for o in self._inner.client.list_objects(self._inner.bucket, recursive=True))

    def staged_count(self) -> int:
        if self._kind == "fs":
            from repository.blobs.fs import STAGING_DIR

            staging = self._inner.root / STAGING_DIR
            return len(list(staging.iterdir())) if staging.exists() else 0
        open_writers = sum(1 for w in self._writers if w._state == "open")  # a single part is staged in memory
        page = self._inner.client._list_multipart_uploads(self._inner.bucket)
        return max(open_writers, len(page.uploads))

    def __getattr__(self, name):
        return getattr(self._inner, name)


@pytest.fixture(params=["memory", "fs", "s3"])
def repo(request, registry, vault, journal, tmp_path):
    """The repository on each blob store (issue 3: tested on the filesystem and S3 stores)."""
    if request.param == "memory":
        blobs = MemoryBlobStore()
    elif request.param == "fs":
        from repository.blobs.fs import FilesystemBlobStore

        blobs = _Inspected(FilesystemBlobStore(tmp_path / "blobs"), "fs")
    else:
        blobs = _Inspected(request.getfixturevalue("s3_store_factory")(), "s3")
    return DocumentRepository(REPO, blobs, vault, InProcessRegistryClient(registry), pending=journal)


@pytest.fixture(scope="module")
def sample() -> etree._Element:
    path = need_shared("samples", "iti41", "ihe__ProvideAndRegisterDocumentSet-bRequest.xml")
    return parse_xml(path.read_bytes())


def _slot(name: str, value: str) -> etree._Element:
    slot = etree.Element(RIM + "Slot", name=name)
    etree.SubElement(etree.SubElement(slot, RIM + "ValueList"), RIM + "Value").text = value
    return slot


def pnr(sample, content: bytes = SAMPLE_BYTES, *, doc_uid: str = DOC_UID, slots: dict | None = None,
        drop_document: bool = False, extra_document: bool = False, patient: str = PATIENT) -> etree._Element:
    """The IHE sample with `content` inline, a fresh SubmissionSet uniqueId, and the given changes."""
    root = copy.deepcopy(sample)
    eo = root.find(".//rim:ExtrinsicObject", NS)
    for ei in root.iterfind(".//rim:ExternalIdentifier", NS):
        scheme = ei.get("identificationScheme")
        if scheme == C.DE_UNIQUE_ID:
            ei.set("value", doc_uid)
        elif scheme == C.SS_UNIQUE_ID:
            ei.set("value", f"2.25.{uuid.uuid4().int}")
        elif scheme in (C.DE_PATIENT_ID, C.SS_PATIENT_ID):
            ei.set("value", patient)
    for name, value in (slots or {}).items():
        eo.insert(0, _slot(name, value))
    document = root.find("xdsb:Document", NS)
    document.text = base64.b64encode(content).decode()
    if extra_document:
        extra = etree.SubElement(root, document.tag, id="Document02")
        extra.text = base64.b64encode(b"no metadata").decode()
    if drop_document:
        root.remove(document)
    return root


def soap_request(body: etree._Element, *, attachments=None, xop=None) -> SoapRequest:
    return SoapRequest(action=ACTION_ITI41, message_id=f"urn:uuid:{uuid.uuid4()}", to=None, reply_to=None,
                       relates_to=None, header_elements=(), body=body, envelope=body,
                       attachments=attachments or {}, xop=xop or {})


def submit(repo, body: etree._Element) -> tuple[str, list[tuple[E, str]]]:
    reply = repo.provide_and_register_document_set(soap_request(body), None)
    response = reply.body
    assert response.tag == "{%s}RegistryResponse" % C.NS_RS
    errors = [(E(e.get("errorCode")), e.get("severity")) for e in response.iterfind(".//rs:RegistryError", NS)]
    return response.get("status"), errors


def codes(errors) -> set[E]:
    return {code for code, severity in errors if severity == C.SEVERITY_ERROR}


def entries(store, unique_id: str = DOC_UID):
    t = S.document_entry
    with store.engine.connect() as c:
        return c.execute(select(t.c.hash, t.c.size, t.c.repository_unique_id, t.c.mime_type, t.c.xml)
                         .where(t.c.unique_id == unique_id)).all()


def registry_count(store) -> int:
    with store.engine.connect() as c:
        return c.execute(select(func.count()).select_from(S.document_entry)).scalar_one()


def stored_plaintext(repo, unique_id: str = DOC_UID) -> bytes:
    key = object_key(REPO, unique_id)
    with repo.blobs.open_read(key) as r:
        blob = b"".join(r)
    return decrypt(repo.vault.get, DocumentBinding(REPO, unique_id), blob)


# --- the IHE sample ----------------------------------------------------------------------------


def test_ihe_sample_is_stored_encrypted_and_registered_with_hash_size_and_repository(repo, store, sample, registry):
    status, errors = submit(repo, pnr(sample))
    assert status == C.RESPONSE_SUCCESS and errors == []

    [row] = entries(store)
    assert row.hash == sha1(SAMPLE_BYTES) and row.size == len(SAMPLE_BYTES)
    assert row.repository_unique_id == REPO and row.mime_type == "text/xml"
    xml = etree.fromstring(unpack(row.xml))
    slots = {s.get("name"): s.findtext(".//rim:Value", namespaces=NS) for s in xml.iterfind("rim:Slot", NS)}
    assert slots["hash"] == sha1(SAMPLE_BYTES) and slots["size"] == str(len(SAMPLE_BYTES))
    assert slots["repositoryUniqueId"] == REPO

    key = object_key(REPO, DOC_UID)
    assert repo.blobs.keys() == [key]
    meta = repo.blobs.read_metadata(key)
    assert meta["mime-type"] == "text/xml" and meta["patient-id"] == PATIENT
    assert meta["hash"] == sha1(SAMPLE_BYTES) and meta["size"] == str(len(SAMPLE_BYTES))
    assert meta["key-id"] == repo.vault.data_key_for(PATIENT).id
    with repo.blobs.open_read(key) as r:
        assert SAMPLE_BYTES not in b"".join(r)  # stored encrypted
    assert stored_plaintext(repo) == SAMPLE_BYTES
    assert repo.pending.all() == []

    [iti41] = repo.audit.events
    assert iti41.transaction == "ITI-41" and iti41.outcome == "success"
    assert iti41.document_unique_ids == (DOC_UID,) and iti41.patient_ids == (PATIENT,)
    [iti42] = registry.audit.events
    assert iti42.transaction == "ITI-42" and iti42.outcome == "success"


# --- document / metadata pairing ---------------------------------------------------------------


def test_entry_without_its_document_is_missing_document(repo, store, sample):
    status, errors = submit(repo, pnr(sample, drop_document=True))
    assert status == C.RESPONSE_FAILURE and codes(errors) == {E.XDSMissingDocument}
    assert repo.blobs.keys() == [] and repo.blobs.staged_count() == 0 and registry_count(store) == 0


def test_document_without_its_entry_is_missing_metadata(repo, store, sample):
    status, errors = submit(repo, pnr(sample, extra_document=True))
    assert status == C.RESPONSE_FAILURE and codes(errors) == {E.XDSMissingDocumentMetadata}
    assert repo.blobs.keys() == [] and repo.blobs.staged_count() == 0 and registry_count(store) == 0


def test_invalid_base64_content_is_refused(repo, store, sample):
    body = pnr(sample)
    body.find("xdsb:Document", NS).text = "not base64!"
    status, errors = submit(repo, body)
    assert codes(errors) == {E.XDSRepositoryMetadataError}
    assert repo.blobs.keys() == [] and registry_count(store) == 0


def test_the_same_unique_id_twice_in_one_submission(repo, store, sample):
    body = pnr(sample)
    eo = body.find(".//rim:ExtrinsicObject", NS)
    twin = copy.deepcopy(eo)
    twin.set("id", "Document02")
    for el in twin.iter():
        for attr in ("classifiedObject", "registryObject"):
            if el.get(attr) == "Document01":
                el.set(attr, "Document02")
        if el.get("id") and el is not twin:
            el.set("id", el.get("id") + "b")
    eo.addnext(twin)
    etree.SubElement(body, "{%s}Document" % C.NS_XDSB, id="Document02").text = base64.b64encode(b"x").decode()
    status, errors = submit(repo, body)
    assert E.XDSRepositoryDuplicateUniqueIdInMessage in codes(errors)
    assert repo.blobs.keys() == [] and repo.blobs.staged_count() == 0 and registry_count(store) == 0


# --- supplied hash, size, repositoryUniqueId -----------------------------------------------------


def test_correct_supplied_values_are_accepted(repo, store, sample):
    slots = {"hash": sha1(SAMPLE_BYTES).upper(), "size": str(len(SAMPLE_BYTES)), "repositoryUniqueId": REPO}
    status, errors = submit(repo, pnr(sample, slots=slots))
    assert status == C.RESPONSE_SUCCESS, errors
    assert entries(store)[0].hash == sha1(SAMPLE_BYTES)


@pytest.mark.parametrize(
    "slots",
    [
        {"hash": sha1(b"something else")},
        {"size": str(len(SAMPLE_BYTES) + 1)},
        {"repositoryUniqueId": "1.2.3.4.5.6"},
    ],
    ids=["hash", "size", "repositoryUniqueId"],
)
def test_wrong_supplied_value_is_repository_metadata_error(repo, store, sample, slots):
    status, errors = submit(repo, pnr(sample, slots=slots))
    assert status == C.RESPONSE_FAILURE and codes(errors) == {E.XDSRepositoryMetadataError}
    assert repo.blobs.keys() == [] and repo.blobs.staged_count() == 0 and registry_count(store) == 0


# --- resubmissions -----------------------------------------------------------------------------


def test_identical_resubmission_is_accepted_and_the_blob_untouched(repo, store, sample):
    assert submit(repo, pnr(sample))[0] == C.RESPONSE_SUCCESS
    key = object_key(REPO, DOC_UID)
    before = repo.blobs.read_metadata(key)
    with repo.blobs.open_read(key) as r:
        blob_before = b"".join(r)
    status, errors = submit(repo, pnr(sample))
    assert status == C.RESPONSE_SUCCESS, errors
    assert repo.blobs.read_metadata(key) == before  # same intake-id: not rewritten
    with repo.blobs.open_read(key) as r:
        assert b"".join(r) == blob_before
    assert len(entries(store)) == 2  # the registry registered the resubmission (same hash and size)


@pytest.mark.parametrize("other", [b"R0lGODlhcgGSALMAAAQCAEMmCZtuMFQxDS8X", b"another document"],
                         ids=["same-size", "other-size"])
def test_resubmission_with_other_content_fails_and_keeps_the_stored_document(repo, store, sample, registry, other):
    assert submit(repo, pnr(sample))[0] == C.RESPONSE_SUCCESS
    status, errors = submit(repo, pnr(sample, other))
    expected = {E.XDSNonIdenticalHash} | ({E.XDSNonIdenticalSize} if len(other) != len(SAMPLE_BYTES) else set())
    assert status == C.RESPONSE_FAILURE and codes(errors) == expected
    assert stored_plaintext(repo) == SAMPLE_BYTES
    assert len(registry.audit.events) == 1  # the registry was not asked
    assert len(entries(store)) == 1 and repo.blobs.staged_count() == 0


# --- registry failures -------------------------------------------------------------------------


def test_registry_refusal_removes_the_blobs(repo, store, sample):
    status, errors = submit(repo, pnr(sample, patient="UNKNOWN-1^^^&1.2.3&ISO"))
    assert status == C.RESPONSE_FAILURE and codes(errors) == {E.XDSUnknownPatientId}
    assert repo.blobs.keys() == [] and repo.blobs.staged_count() == 0
    assert registry_count(store) == 0 and repo.pending.all() == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_registry_is_registry_not_available_and_nothing_is_kept(repo, store, sample):
    repo.registry = SoapRegistryClient(f"http://127.0.0.1:{_closed_port()}/xds/registry", timeout=5)
    status, errors = submit(repo, pnr(sample))
    assert status == C.RESPONSE_FAILURE and codes(errors) == {E.XDSRegistryNotAvailable}
    assert repo.blobs.keys() == [] and repo.blobs.staged_count() == 0
    assert registry_count(store) == 0 and repo.pending.all() == []


class LostAnswer:
    """A RegistryClient whose answer is lost after the request may have reached the registry:
    `register_first` says whether the registry did register it."""

    def __init__(self, inner, register_first: bool):
        self.inner, self.register_first = inner, register_first

    def register(self, request, context=None):
        if self.register_first:
            self.inner.register(request, context)
        raise RegistryUnavailable("read timed out", delivered=True)

    def known_document_unique_ids(self, unique_ids):
        return self.inner.known_document_unique_ids(unique_ids)


@pytest.mark.parametrize("registered", [False, True], ids=["never-registered", "registered"])
def test_lost_registry_answer_leaves_the_blob_pending_and_the_sweep_settles_it(repo, store, sample, registered):
    inner = repo.registry
    repo.registry = LostAnswer(inner, registered)
    status, errors = submit(repo, pnr(sample))
    assert codes(errors) == {E.XDSRegistryNotAvailable}
    key = object_key(REPO, DOC_UID)
    assert repo.blobs.keys() == [key]  # kept: the registry may hold the entry
    [row] = repo.pending.all()
    assert (row.object_key, row.document_unique_id) == (key, DOC_UID)

    young = sweep_orphans(repo.blobs, inner.known_document_unique_ids, 3600, pending=repo.pending)
    assert young.orphans_deleted == () and repo.blobs.keys() == [key]  # too young to judge

    report = sweep_orphans(repo.blobs, inner.known_document_unique_ids, 0, pending=repo.pending)
    assert repo.pending.all() == []
    if registered:
        assert report.orphans_deleted == () and report.settled == 1
        assert stored_plaintext(repo) == SAMPLE_BYTES  # a registry entry keeps its document
    else:
        assert report.orphans_deleted == (key,) and repo.blobs.keys() == []


def test_sweep_defers_when_the_registry_cannot_be_asked(repo, sample):
    repo.registry = LostAnswer(repo.registry, False)
    submit(repo, pnr(sample))

    def unreachable(ids):
        raise RegistryUnavailable("down")

    report = sweep_orphans(repo.blobs, unreachable, 0, pending=repo.pending)
    assert report.deferred == 1 and len(repo.blobs.keys()) == 1 and len(repo.pending.all()) == 1


def test_sweep_never_deletes_a_blob_another_submission_rewrote(repo, journal, sample):
    journal.record("0" * 32, [(object_key(REPO, DOC_UID), REPO, DOC_UID)])  # a dead submission's row
    repo.registry = LostAnswer(repo.registry, False)
    submit(repo, pnr(sample))  # the blob now belongs to this submission (intake-id)
    report = sweep_orphans(repo.blobs, lambda ids: set(), 0, pending=journal)
    assert report.orphans_deleted == (object_key(REPO, DOC_UID),)  # deleted once, by its own row
    assert journal.all() == []


# --- signatures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed_cdas():
    """(trust store, CDA signed by a trusted CA, same CDA with its body altered)."""
    from signxml import XMLSigner

    from repository.signatures import TrustStore

    pki = make_signing_pki()
    cda = need_shared("samples", "cda", "ihe__XDS-SD.TEXT.xml").read_bytes()
    root = etree.fromstring(cda)
    signed = etree.tostring(XMLSigner(signature_algorithm="rsa-sha256").sign(root, key=pki.leaf.key,
                                                                             cert=[pki.leaf.cert]))
    tree = etree.fromstring(signed)
    title = next(el for el in tree.iter() if isinstance(el.tag, str) and el.tag.endswith("}title"))
    title.text = (title.text or "") + " (altered)"
    tampered = etree.tostring(tree)
    return TrustStore((pki.ca.cert,)), signed, tampered


def test_signature_policy_reject_refuses_a_bad_signature(repo, store, sample, signed_cdas):
    from repository.signatures import SignatureMode, SignaturePolicy

    trust, signed, tampered = signed_cdas
    repo.signatures = SignaturePolicy(mode=SignatureMode.REJECT, trust=trust)
    status, errors = submit(repo, pnr(sample, tampered))
    assert status == C.RESPONSE_FAILURE and codes(errors) == {E.XDSRepositoryMetadataError}
    assert repo.blobs.keys() == [] and repo.blobs.staged_count() == 0 and registry_count(store) == 0
    status, errors = submit(repo, pnr(sample, signed))
    assert status == C.RESPONSE_SUCCESS, errors
    assert stored_plaintext(repo) == signed


def test_signature_policy_record_adds_the_verdict_slot(repo, store, sample, signed_cdas):
    from repository.signatures import SIGNATURE_VERIFICATION_SLOT, SignatureMode, SignaturePolicy

    trust, _signed, tampered = signed_cdas
    repo.signatures = SignaturePolicy(mode=SignatureMode.RECORD, trust=trust)
    status, errors = submit(repo, pnr(sample, tampered))
    assert status == C.RESPONSE_SUCCESS, errors
    xml = etree.fromstring(unpack(entries(store)[0].xml))
    [slot] = [s for s in xml.iterfind("rim:Slot", NS) if s.get("name") == SIGNATURE_VERIFICATION_SLOT]
    assert slot.findtext(".//rim:Value", namespaces=NS) == "status=invalid"


# --- MTOM: parts streamed through the intake as the edge does ----------------------------------


def stream_mtom(repo, content_type: str, body: bytes, chunk: int = 7919) -> SoapRequest:
    """What the edge does with an MTOM request and a StreamingOperation: on_root, then one sink per
    part (fed in chunks), then handle() with attachments/xop holding what the sinks returned."""
    message = parse_mtom(content_type, [body])  # only to split the capture into its parts
    envelope = parse_xml(message.root)
    request = soap_request(envelope.find(".//{http://www.w3.org/2003/05/soap-envelope}Body")[0])
    op = repo.operations()[ACTION_ITI41]
    intake = op.intake_factory()
    intake.on_root(request)
    results = {}
    for cid, att in message.attachments.items():
        sink = intake.open_part(cid, att.headers)
        for i in range(0, len(att.data), chunk):
            sink.write(att.data[i : i + chunk])
        results[cid] = Attachment(cid, att.content_type, sink.close(), len(att.data))
    xop = {}
    for include in list(request.body.iter("{%s}Include" % XOP)):
        parent = include.getparent()
        parent.remove(include)
        xop[parent] = results[include.get("href")[4:]]
    return soap_request(request.body, attachments=results, xop=xop), op


def _http_capture():
    raw = need_shared("samples", "iti41", "nist-validator__http-mtom-pnr.txt").read_bytes()
    head, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    headers = dict(
        (k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in head.decode().split("\n")[1:])
    )
    return headers["content-type"], body.replace(b"\n", b"\r\n")


def test_nist_mtom_capture_streams_through_the_intake(repo, store):
    content_type, body = _http_capture()
    message = parse_mtom(content_type, [body])
    envelope = parse_xml(message.root)
    sor = envelope.find(".//lcm:SubmitObjectsRequest", NS)
    for ei in sor.iterfind(".//rim:ExternalIdentifier", NS):
        if ei.get("identificationScheme") == C.SS_PATIENT_ID:
            store.add_patient(ei.get("value"))
    request, op = stream_mtom(repo, content_type, body)
    staged = [a.data for a in request.attachments.values()]
    assert staged and all(isinstance(d, StagedDocument) for d in staged)
    reply = op.handle(request, None)
    errors = [(E(e.get("errorCode")), e.get("severity")) for e in reply.body.iterfind(".//rs:RegistryError", NS)]
    assert reply.body.get("status") == C.RESPONSE_SUCCESS, errors
    for cid, att in message.attachments.items():
        doc = request.attachments[cid].data
        assert stored_plaintext(repo, doc.unique_id) == att.data
        [row] = entries(store, doc.unique_id)
        assert row.hash == sha1(att.data) and row.size == len(att.data) and row.repository_unique_id == REPO


def _as_mtom(body: etree._Element, parts: dict[str, bytes], extra_parts: dict[str, bytes] | None = None):
    from soap.mtom import build_mtom

    for document in body.iterfind("xdsb:Document", NS):
        document.text = None
        cid = f"{document.get('id')}@carnet.test"
        etree.SubElement(document, "{%s}Include" % XOP, nsmap={"xop": XOP}, href=f"cid:{cid}")
    env = (b'<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body>'
           + etree.tostring(body) + b"</env:Body></env:Envelope>")
    atts = [Attachment(cid, "application/octet-stream", data) for cid, data in {**parts, **(extra_parts or {})}.items()]
    return build_mtom(env, atts)


def test_mtom_part_no_document_claims_is_missing_metadata_and_nothing_is_stored(repo, store, sample):
    body = pnr(sample)
    content_type, data = _as_mtom(body, {"Document01@carnet.test": SAMPLE_BYTES}, {"stray@carnet.test": b"stray"})
    request, op = stream_mtom(repo, content_type, data)
    assert isinstance(request.attachments["stray@carnet.test"].data, DiscardedPart)
    reply = op.handle(request, None)
    found = {E(e.get("errorCode")) for e in reply.body.iterfind(".//rs:RegistryError", NS)}
    assert found == {E.XDSMissingDocumentMetadata}
    assert repo.blobs.keys() == [] and repo.blobs.staged_count() == 0 and registry_count(store) == 0


def test_mtom_document_with_supplied_hash_and_size(repo, store, sample):
    content = bytes(range(256)) * 1000
    body = pnr(sample, slots={"hash": sha1(content), "size": str(len(content))})
    content_type, data = _as_mtom(body, {"Document01@carnet.test": content})
    request, op = stream_mtom(repo, content_type, data, chunk=65536)
    reply = op.handle(request, None)
    assert reply.body.get("status") == C.RESPONSE_SUCCESS
    meta = repo.blobs.read_metadata(object_key(REPO, DOC_UID))
    assert meta["hash"] == sha1(content) and meta["size"] == str(len(content))
    assert stored_plaintext(repo) == content


def test_mtom_streamed_without_supplied_hash_then_resubmitted(repo, store, sample):
    content = b"%PDF-1.4 streamed document " * 5000
    content_type, data = _as_mtom(pnr(sample), {"Document01@carnet.test": content})
    request, op = stream_mtom(repo, content_type, data)
    assert op.handle(request, None).body.get("status") == C.RESPONSE_SUCCESS
    assert "hash" not in repo.blobs.read_metadata(object_key(REPO, DOC_UID))  # unknown when staging began
    assert entries(store)[0].hash == sha1(content)
    # a resubmission is compared with the stored document (decrypted, since its metadata has no hash)
    assert submit(repo, pnr(sample, content))[0] == C.RESPONSE_SUCCESS
    status, errors = submit(repo, pnr(sample, content[:-1] + b"!"))
    assert codes(errors) == {E.XDSNonIdenticalHash}
    assert stored_plaintext(repo) == content


def test_intake_abort_discards_everything_staged(repo, store, sample):
    content_type, data = _as_mtom(pnr(sample), {"Document01@carnet.test": b"abc" * 1000})
    message = parse_mtom(content_type, [data])
    request = soap_request(parse_xml(message.root).find(".//{http://www.w3.org/2003/05/soap-envelope}Body")[0])
    intake = repo.operations()[ACTION_ITI41].intake_factory()
    intake.on_root(request)
    sink = intake.open_part("Document01@carnet.test", {})
    sink.write(b"abc")
    assert repo.blobs.staged_count() == 1
    intake.abort()
    assert repo.blobs.staged_count() == 0 and repo.blobs.keys() == []


# --- ITI-41 then ITI-43 ------------------------------------------------------------------------


def test_provided_document_is_retrieved_through_the_repository(repo, sample):
    from repository.endpoint import ACTION_ITI43

    assert submit(repo, pnr(sample))[0] == C.RESPONSE_SUCCESS
    body = etree.fromstring(
        f'<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{C.NS_XDSB}"><xdsb:DocumentRequest>'
        f"<xdsb:RepositoryUniqueId>{REPO}</xdsb:RepositoryUniqueId>"
        f"<xdsb:DocumentUniqueId>{DOC_UID}</xdsb:DocumentUniqueId>"
        f"</xdsb:DocumentRequest></xdsb:RetrieveDocumentSetRequest>".encode()
    )
    op = repo.operations()[ACTION_ITI43]
    reply = op.handle(soap_request(body), None)
    assert reply.body.findtext(".//xdsb:mimeType", namespaces=NS) == "text/xml"
    [attachment] = reply.attachments
    assert b"".join(attachment.chunks) == SAMPLE_BYTES
    attachment.chunks.close()
    event = repo.audit.events[-1]
    assert (event.transaction, event.outcome, event.document_unique_ids) == ("ITI-43", "success", (DOC_UID,))



def test_mime_type_and_patient_id_come_back_as_provided(repo, registry, sample):
    """Blob metadata holds printable ASCII only, so the repository percent-encodes what it keeps
    there (`repository.intake.metadata_text`); ITI-43 must echo the mimeType as the source gave it
    (ITI TF-2b §3.43.4.2.2) and audit the patient under the id it was registered with."""
    from repository.endpoint import ACTION_ITI43

    mime = 'text/plain; name="compte-rendu 100% é.txt"'
    patient = "1%2^^^&1.2.250.1.213.1.4.10&ISO"
    registry.store.add_patient(patient)
    body = pnr(sample, patient=patient)
    body.find(".//rim:ExtrinsicObject", NS).set("mimeType", mime)
    status, errors = submit(repo, body)
    assert status == C.RESPONSE_SUCCESS, errors
    request = etree.fromstring(
        f'<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{C.NS_XDSB}"><xdsb:DocumentRequest>'
        f"<xdsb:RepositoryUniqueId>{REPO}</xdsb:RepositoryUniqueId>"
        f"<xdsb:DocumentUniqueId>{DOC_UID}</xdsb:DocumentUniqueId>"
        f"</xdsb:DocumentRequest></xdsb:RetrieveDocumentSetRequest>".encode()
    )
    reply = repo.operations()[ACTION_ITI43].handle(soap_request(request), None)
    assert reply.body.findtext(".//xdsb:mimeType", namespaces=NS) == mime
    [attachment] = reply.attachments
    assert b"".join(attachment.chunks) == SAMPLE_BYTES
    attachment.chunks.close()
    event = repo.audit.events[-1]
    assert (event.transaction, event.patient_ids) == ("ITI-43", (patient,))

# --- concurrent submissions of one uniqueId (DESIGN.md §3 rule 6) -------------------------------
#
# Two requests for the same document, received at the same time: each finds no blob under the key
# when its documents start streaming. Blob commits only create (`repository.blobs`), so the second
# commit cannot replace the first one's bytes, and a blob that the registry does not list yet is
# never relied on (its own submission may still fail and delete it).


class _Gate:
    """Holds the first call that reaches it until `release()`; `reached` is set when it arrives."""

    def __init__(self) -> None:
        import threading

        self.reached, self.released, self._lock, self._used = threading.Event(), threading.Event(), threading.Lock(), False

    def passing(self) -> None:
        with self._lock:
            first, self._used = not self._used, True
        if first:
            self.reached.set()
            assert self.released.wait(60), "the gate was never released"

    def release(self) -> None:
        self.released.set()


class _GatedWriter:
    def __init__(self, writer, gate: _Gate) -> None:
        self._writer, self._gate = writer, gate

    def commit(self) -> None:
        self._gate.passing()
        self._writer.commit()

    def __getattr__(self, name):
        return getattr(self._writer, name)


class _CommitGatedStore:
    """A blob store whose first committing writer waits at the gate (the rest goes straight through)."""

    def __init__(self, inner, gate: _Gate) -> None:
        self._inner, self._gate = inner, gate

    def open_staged(self, key, metadata=None):
        return _GatedWriter(self._inner.open_staged(key, metadata), self._gate)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _RegisterGatedClient(InProcessRegistryClient):
    """The in-process registry, the first registration held at the gate."""

    def __init__(self, registry, gate: _Gate) -> None:
        super().__init__(registry)
        self._gate = gate

    def register(self, request, context=None):
        self._gate.passing()
        return super().register(request, context)


@pytest.fixture(params=["memory", "fs", "s3"])
def blob_store(request, tmp_path):
    if request.param == "memory":
        return MemoryBlobStore()
    if request.param == "fs":
        from repository.blobs.fs import FilesystemBlobStore

        return FilesystemBlobStore(tmp_path / "blobs")
    return request.getfixturevalue("s3_store_factory")()


def _in_thread(fn, *args):
    import threading

    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller's join
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()

    def join():
        t.join(timeout=120)
        assert not t.is_alive(), "the submission never finished"
        if "error" in out:
            raise out["error"]
        return out["value"]

    return join


@pytest.mark.parametrize("late_content", [b"the second request's document", SAMPLE_BYTES], ids=["other", "identical"])
def test_a_submission_overtaken_by_another_of_the_same_uniqueid_keeps_the_winners_blob(
    registry, vault, journal, store, sample, blob_store, late_content
):
    gate = _Gate()
    repo = DocumentRepository(REPO, _CommitGatedStore(blob_store, gate), vault, InProcessRegistryClient(registry),
                              pending=journal)
    first = _in_thread(submit, repo, pnr(sample, late_content))  # staged, then held before its commit
    try:
        assert gate.reached.wait(60)
        status, errors = submit(repo, pnr(sample))  # the other request: received, stored, registered
        assert status == C.RESPONSE_SUCCESS and errors == []
    finally:
        gate.release()
    status, errors = first()
    assert status == C.RESPONSE_FAILURE and codes(errors) == {E.XDSRepositoryError}

    [row] = entries(store)
    assert row.hash == sha1(SAMPLE_BYTES)
    assert stored_plaintext(repo) == SAMPLE_BYTES  # the registered document, retrievable as registered
    assert blob_store.sweep_staged(0) == 0 and repo.pending.all() == []
    # once the winner is registered, the same document is accepted again; other bytes never
    status, errors = submit(repo, pnr(sample, late_content))
    if late_content == SAMPLE_BYTES:
        assert status == C.RESPONSE_SUCCESS and len(entries(store)) == 2
    else:
        assert codes(errors) >= {E.XDSNonIdenticalHash} and len(entries(store)) == 1
    assert stored_plaintext(repo) == SAMPLE_BYTES


def test_a_stored_document_is_relied_on_only_once_registered(registry, vault, journal, store, sample, blob_store):
    gate = _Gate()
    repo = DocumentRepository(REPO, blob_store, vault, _RegisterGatedClient(registry, gate), pending=journal)
    first = _in_thread(submit, repo, pnr(sample))  # its blob committed, its registration held
    try:
        assert gate.reached.wait(60)
        # The same document again: its blob is there, but the registry may still refuse the first
        # submission, which would then delete it; this one must not register an entry pointing to it.
        status, errors = submit(repo, pnr(sample))
        assert status == C.RESPONSE_FAILURE and codes(errors) == {E.XDSRepositoryError}
        assert entries(store) == []
    finally:
        gate.release()
    assert first() == (C.RESPONSE_SUCCESS, [])
    status, errors = submit(repo, pnr(sample))  # registered now: an identical resubmission is accepted
    assert status == C.RESPONSE_SUCCESS and len(entries(store)) == 2
    assert stored_plaintext(repo) == SAMPLE_BYTES


# --- DSG detached signatures through ITI-41 (ITI TF-3 §5.5) --------------------------------------


def _dsg_submission(cda: bytes, other: bytes, dsg: bytes, *, signs: str) -> tuple[etree._Element, list[str]]:
    """Three documents for PATIENT: a CDA, another document, and a DSG signature document (its
    formatCode `urn:ihe:iti:dsg:detached:2014`) with a `signs` association to `signs` ("Document01"
    or "Document02"). Returns the request and the three uniqueIds."""
    from repository.signatures import DSG_DETACHED_FORMAT_CODE
    from repository_wire.xds_wire import Doc, new_oid
    from repository_wire.xds_wire import pnr as multi_pnr

    uids = [new_oid() for _ in range(3)]
    root = multi_pnr(PATIENT, [Doc(cda, uids[0]), Doc(other, uids[1]), Doc(dsg, uids[2])])
    ol = root.find("lcm:SubmitObjectsRequest/rim:RegistryObjectList", NS)
    signature_entry = ol.find("rim:ExtrinsicObject[@id='Document03']", NS)
    for c in signature_entry.iterfind("rim:Classification", NS):
        if c.get("classificationScheme") == C.DE_FORMAT_CODE:
            c.set("nodeRepresentation", DSG_DETACHED_FORMAT_CODE)
            c.find("rim:Slot/rim:ValueList/rim:Value", NS).text = "1.3.6.1.4.1.19376.1.2.3"
    etree.SubElement(ol, RIM + "Association", id="signs-1", objectType=C.OBJECT_TYPE_ASSOCIATION,
                     associationType=C.ASSOC_SIGNS, sourceObject="Document03", targetObject=signs)
    return root, uids


@pytest.fixture(scope="module")
def dsg_material():
    """(trust store, signing PKI, a CDA, another document) for the DSG tests."""
    from repository.signatures import TrustStore

    pki = make_signing_pki()
    cda = need_shared("samples", "cda", "ihe__XDS-SD.TEXT.xml").read_bytes()
    return TrustStore((pki.ca.cert,)), pki, cda, b"<note>another document of the submission</note>"


def _dsg_over(pki, documents: dict[str, bytes]) -> bytes:
    from repository.signatures import sign_detached

    return sign_detached({f"urn:oid:{uid}": data for uid, data in documents.items()}, pki.leaf.key, [pki.leaf.cert])


def _signature_slot(store, uid: str) -> list[str]:
    from repository.signatures import SIGNATURE_VERIFICATION_SLOT

    xml = etree.fromstring(unpack(entries(store, uid)[0].xml))
    return [v.text for s in xml.iterfind("rim:Slot", NS) if s.get("name") == SIGNATURE_VERIFICATION_SLOT
            for v in s.iterfind(".//rim:Value", NS)]


def test_a_dsg_signature_is_accepted_when_it_covers_what_its_signs_association_names(repo, store, dsg_material):
    from repository.signatures import SignatureMode, SignaturePolicy

    trust, pki, cda, other = dsg_material
    repo.signatures = SignaturePolicy(mode=SignatureMode.REJECT, trust=trust)
    root, uids = _dsg_submission(cda, other, b"", signs="Document01")
    dsg = _dsg_over(pki, {uids[0]: cda})
    root.find("xdsb:Document[@id='Document03']", NS).text = base64.b64encode(dsg).decode()
    status, errors = submit(repo, root)
    assert status == C.RESPONSE_SUCCESS, errors
    assert registry_count(store) == 3


@pytest.mark.parametrize("mode", ["reject", "record"])
def test_a_dsg_signature_whose_signs_association_names_a_document_it_does_not_cover_fails(
    repo, store, dsg_material, mode
):
    """The signature is valid over Document01, but the submission says it signs Document02."""
    from repository.signatures import SignatureMode, SignaturePolicy

    trust, pki, cda, other = dsg_material
    repo.signatures = SignaturePolicy(mode=SignatureMode(mode), trust=trust)
    root, uids = _dsg_submission(cda, other, b"", signs="Document02")
    dsg = _dsg_over(pki, {uids[0]: cda})
    root.find("xdsb:Document[@id='Document03']", NS).text = base64.b64encode(dsg).decode()
    status, errors = submit(repo, root)
    if mode == "reject":
        assert status == C.RESPONSE_FAILURE and codes(errors) == {E.XDSRepositoryMetadataError}
        assert registry_count(store) == 0 and repo.blobs.keys() == []
    else:
        assert status == C.RESPONSE_SUCCESS, errors
        values = _signature_slot(store, uids[2])
        assert values[0] == "status=invalid"
        assert any(v.startswith("reason=") and "signs association" in v and uids[1] in v for v in values)


# --- the repository's seal (repository.seal) ------------------------------------------------------


@pytest.fixture(scope="module")
def seal_identity():
    from repository.seal import RepositorySeal

    pki = make_signing_pki()
    return RepositorySeal(pki.leaf.key, (pki.leaf.cert, pki.ca.cert)), pki


def test_each_new_document_is_sealed_and_the_seal_proves_the_stored_bytes(
    registry, vault, journal, store, sample, seal_identity, blob_store
):
    from repository.crypto import encrypt
    from repository.seal import seal_key, verify_stored
    from repository.signatures import SignatureStatus

    seal, _pki = seal_identity
    repo = DocumentRepository(REPO, blob_store, vault, InProcessRegistryClient(registry), pending=journal, seal=seal)
    status, errors = submit(repo, pnr(sample))
    assert status == C.RESPONSE_SUCCESS, errors
    key = object_key(REPO, DOC_UID)
    with repo.blobs.open_read(seal_key(REPO, DOC_UID)) as r:
        sealed = b"".join(r)
    assert b"Carnet repository seal" in sealed and SAMPLE_BYTES not in sealed
    assert verify_stored(repo.blobs, repo.vault, REPO, DOC_UID, seal.trust()).status is SignatureStatus.VALID

    # an identical resubmission keeps the first seal
    assert submit(repo, pnr(sample))[0] == C.RESPONSE_SUCCESS
    with repo.blobs.open_read(seal_key(REPO, DOC_UID)) as r:
        assert b"".join(r) == sealed

    # the stored document replaced behind the repository's back (properly encrypted): the seal says so
    meta = repo.blobs.read_metadata(key)
    repo.blobs.delete(key)
    with repo.blobs.open_staged(key, meta) as w:
        w.write(encrypt(repo.vault.data_key_for(PATIENT), DocumentBinding(REPO, DOC_UID), b"other bytes"))
        w.commit()
    verdict = verify_stored(repo.blobs, repo.vault, REPO, DOC_UID, seal.trust())
    assert verdict.status is SignatureStatus.INVALID and "digest" in verdict.reason.lower()


def test_a_seal_made_by_another_key_is_not_the_repositorys(repo, store, sample, seal_identity):
    from repository.seal import RepositorySeal, verify_stored
    from repository.signatures import SignatureStatus

    seal, pki = seal_identity
    repo.seal = RepositorySeal(pki.foreign.key, (pki.foreign.cert, pki.other_ca.cert))
    assert submit(repo, pnr(sample))[0] == C.RESPONSE_SUCCESS
    verdict = verify_stored(repo.blobs, repo.vault, REPO, DOC_UID, seal.trust())
    assert verdict.status is not SignatureStatus.VALID


def test_a_refused_submission_leaves_no_seal(repo, store, sample, seal_identity):
    from repository.seal import seal_key

    repo.seal = seal_identity[0]
    status, errors = submit(repo, pnr(sample, patient="UNKNOWN-1^^^&1.2.3&ISO"))
    assert status == C.RESPONSE_FAILURE and codes(errors) == {E.XDSUnknownPatientId}
    assert not repo.blobs.exists(seal_key(REPO, DOC_UID)) and repo.blobs.keys() == []


# --- infrastructure: XDSRepositoryOutOfResources / XDSRepositoryBusy (ITI TF-3 Table 4.2.4.1-2) -------


class _FailingWrites:
    """A blob store whose writers fail the way a full disk (ENOSPC) or a throttling S3 (SlowDown) does."""

    def __init__(self, inner, failure: BaseException) -> None:
        self._inner, self._failure = inner, failure

    def open_staged(self, key, metadata=None):
        writer = self._inner.open_staged(key, metadata)
        failure = self._failure

        class Writer:
            def write(self, data):
                from repository.blobs import BlobStoreError

                writer.abort()
                raise BlobStoreError(f"cannot write blob {key!r}: {failure}") from failure

            def __getattr__(self, name):
                return getattr(writer, name)

        return Writer()

    def __getattr__(self, name):
        return getattr(self._inner, name)


def _s3_slow_down():
    from minio.error import S3Error

    return S3Error(None, "SlowDown", "Please reduce your request rate.", "/b/k", "r", "h", "b", "k")


@pytest.mark.parametrize("failure, code", [
    (OSError(28, "No space left on device"), E.XDSRepositoryOutOfResources),
    ("s3-slow-down", E.XDSRepositoryBusy),
    (OSError(5, "Input/output error"), E.XDSRepositoryError),
], ids=["disk-full", "s3-slow-down", "io-error"])
def test_a_store_that_cannot_take_the_document_answers_the_matching_code(
    registry, vault, journal, store, sample, failure, code
):
    failure = _s3_slow_down() if failure == "s3-slow-down" else failure
    repo = DocumentRepository(REPO, _FailingWrites(MemoryBlobStore(), failure), vault,
                              InProcessRegistryClient(registry), pending=journal)
    status, errors = submit(repo, pnr(sample))
    assert status == C.RESPONSE_FAILURE and codes(errors) == {code}
    assert registry_count(store) == 0 and repo.blobs.keys() == []


def test_record_mode_says_when_a_document_was_too_large_to_verify(repo, store, sample, signed_cdas):
    """A document above the policy's verification limit is stored (record mode) with the verdict
    `status=unverified` and the reason, rather than with no verdict at all; reject mode refuses it."""
    from repository.signatures import SIGNATURE_VERIFICATION_SLOT, SignatureMode, SignaturePolicy

    trust, signed, _tampered = signed_cdas
    repo.signatures = SignaturePolicy(mode=SignatureMode.RECORD, trust=trust, max_bytes=len(signed) - 1)
    status, errors = submit(repo, pnr(sample, signed))
    assert status == C.RESPONSE_SUCCESS, errors
    xml = etree.fromstring(unpack(entries(store)[0].xml))
    [slot] = [s for s in xml.iterfind("rim:Slot", NS) if s.get("name") == SIGNATURE_VERIFICATION_SLOT]
    values = [v.text for v in slot.iterfind(".//rim:Value", NS)]
    assert values[0] == "status=unverified" and any("verification limit" in v for v in values)

    repo.signatures = SignaturePolicy(mode=SignatureMode.REJECT, trust=trust, max_bytes=len(signed) - 1)
    status, errors = submit(repo, pnr(sample, signed, doc_uid=DOC_UID + ".2"))
    assert status == C.RESPONSE_FAILURE and codes(errors) == {E.XDSRepositoryMetadataError}
