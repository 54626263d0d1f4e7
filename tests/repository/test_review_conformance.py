"""Document Repository conformance points found in review (ITI TF-2b §3.41, §3.43; ITI TF-3 §4.2.4).

Each test names the TF rule it checks. The repository runs on the in-memory blob store with a
real registry (SQLite and PostgreSQL through `engine`), as in test_iti41 / test_iti43.
"""

from __future__ import annotations

import base64
import functools
import copy
import uuid

import pytest
from lxml import etree
from sqlalchemy import func, select

import repository_support
from registry import constants as C
from registry import schema as S
from registry.endpoint import DocumentRegistry
from repository import pending as P
from repository.blobs.memory import MemoryBlobStore
from repository.endpoint import ACTION_ITI41, DocumentRepository
from repository.iti43_retrieve import retrieve
from repository.registry_client import InProcessRegistryClient
from soap.envelope import SoapRequest
from soap.mtom import NS_XOP
from soap.xmlparse import parse_xml
from repository_support import PATIENT
from support import need_shared, xdsb_schema

NS = {"rim": C.NS_RIM, "rs": C.NS_RS, "xdsb": C.NS_XDSB, "lcm": C.NS_LCM, "xop": NS_XOP}
XDSB = C.NS_XDSB
REPO = "1.2.250.1.999.1.1"


# --- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
def repo(engine, store, vault):
    registry = DocumentRegistry(store=store)
    return DocumentRepository(REPO, MemoryBlobStore(), vault, InProcessRegistryClient(registry),
                              pending=P.PendingJournal(engine))


@pytest.fixture(scope="module")
def sample() -> etree._Element:
    path = need_shared("samples", "iti41", "ihe__ProvideAndRegisterDocumentSet-bRequest.xml")
    return parse_xml(path.read_bytes())


def fresh(sample) -> etree._Element:
    """The IHE sample with a fresh SubmissionSet and DocumentEntry uniqueId, for our patient."""
    root = copy.deepcopy(sample)
    for ei in root.iterfind(".//rim:ExternalIdentifier", NS):
        scheme = ei.get("identificationScheme")
        if scheme in (C.DE_UNIQUE_ID, C.SS_UNIQUE_ID):
            ei.set("value", f"2.25.{uuid.uuid4().int}")
        elif scheme in (C.DE_PATIENT_ID, C.SS_PATIENT_ID):
            ei.set("value", PATIENT)
    return root


def submit(repo, body: etree._Element) -> tuple[str, list[tuple[str, str, str]]]:
    request = SoapRequest(action=ACTION_ITI41, message_id=f"urn:uuid:{uuid.uuid4()}", to=None, reply_to=None,
                          relates_to=None, header_elements=(), body=body, envelope=body, attachments={}, xop={})
    response = repo.provide_and_register_document_set(request, None).body
    assert response.tag == f"{{{C.NS_RS}}}RegistryResponse"
    errors = [(e.get("errorCode"), e.get("location"), e.get("severity"))
              for e in response.iterfind(".//rs:RegistryError", NS)]
    return response.get("status"), errors


store_document = functools.partial(repository_support.store_document, repo=REPO, patient=PATIENT)
retrieve_request = functools.partial(repository_support.retrieve_request, repo=REPO)


def answer(reply) -> tuple[etree._Element, dict[str, bytes]]:
    return reply.body, {a.content_id: b"".join(a.chunks) for a in reply.attachments}


def status_and_errors(body) -> tuple[str, list[tuple[str, str, str]]]:
    rr = body.find("rs:RegistryResponse", NS)
    return rr.get("status"), [(e.get("errorCode"), e.get("location"), e.get("severity"))
                              for e in rr.iterfind(".//rs:RegistryError", NS)]


def assert_valid(body, data) -> None:
    """The XOP infoset of the response (each xop:Include replaced by its part, base64) against the XSD."""
    doc = etree.fromstring(etree.tostring(body))
    for include in list(doc.iter(f"{{{NS_XOP}}}Include")):
        parent = include.getparent()
        parent.remove(include)
        parent.text = base64.b64encode(data[include.get("href")[4:]]).decode()
    schema = xdsb_schema()
    assert schema.validate(doc), schema.error_log


# --- ITI-43 ------------------------------------------------------------------------------------


def test_unknown_repository_error_is_located_at_the_document_unique_id(vault):
    """ITI TF-2b §3.43.4.2.2: for each DocumentRequest that fails, a RegistryError whose @location
    "contains the DocumentUniqueId of the document requested" (the consumer correlates errors with
    its requests through it); here XDSUnknownRepositoryId (ITI TF-3 Table 4.2.4.1-2)."""
    blobs = MemoryBlobStore()
    store_document(blobs, vault, "1.2.3.1", b"found")
    other = "1.2.3.999"
    body, data = answer(retrieve(retrieve_request((REPO, "1.2.3.1"), (other, "1.2.3.7")),
                                 blobs=blobs, vault=vault, repository_unique_id=REPO))
    status, errors = status_and_errors(body)
    assert status == C.RESPONSE_PARTIAL_SUCCESS
    assert errors == [("XDSUnknownRepositoryId", "1.2.3.7", C.SEVERITY_ERROR)]
    rr = body.find("rs:RegistryResponse/rs:RegistryErrorList/rs:RegistryError", NS)
    assert other in rr.get("codeContext")  # the message still names the repository asked for
    # the found document is still returned (PartialSuccess), and only it
    returned = [dr.findtext("xdsb:DocumentUniqueId", namespaces=NS) for dr in body.iterfind("xdsb:DocumentResponse", NS)]
    assert returned == ["1.2.3.1"]
    assert_valid(body, data)


def test_unknown_community_error_is_located_at_the_document_unique_id(vault):
    """ITI TF-2b §3.43.4.2.2 (@location = DocumentUniqueId), for XDSUnknownCommunity."""
    blobs = MemoryBlobStore()
    store_document(blobs, vault, "1.2.3.1", b"doc")
    body, _ = answer(retrieve(retrieve_request((REPO, "1.2.3.1"), home="urn:oid:9.9"), blobs=blobs, vault=vault,
                              repository_unique_id=REPO, home_community_id="urn:oid:1.2.250.1.999"))
    status, errors = status_and_errors(body)
    assert status == C.RESPONSE_FAILURE
    assert errors == [("XDSUnknownCommunity", "1.2.3.1", C.SEVERITY_ERROR)]
    assert "urn:oid:9.9" in body.find(".//rs:RegistryError", NS).get("codeContext")
    assert body.find("xdsb:DocumentResponse", NS) is None


# --- ITI-41 ------------------------------------------------------------------------------------


def _folder(rol: etree._Element) -> None:
    """A Folder (ITI TF-3 §4.2.3.4) and the SubmissionSet's HasMember of it, into `rol`."""
    rim = f"{{{C.NS_RIM}}}"
    folder = etree.SubElement(rol, rim + "RegistryPackage", id="Folder01")
    etree.SubElement(etree.SubElement(folder, rim + "Name"), rim + "LocalizedString", value="Dossier")
    code = etree.SubElement(folder, rim + "Classification", id="clF1", classificationScheme=C.FOLDER_CODE_LIST,
                            classifiedObject="Folder01", nodeRepresentation="General Medicine")
    slot = etree.SubElement(code, rim + "Slot", name="codingScheme")
    value = etree.SubElement(etree.SubElement(slot, rim + "ValueList"), rim + "Value")
    value.text = "Connect-a-thon practiceSettingCodes"
    etree.SubElement(etree.SubElement(code, rim + "Name"), rim + "LocalizedString", value="General Medicine")
    for n, (scheme, value, name) in enumerate([(C.FOLDER_PATIENT_ID, PATIENT, "XDSFolder.patientId"),
                                               (C.FOLDER_UNIQUE_ID, f"2.25.{uuid.uuid4().int}", "XDSFolder.uniqueId")]):
        ei = etree.SubElement(folder, rim + "ExternalIdentifier", id=f"eiF{n}", registryObject="Folder01",
                              identificationScheme=scheme, value=value)
        etree.SubElement(etree.SubElement(ei, rim + "Name"), rim + "LocalizedString", value=name)
    etree.SubElement(rol, rim + "Classification", id="clF2", classifiedObject="Folder01",
                     classificationNode=C.FOLDER_CLASSIFICATION_NODE)
    etree.SubElement(rol, rim + "Association", id="asF1", associationType=C.ASSOC_HAS_MEMBER,
                     sourceObject="SubmissionSet01", targetObject="Folder01")


def test_a_submission_without_documents_is_forwarded_to_the_registry(repo, store, sample):
    """XDS.b_DocumentRepository.xsd: xdsb:Document is optional (minOccurs 0), and ITI TF-2b
    §3.41.4.1.3: the repository forwards the metadata to the registry (ITI-42) and returns its
    answer. A submission of a Folder alone holds no document: nothing is stored, it is registered."""
    root = fresh(sample)
    rol = root.find("lcm:SubmitObjectsRequest/rim:RegistryObjectList", NS)
    rol.remove(rol.find("rim:ExtrinsicObject", NS))
    rol.remove(rol.find("rim:Association", NS))
    root.remove(root.find("xdsb:Document", NS))
    _folder(rol)
    status, errors = submit(repo, root)
    assert (status, [e for e in errors if e[2] == C.SEVERITY_ERROR]) == (C.RESPONSE_SUCCESS, []), errors
    assert list(repo.blobs.keys()) == []


def test_an_xop_include_without_mtom_package_is_a_missing_document(repo, store, sample):
    """ITI TF-2b §3.41.4.1.3, ITI TF-3 Table 4.2.4.1-2: XDSMissingDocument — "DocumentEntry exists in
    metadata with no corresponding attached document". A request that is not an MTOM package has no
    attachment an xop:Include could name: the document is missing. It is never registered as the
    empty document the element's (absent) base64 text would decode to."""
    root = fresh(sample)
    document = root.find("xdsb:Document", NS)
    document.text = None
    etree.SubElement(document, f"{{{NS_XOP}}}Include", nsmap={"xop": NS_XOP}, href="cid:Document01@carnet.test")
    status, errors = submit(repo, root)
    assert status == C.RESPONSE_FAILURE
    assert {code for code, _, severity in errors if severity == C.SEVERITY_ERROR} == {"XDSMissingDocument"}
    assert list(repo.blobs.keys()) == []
    with store.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(S.document_entry)).scalar_one() == 0


def two_documents(sample) -> etree._Element:
    """`fresh(sample)` with a second DocumentEntry (Document02, its own uniqueId) in the SubmissionSet."""
    root = fresh(sample)
    rol = root.find("lcm:SubmitObjectsRequest/rim:RegistryObjectList", NS)
    eo = rol.find("rim:ExtrinsicObject", NS)
    second = copy.deepcopy(eo)
    second.set("id", "Document02")
    for el in second.iter():
        for attr in ("id", "classifiedObject", "registryObject"):
            value = el.get(attr)
            if value and el is not second:
                el.set(attr, value.replace("Document01", "Document02") if attr != "id" else value + "-2")
        if el.get("identificationScheme") == C.DE_UNIQUE_ID:
            el.set("value", f"2.25.{uuid.uuid4().int}")
    eo.addnext(second)
    association = copy.deepcopy(rol.find("rim:Association", NS))
    association.set("id", "as02")
    association.set("targetObject", "Document02")
    rol.append(association)
    document = root.find("xdsb:Document", NS)
    document.addnext(etree.Element(document.tag, id="Document02"))
    return root


def stream_mtom(repo, body: etree._Element, parts: dict[str, bytes], includes: dict[str, str]) -> SoapRequest:
    """What the edge does with an MTOM ITI-41: the root to the intake, each part streamed into the
    sink the intake opens for it, then xop:Include elements resolved (`soap.mtom.resolve_xop`).
    `includes`: xdsb:Document id → the Content-ID its xop:Include names."""
    from soap.mtom import Attachment, resolve_xop

    for document in body.iterfind("xdsb:Document", NS):
        document.text = None
        etree.SubElement(document, f"{{{NS_XOP}}}Include", nsmap={"xop": NS_XOP},
                         href=f"cid:{includes[document.get('id')]}")
    request = SoapRequest(action=ACTION_ITI41, message_id=f"urn:uuid:{uuid.uuid4()}", to=None, reply_to=None,
                          relates_to=None, header_elements=(), body=body, envelope=body, attachments={}, xop={})
    intake = repo.new_intake()
    intake.on_root(request)
    results = {}
    for cid, data in parts.items():
        sink = intake.open_part(cid, {})
        sink.write(data)
        results[cid] = Attachment(cid, "application/octet-stream", sink.close(), len(data))
    attachments = {cid: a.data for cid, a in results.items()}
    xop = resolve_xop(body, attachments)
    return SoapRequest(action=ACTION_ITI41, message_id=request.message_id, to=None, reply_to=None,
                       relates_to=None, header_elements=(), body=body, envelope=body,
                       attachments=attachments, xop=xop)


def test_two_documents_sharing_one_mime_part_are_not_registered_half_completed(repo, store, sample):
    """ITI TF-2b §3.41.4.1.3: the repository sets repositoryUniqueId, hash and size on the metadata of
    each document it stores before registering it. Two xdsb:Document elements naming one MIME part:
    the part was streamed into one document's blob only, so the other is not stored under its own
    uniqueId; the submission fails at the repository (XDSRepositoryMetadataError) instead of sending
    the registry a DocumentEntry without hash, size or repositoryUniqueId."""
    body = two_documents(sample)
    request = stream_mtom(repo, body, {"shared@carnet.test": b"one part"},
                          {"Document01": "shared@carnet.test", "Document02": "shared@carnet.test"})
    response = repo.provide_and_register_document_set(request, None).body
    errors = {(e.get("errorCode"), e.get("location")) for e in response.iterfind(".//rs:RegistryError", NS)}
    assert response.get("status") == C.RESPONSE_FAILURE
    assert {code for code, _ in errors} == {"XDSRepositoryMetadataError"}, errors
    assert list(repo.blobs.keys()) == []


def test_two_documents_in_two_mime_parts_are_both_stored(repo, store, sample):
    """The same submission with one part per document: both stored and registered completed."""
    body = two_documents(sample)
    request = stream_mtom(repo, body, {"a@carnet.test": b"first", "b@carnet.test": b"second"},
                          {"Document01": "a@carnet.test", "Document02": "b@carnet.test"})
    response = repo.provide_and_register_document_set(request, None).body
    assert response.get("status") == C.RESPONSE_SUCCESS, etree.tostring(response)
    assert len(repo.blobs.keys()) == 2
