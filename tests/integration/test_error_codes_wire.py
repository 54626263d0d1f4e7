"""One valid submission plus one mutation per XDS error code, over the wire (DESIGN.md §3 rule 10).

The valid message is IHE's RegisterDocumentSet-b example completed with what a Document Repository
adds before ITI-42 (repositoryUniqueId, hash, size: ITI TF-3 Table 4.3.1-3). Each test asserts the
exact error code and that the registry kept nothing of the failed submission.
"""

from __future__ import annotations

import uuid

import pytest
from lxml import etree

from registry import constants as C
from carnet_support import running_carnet
from xds_messages import (
    OTHER,
    RIM,
    SELF5,
    set_slot,
    slot,
    add_association,
    document,
    valid_submission,
)
from support import post_soap, soap_body, soap_envelope, xdsb_schema


def submit(carnet, root) -> tuple[str, list[str]]:
    status, _, env = post_soap(carnet.registry_url, soap_envelope(etree.tostring(root), C.ACTION_ITI42))
    assert status == 200
    resp = soap_body(env)
    schema = xdsb_schema()  # every answer validates against the XDS.b schema (issue 2)
    assert schema.validate(resp), schema.error_log
    codes = [e.get("errorCode") for e in resp.iter(f"{{{C.NS_RS}}}RegistryError")
             if e.get("severity") == C.SEVERITY_ERROR]
    return resp.get("status"), codes


def entry_uuid_of(carnet, doc_uid: str) -> str:
    return carnet.store.documents_by_unique_id([doc_uid])[doc_uid][0].id


def assert_refused(carnet, root, code: str) -> None:
    before = carnet.store.count_rows()
    status, codes = submit(carnet, root)
    assert status == C.RESPONSE_FAILURE
    assert codes == [code], codes  # DESIGN.md rule 10: the exact code, and only it
    assert carnet.store.count_rows() == before


@pytest.fixture
def known(carnet):
    carnet.store.add_patient(SELF5)
    carnet.store.add_patient(OTHER)
    return carnet


def test_valid_submission_is_accepted(known):
    assert submit(known, valid_submission()) == (C.RESPONSE_SUCCESS, [])


def test_XDSUnknownPatientId(carnet):
    assert_refused(carnet, valid_submission(), "XDSUnknownPatientId")


def test_XDSPatientIdDoesNotMatch(known):
    root = valid_submission()
    for ei in document(root).iter(RIM + "ExternalIdentifier"):
        if ei.get("identificationScheme") == C.DE_PATIENT_ID:
            ei.set("value", OTHER)
    assert_refused(known, root, "XDSPatientIdDoesNotMatch")


def test_XDSRegistryMetadataError(known):
    root = valid_submission()
    doc = document(root)
    for cl in doc.findall(RIM + "Classification"):
        if cl.get("classificationScheme") == C.DE_CLASS_CODE:
            doc.remove(cl)
    assert_refused(known, root, "XDSRegistryMetadataError")


def test_XDSRegistryDuplicateUniqueIdInMessage(known):
    uid = f"2.25.{uuid.uuid4().int}"
    assert_refused(known, valid_submission(doc_uid=uid, ss_uid=uid), "XDSRegistryDuplicateUniqueIdInMessage")


def test_XDSDuplicateUniqueIdInRegistry(known):
    ss_uid = f"2.25.{uuid.uuid4().int}"
    assert submit(known, valid_submission(ss_uid=ss_uid))[0] == C.RESPONSE_SUCCESS
    assert_refused(known, valid_submission(ss_uid=ss_uid), "XDSDuplicateUniqueIdInRegistry")


def test_same_document_resubmitted_with_same_hash_is_accepted(known):
    doc_uid = f"2.25.{uuid.uuid4().int}"
    assert submit(known, valid_submission(doc_uid=doc_uid))[0] == C.RESPONSE_SUCCESS
    assert submit(known, valid_submission(doc_uid=doc_uid)) == (C.RESPONSE_SUCCESS, [])
    assert len(known.store.documents_by_unique_id([doc_uid])[doc_uid]) == 2


def test_XDSNonIdenticalHash(known):
    doc_uid = f"2.25.{uuid.uuid4().int}"
    assert submit(known, valid_submission(doc_uid=doc_uid))[0] == C.RESPONSE_SUCCESS
    root = valid_submission(doc_uid=doc_uid)
    set_slot(document(root), "hash", "0" * 40)
    assert_refused(known, root, "XDSNonIdenticalHash")


def test_XDSNonIdenticalSize(known):
    doc_uid = f"2.25.{uuid.uuid4().int}"
    assert submit(known, valid_submission(doc_uid=doc_uid))[0] == C.RESPONSE_SUCCESS
    assert_refused(known, valid_submission(doc_uid=doc_uid, size="37"), "XDSNonIdenticalSize")


@pytest.mark.parametrize("relation", [C.ASSOC_APND, C.ASSOC_RPLC, C.ASSOC_XFRM, C.ASSOC_XFRM_RPLC],
                         ids=["APND", "RPLC", "XFRM", "XFRM_RPLC"])
def test_XDSRegistryDeprecatedDocumentError(known, relation):
    """ITI TF-2b §3.42.4.1.3.5: a relationship to a Deprecated DocumentEntry is refused."""
    original_uid = f"2.25.{uuid.uuid4().int}"
    assert submit(known, valid_submission(doc_uid=original_uid))[0] == C.RESPONSE_SUCCESS
    original = entry_uuid_of(known, original_uid)

    replacement = valid_submission()
    add_association(replacement, C.ASSOC_RPLC, "Document01", original)
    assert submit(known, replacement) == (C.RESPONSE_SUCCESS, [])

    related = valid_submission()
    add_association(related, relation, "Document01", original)
    assert_refused(known, related, "XDSRegistryDeprecatedDocumentError")


def test_UnresolvedReferenceException(known):
    root = valid_submission()
    add_association(root, C.ASSOC_RPLC, "Document01", f"urn:uuid:{uuid.uuid4()}")
    assert_refused(known, root, "UnresolvedReferenceException")


# --- ITI-18 ----------------------------------------------------------------------------------

def _query(carnet, query_id: str, slots: dict[str, list[str]], return_type: str = "LeafClass"):
    body = etree.Element(f"{{{C.NS_QUERY}}}AdhocQueryRequest", nsmap={"query": C.NS_QUERY, "rim": C.NS_RIM})
    etree.SubElement(body, f"{{{C.NS_QUERY}}}ResponseOption", returnType=return_type,
                     returnComposedObjects="true")
    q = etree.SubElement(body, RIM + "AdhocQuery", id=query_id)
    for name, values in slots.items():
        q.append(slot(name, *values))
    _, _, env = post_soap(carnet.registry_url, soap_envelope(etree.tostring(body), C.ACTION_ITI18))
    resp = soap_body(env)
    return resp.get("status"), [e.get("errorCode") for e in resp.iter(f"{{{C.NS_RS}}}RegistryError")], resp


FIND = {"$XDSDocumentEntryPatientId": [f"'{SELF5}'"], "$XDSDocumentEntryStatus": [f"('{C.STATUS_APPROVED}')"]}


def test_find_documents_valid(known):
    assert _query(known, C.SQ_FIND_DOCUMENTS, FIND)[:2] == (C.RESPONSE_SUCCESS, [])


def test_XDSUnknownStoredQuery(known):
    assert _query(known, f"urn:uuid:{uuid.uuid4()}", FIND)[1] == ["XDSUnknownStoredQuery"]


def test_XDSStoredQueryMissingParam(known):
    slots = {"$XDSDocumentEntryStatus": FIND["$XDSDocumentEntryStatus"]}
    assert _query(known, C.SQ_FIND_DOCUMENTS, slots)[1] == ["XDSStoredQueryMissingParam"]


def test_XDSStoredQueryParamNumber(known):
    slots = {"$XDSDocumentEntryEntryUUID": [f"('urn:uuid:{uuid.uuid4()}')"],
             "$XDSDocumentEntryUniqueId": ["('1.2.3')"]}
    assert _query(known, C.SQ_GET_DOCUMENTS, slots)[1] == ["XDSStoredQueryParamNumber"]


def test_XDSRegistryError_for_malformed_parameter(known):
    slots = dict(FIND, **{"$XDSDocumentEntryClassCode": ["('value^^')"]})
    assert _query(known, C.SQ_FIND_DOCUMENTS, slots)[1] == ["XDSRegistryError"]


def test_XDSResultNotSinglePatient(known):
    uids = []
    for pid in (SELF5, OTHER):
        root = valid_submission()
        for ei in root.iter(RIM + "ExternalIdentifier"):
            if ei.get("identificationScheme") in (C.DE_PATIENT_ID, C.SS_PATIENT_ID):
                ei.set("value", pid)
        uid = [ei.get("value") for ei in root.iter(RIM + "ExternalIdentifier")
               if ei.get("identificationScheme") == C.DE_UNIQUE_ID][0]
        assert submit(known, root)[0] == C.RESPONSE_SUCCESS
        uids.append(uid)
    slots = {"$XDSDocumentEntryUniqueId": ["(" + ",".join(f"'{u}'" for u in uids) + ")"]}
    assert _query(known, C.SQ_GET_DOCUMENTS, slots)[1] == ["XDSResultNotSinglePatient"]
    # ObjectRef answers may span patients (ITI TF-2a §3.18.4.1.3).
    assert _query(known, C.SQ_GET_DOCUMENTS, slots, "ObjectRef")[:2] == (C.RESPONSE_SUCCESS, [])


def test_XDSTooManyResults(engine, tmp_path):
    with running_carnet(engine, tmp_path, max_query_results=1) as carnet:
        carnet.store.add_patient(SELF5)
        for _ in range(2):
            assert submit(carnet, valid_submission())[0] == C.RESPONSE_SUCCESS
        assert _query(carnet, C.SQ_FIND_DOCUMENTS, FIND)[1] == ["XDSTooManyResults"]
        limited = _query(carnet, C.SQ_FIND_DOCUMENTS, FIND, "ObjectRef")
        assert limited[:2] == (C.RESPONSE_SUCCESS, [])  # ObjectRef answers have their own limit
