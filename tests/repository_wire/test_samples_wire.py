"""The ITI-41 and ITI-43 samples of ../shared replayed against a running Carnet over HTTP (issue 3,
"How it must be tested"): each answer is checked against the MANIFEST's expected outcome and
XDS.b_DocumentRepository.xsd, and what was provided is retrieved (ITI-43, MTOM) byte for byte and
compared with the registry's hash and size (ITI-18)."""

from __future__ import annotations

import base64
import csv
import re

import pytest
from lxml import etree

from registry import constants as C
from repository_wire.xds_wire import (
    ACTION_ITI41_RESPONSE,
    NS,
    NS_SOAP,
    REPO_UID,
    SELF5,
    SOAP_CONTENT_TYPE,
    Doc,
    assert_schema_valid,
    assert_success,
    entry_of,
    error_codes,
    find_documents,
    new_oid,
    pnr,
    post,
    provide,
    read_retrieve,
    read_soap,
    retrieve,
    sha1,
)
from support import SHARED, need_shared, soap_envelope

pytestmark = pytest.mark.integration

ACTION_ITI41 = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ACTION_ITI43 = "urn:ihe:iti:2007:RetrieveDocumentSet"


def _sample(*parts: str) -> bytes:
    return need_shared("samples", *parts).read_bytes()


def _manifest(kind: str) -> dict[str, str]:
    """{file name: expected outcome} of MANIFEST.tsv for one transaction folder."""
    path = SHARED / "samples" / "MANIFEST.tsv"
    if not path.exists():
        return {}
    with open(path, encoding="utf-8") as fh:
        rows = [r for r in csv.reader(fh, delimiter="\t") if r and r[0].startswith(kind + "/")]
    return {r[0].split("/", 1)[1]: r[4] for r in rows}


def assert_sender_fault(answer) -> None:
    """A SOAP 1.2 Sender fault (SOAP 1.2 Part 1 §5.4.6; HTTP binding: 400)."""
    assert answer.body.tag == f"{{{NS_SOAP}}}Fault", etree.tostring(answer.body)[:400]
    assert answer.body.findtext("env:Code/env:Value", namespaces=NS).endswith(":Sender")
    assert answer.status == 400


# --- the IHE example, inline base64 -------------------------------------------------------------


def test_ihe_soap_sample_is_provided_then_retrieved_byte_identical(carnet):
    raw = _sample("iti41", "ihe__ProvideAndRegisterDocumentSet-bRequest_SOAP.xml")
    sent = etree.fromstring(raw)
    content = base64.b64decode(sent.findtext(".//xdsb:Document", namespaces={"xdsb": C.NS_XDSB}))
    doc_uid = "1.3.6.1.4.1.21367.2005.3.9999.32"
    carnet.store.add_patient(SELF5)

    answer = read_soap(post(carnet.repository_url, raw, SOAP_CONTENT_TYPE))
    assert_success(answer)
    assert not answer.mtom
    header = answer.envelope.find("env:Header", NS)
    assert header.findtext("wsa:Action", namespaces=NS) == ACTION_ITI41_RESPONSE
    assert header.findtext("wsa:RelatesTo", namespaces=NS) == sent.findtext(".//wsa:MessageID", namespaces=NS)

    entry = entry_of(carnet.registry_url, SELF5, doc_uid)
    assert (entry.repository_unique_id, entry.hash, entry.size) == (REPO_UID, sha1(content), len(content))

    got = retrieve(carnet.repository_url, [(REPO_UID, doc_uid)])
    assert got.answer.mtom  # ITI TF-2b §3.43.5: the response is MTOM/XOP
    assert (got.status, got.errors) == (C.RESPONSE_SUCCESS, [])
    assert got.documents == {doc_uid: (REPO_UID, "text/xml", content)}
    assert sha1(got.documents[doc_uid][2]) == entry.hash
    # both transactions audited (ITI TF-2b §3.41.5.1, §3.43.5.1)
    events = [(e.transaction, e.outcome, e.document_unique_ids) for e in carnet.audit.events
              if e.transaction in ("ITI-41", "ITI-43")]
    assert events == [("ITI-41", "success", (doc_uid,)), ("ITI-43", "success", (doc_uid,))]


def test_ihe_sample_resubmitted_identical_is_accepted_and_different_is_non_identical_hash(carnet):
    """ITI TF-2b §3.41.4.1.3: the same uniqueId with the same content is accepted; with other
    content it is XDSNonIdenticalHash, and the stored document is untouched."""
    raw = _sample("iti41", "ihe__ProvideAndRegisterDocumentSet-bRequest_SOAP.xml")
    doc_uid = "1.3.6.1.4.1.21367.2005.3.9999.32"
    original = base64.b64decode(etree.fromstring(raw).findtext(".//xdsb:Document", namespaces=NS))
    carnet.store.add_patient(SELF5)
    assert_success(read_soap(post(carnet.repository_url, raw, SOAP_CONTENT_TYPE)))

    def resubmit(content: bytes):
        root = etree.fromstring(raw)
        root.find(".//xdsb:Document", NS).text = base64.b64encode(content)
        for ei in root.iter(f"{{{C.NS_RIM}}}ExternalIdentifier"):  # a new SubmissionSet each time
            if ei.get("identificationScheme") == C.SS_UNIQUE_ID:
                ei.set("value", new_oid())
        return read_soap(post(carnet.repository_url, etree.tostring(root), SOAP_CONTENT_TYPE))

    assert_success(resubmit(original))  # identical: accepted, registered again (same hash and size)
    different = resubmit(original + b"!")
    assert different.body.get("status") == C.RESPONSE_FAILURE
    assert "XDSNonIdenticalHash" in error_codes(different.body)
    assert_schema_valid(different.body)
    got = retrieve(carnet.repository_url, [(REPO_UID, doc_uid)])
    assert got.documents[doc_uid][2] == original
    assert [e.unique_id for e in find_documents(carnet.registry_url, SELF5)] == [doc_uid, doc_uid]


# --- the raw MTOM capture (Axis2, via NIST) -----------------------------------------------------


CAPTURE = "nist-validator__http-mtom-pnr.txt"


def _capture(line_end: bytes) -> tuple[str, bytes, bytes, str]:
    """(Content-Type, body, the text document it carries, its patient id) of the captured HTTP POST.
    The capture is stored with LF line ends; `line_end` b"\\r\\n" restores the CRLF of the wire."""
    raw = _sample("iti41", CAPTURE)
    head, _, body = raw.partition(b"\n\n")
    headers = {}
    for line in head.decode("ascii").split("\n")[1:]:  # skip the request line
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    content_type = headers["content-type"]
    boundary = re.search(r"boundary=([^;\s]+)", content_type).group(1).encode()
    # the document: the part with Content-ID <1.urn:…>, up to the line end before the next delimiter
    part = body.split(b"\n--" + boundary)[1]
    part_head, _, document = part.partition(b"\n\n")
    assert b"Content-Type: text/plain" in part_head and document.startswith(b"Four score")
    patient = re.search(rb'identificationScheme="%s" value="([^"]+)"' % C.SS_PATIENT_ID.encode(), body).group(1)
    if line_end != b"\n":
        body, document = body.replace(b"\n", line_end), document.replace(b"\n", line_end)
    return content_type, body, document, patient.decode().replace("&amp;", "&")


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"], ids=["as-stored-LF", "CRLF"])
def test_nist_mtom_capture_is_provided_then_retrieved(carnet, line_end):
    content_type, body, document, patient = _capture(line_end)
    doc_uid = "1.42.20101011223601.2"
    carnet.store.add_patient(patient)

    answer = read_soap(post(carnet.repository_url, body, content_type))
    assert_success(answer)
    assert answer.mtom  # an MTOM request is answered with MTOM (ITI TF-2x V.3.6)
    assert answer.envelope.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == (
        "urn:uuid:3D4B161591CD1DEC0C1286850962146")  # the capture's wsa:MessageID
    entry = entry_of(carnet.registry_url, patient, doc_uid)
    assert (entry.repository_unique_id, entry.hash, entry.size, entry.mime_type) == (
        REPO_UID, sha1(document), len(document), "text/plain")

    got = retrieve(carnet.repository_url, [(REPO_UID, doc_uid)])
    assert (got.status, got.errors) == (C.RESPONSE_SUCCESS, [])
    assert got.documents == {doc_uid: (REPO_UID, "text/plain", document)}


def test_nist_mtom_capture_for_an_unknown_patient_stores_nothing(carnet):
    content_type, body, _, patient = _capture(b"\r\n")
    answer = read_soap(post(carnet.repository_url, body, content_type))
    assert answer.body.get("status") == C.RESPONSE_FAILURE
    assert "XDSUnknownPatientId" in error_codes(answer.body)
    assert_schema_valid(answer.body)
    got = retrieve(carnet.repository_url, [(REPO_UID, "1.42.20101011223601.2")])
    assert got.status == C.RESPONSE_FAILURE
    assert got.errors == [("XDSDocumentUniqueIdError", "1.42.20101011223601.2")]
    assert stored_blob_files(carnet) == []


# --- the other ITI-41 samples, completed with their documents -----------------------------------

PNR_SAMPLES = [
    "nist-validator__soap-pnr.xml",
    "nist-validator__pnr.xml",
    "nist-validator__pnr-bad-uplink.xml",
    "nist-validator__pnr-assoc-to-self.xml",
    "nist-validator__pnr-element-order.xml",
    "nist-validator__soap-pnr-element-order.xml",
    "nist-validator__soap-noaction-pnr.xml",
    "nist-validator__soap-pnr-soap-order.xml",
]


def _with_documents(raw: bytes) -> tuple[bytes, dict[str, tuple[str, bytes]], list[str]]:
    """The sample in a SOAP envelope (unless it is one), one inline xdsb:Document per
    ExtrinsicObject (the NIST validator samples carry metadata only): (message, {documentUniqueId:
    (mimeType, content)}, patient ids)."""
    root = etree.fromstring(raw)
    request = root if root.tag == f"{{{C.NS_XDSB}}}ProvideAndRegisterDocumentSetRequest" else root.find(
        ".//xdsb:ProvideAndRegisterDocumentSetRequest", NS)
    contents, patients = {}, set()
    for eo in request.iterfind(".//rim:ExtrinsicObject", NS):
        content = f"document {eo.get('id')} of a NIST sample\n".encode()
        etree.SubElement(request, f"{{{C.NS_XDSB}}}Document", id=eo.get("id")).text = base64.b64encode(content)
        for ei in eo.iterfind("rim:ExternalIdentifier", NS):
            if ei.get("identificationScheme") == C.DE_UNIQUE_ID:
                contents[ei.get("value")] = (eo.get("mimeType"), content)
    for ei in request.iter(f"{{{C.NS_RIM}}}ExternalIdentifier"):
        if ei.get("identificationScheme") in (C.DE_PATIENT_ID, C.SS_PATIENT_ID):
            patients.add(ei.get("value"))
    if root is request:
        return soap_envelope(etree.tostring(request), ACTION_ITI41), contents, sorted(patients)
    return etree.tostring(root), contents, sorted(patients)


@pytest.mark.parametrize("name", PNR_SAMPLES)
def test_iti41_samples_answer_as_the_manifest_expects(carnet, name):
    expected = _manifest("iti41").get(name) or pytest.skip("not in MANIFEST.tsv")
    message, contents, patients = _with_documents(_sample("iti41", name))
    assert contents and patients
    for patient in patients:
        carnet.store.add_patient(patient)
    answer = read_soap(post(carnet.repository_url, message, SOAP_CONTENT_TYPE))

    if expected.startswith("SOAP Fault"):
        assert_sender_fault(answer)
    elif expected == "success":
        assert_success(answer)
        entries = {e.unique_id: e for e in find_documents(carnet.registry_url, patients[0])}
        assert set(entries) == set(contents)
        got = retrieve(carnet.repository_url, [(REPO_UID, uid) for uid in contents])
        assert (got.status, got.errors) == (C.RESPONSE_SUCCESS, [])
        for uid, (mime, content) in contents.items():
            assert got.documents[uid] == (REPO_UID, mime, content)
            assert (entries[uid].hash, entries[uid].size) == (sha1(content), len(content))
        return
    else:
        assert expected.startswith("error:")
        assert answer.status == 200
        assert_schema_valid(answer.body)
        assert answer.body.get("status") == C.RESPONSE_FAILURE
        assert "XDSRegistryMetadataError" in error_codes(answer.body)
    # nothing registered, nothing retrievable, no blob left
    assert find_documents(carnet.registry_url, patients[0]) == []
    got = retrieve(carnet.repository_url, [(REPO_UID, uid) for uid in contents])
    assert got.status == C.RESPONSE_FAILURE and {code for code, _ in got.errors} == {"XDSDocumentUniqueIdError"}
    assert stored_blob_files(carnet) == []


def stored_blob_files(carnet) -> list:
    """Committed blob files of the filesystem store (staging excluded)."""
    root = carnet.repository.blobs.root
    return sorted(p for p in root.rglob("*") if p.is_file() and ".staging" not in p.relative_to(root).parts)


def test_limited_metadata_sample_is_refused_by_an_xds_repository(carnet):
    """NIST's limited-metadata PnR has no patientId: limited metadata is for XDR/XDM (ITI TF-3
    §4.1.1.1), an XDS Document Repository refuses it and keeps nothing."""
    message, contents, patients = _with_documents(_sample("iti41", "nist-validator__pnr-limited.xml"))
    assert contents and not patients
    answer = read_soap(post(carnet.repository_url, message, SOAP_CONTENT_TYPE))
    assert answer.status == 200 and answer.body.get("status") == C.RESPONSE_FAILURE
    assert_schema_valid(answer.body)
    assert set(error_codes(answer.body)) & {"XDSRepositoryMetadataError", "XDSRegistryMetadataError"}
    got = retrieve(carnet.repository_url, [(REPO_UID, uid) for uid in contents])
    assert got.status == C.RESPONSE_FAILURE
    assert stored_blob_files(carnet) == []


# --- ITI-43 samples -----------------------------------------------------------------------------

RETRIEVE_SAMPLES = [
    "ihe__RetrieveDocumentSetRequest_SOAP.xml",
    "ihe__RetrieveDocumentSetRequest.xml",
    "nist-validator__soap-ret-req.xml",
]
PLACEHOLDER_REPO = "1.3.6.1.4...1000"
PLACEHOLDER_DOCS = ("1.3.6.1.4...2300", "1.3.6.1.4...2301")


def _retrieve_message(name: str, replacements: dict[str, str] | None = None) -> bytes:
    raw = _sample("iti43", name)
    for old, new in (replacements or {}).items():
        raw = raw.replace(old.encode(), new.encode())
    root = etree.fromstring(raw)
    if root.tag == f"{{{NS_SOAP}}}Envelope":
        return raw
    return soap_envelope(etree.tostring(root), ACTION_ITI43)


@pytest.mark.parametrize("name", RETRIEVE_SAMPLES)
def test_iti43_samples_as_sent_name_another_repository(carnet, name):
    """The samples' placeholder repositoryUniqueId is not ours: one XDSUnknownRepositoryId per
    document, located at the DocumentUniqueId requested (ITI TF-2b §3.43.4.2.2), Failure, no document."""
    assert _manifest("iti43").get(name, "success") == "success"
    answer = read_soap(post(carnet.repository_url, _retrieve_message(name), SOAP_CONTENT_TYPE))
    assert answer.status == 200
    assert_schema_valid(answer.body, answer.attachments)
    rr = answer.body.find("rs:RegistryResponse", NS)
    assert rr.get("status") == C.RESPONSE_FAILURE
    errors = [(e.get("errorCode"), e.get("location")) for e in rr.iter(f"{{{C.NS_RS}}}RegistryError")]
    assert errors == [("XDSUnknownRepositoryId", uid) for uid in PLACEHOLDER_DOCS]
    assert answer.body.find("xdsb:DocumentResponse", NS) is None


@pytest.mark.parametrize("name", RETRIEVE_SAMPLES)
def test_iti43_samples_retrieve_the_documents_they_name_once_provided(carnet, name):
    uids = [new_oid(), new_oid()]
    contents = [b"<ClinicalDocument>first</ClinicalDocument>", b"%PDF-1.4 second\x00\xff"]
    carnet.store.add_patient(SELF5)
    assert_success(provide(carnet.repository_url, pnr(SELF5, [
        Doc(contents[0], uids[0], "text/xml"), Doc(contents[1], uids[1], "application/pdf")]), mtom=True))
    mapping = {PLACEHOLDER_REPO: REPO_UID, PLACEHOLDER_DOCS[0]: uids[0], PLACEHOLDER_DOCS[1]: uids[1]}

    answer = read_soap(post(carnet.repository_url, _retrieve_message(name, mapping), SOAP_CONTENT_TYPE))
    got = read_retrieve(answer)
    assert (got.status, got.errors) == (C.RESPONSE_SUCCESS, [])
    assert got.documents == {uids[0]: (REPO_UID, "text/xml", contents[0]),
                             uids[1]: (REPO_UID, "application/pdf", contents[1])}
    # in request order (ITI TF-2b §3.43.4.2.2)
    order = [dr.findtext("xdsb:DocumentUniqueId", namespaces=NS)
             for dr in answer.body.iterfind("xdsb:DocumentResponse", NS)]
    assert order == uids


def test_iti43_sample_with_one_document_missing_is_partial_success(carnet):
    uid = new_oid()
    carnet.store.add_patient(SELF5)
    assert_success(provide(carnet.repository_url, pnr(SELF5, [Doc(b"only this one", uid)]), mtom=True))
    mapping = {PLACEHOLDER_REPO: REPO_UID, PLACEHOLDER_DOCS[0]: uid}
    got = retrieve_sample(carnet, "nist-validator__soap-ret-req.xml", mapping)
    assert got.status == C.RESPONSE_PARTIAL_SUCCESS
    assert got.errors == [("XDSDocumentUniqueIdError", PLACEHOLDER_DOCS[1])]
    assert got.documents == {uid: (REPO_UID, "text/xml", b"only this one")}


def retrieve_sample(carnet, name, mapping):
    return read_retrieve(read_soap(post(carnet.repository_url, _retrieve_message(name, mapping), SOAP_CONTENT_TYPE)))


def test_iti43_sample_with_misordered_elements_is_a_sender_fault(carnet):
    assert _manifest("iti43").get("nist-validator__soap-ret-req-order.xml", "error").startswith("error")
    message = _retrieve_message("nist-validator__soap-ret-req-order.xml")
    assert_sender_fault(read_soap(post(carnet.repository_url, message, SOAP_CONTENT_TYPE)))
