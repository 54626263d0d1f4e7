"""A golden test per stored query (ITI TF-2a §3.18.4.1.2.3.7) on the NIST 12346 fixture,
on SQLite and PostgreSQL; LeafClass answers are re-parsed and schema-checked."""

from __future__ import annotations

import pytest
from lxml import etree

from registry import constants as C
from registry import ebrim
from registry import model as M

from iti18.fixtures import PATIENTS, ident, load_nist_fixture, uid
from iti18.sq import (
    assert_success,
    assert_valid,
    error_codes,
    ids,
    ids_by_kind,
    names,
    objects,
    q,
    ql,
    run,
    status,
)

A = "A"
PID = PATIENTS[A]
APPROVED = ql(C.STATUS_APPROVED)
BOTH = ql(C.STATUS_APPROVED, C.STATUS_DEPRECATED)
ALL_DOCS = ("D1", "D2", "D3", "D4", "D5", "D6")
ALL_SETS = ("SS1", "SS2", "SS3", "SS4", "SS5")
ALL_ASSOCS = tuple(f"A{i}" for i in range(1, 16))


@pytest.fixture
def eng(engine):
    load_nist_fixture(engine, "A")
    load_nist_fixture(engine, "B")
    return engine


def N(*n: str) -> set[str]:
    return names(A, *n)


def test_find_documents_leafclass_approved(eng):
    resp = run(eng, C.SQ_FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", q(PID)), ("$XDSDocumentEntryStatus", APPROVED)])
    assert_success(resp)
    assert_valid(resp)
    assert ids_by_kind(resp) == {"ExtrinsicObject": N("D1", "D2", "D3", "D4", "D6")}
    # The objects are the stored ones: re-parse them into the model.
    parsed = [ebrim.element_to_object(o) for o in objects(resp)]
    assert all(isinstance(p, M.DocumentEntry) for p in parsed)
    assert {p.patient_id for p in parsed} == {PID}
    assert {p.unique_id for p in parsed} == {uid(A, n) for n in ("D1", "D2", "D3", "D4", "D6")}
    assert {p.status for p in parsed} == {C.STATUS_APPROVED}


def test_find_documents_with_deprecated_and_objectref(eng):
    params = [("$XDSDocumentEntryPatientId", q(PID)), ("$XDSDocumentEntryStatus", BOTH)]
    leaf = run(eng, C.SQ_FIND_DOCUMENTS, params)
    assert ids(leaf) == N(*ALL_DOCS)
    ref = run(eng, C.SQ_FIND_DOCUMENTS, params, "ObjectRef")
    assert_success(ref)
    assert_valid(ref)
    assert {etree.QName(o).localname for o in objects(ref)} == {"ObjectRef"}
    assert ids(ref) == N(*ALL_DOCS)


def test_find_documents_by_reference_id(eng):
    resp = run(
        eng,
        C.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID,
        [
            ("$XDSDocumentEntryPatientId", q(PID)),
            ("$XDSDocumentEntryStatus", APPROVED),
            ("$XDSDocumentEntryReferenceIdList", ql("ref-1^^^&1.2.3&ISO^urn:ihe:iti:xds:2013:accession")),
        ],
    )
    assert_success(resp)
    assert_valid(resp)
    assert ids(resp) == N("D1")


def test_find_submission_sets(eng):
    resp = run(eng, C.SQ_FIND_SUBMISSION_SETS, [("$XDSSubmissionSetPatientId", q(PID)), ("$XDSSubmissionSetStatus", APPROVED)])
    assert_success(resp)
    assert_valid(resp)
    assert ids_by_kind(resp) == {"SubmissionSet": N(*ALL_SETS)}
    parsed = [ebrim.element_to_object(o) for o in objects(resp)]
    assert all(isinstance(p, M.SubmissionSet) and p.patient_id == PID for p in parsed)


def test_find_folders(eng):
    resp = run(eng, C.SQ_FIND_FOLDERS, [("$XDSFolderPatientId", q(PID)), ("$XDSFolderStatus", APPROVED)])
    assert_success(resp)
    assert_valid(resp)
    assert ids_by_kind(resp) == {"Folder": N("F1", "F2")}


def test_get_all(eng):
    resp = run(
        eng,
        C.SQ_GET_ALL,
        [
            ("$patientId", q(PID)),
            ("$XDSDocumentEntryStatus", BOTH),
            ("$XDSSubmissionSetStatus", APPROVED),
            ("$XDSFolderStatus", APPROVED),
        ],
    )
    assert_success(resp)
    assert_valid(resp)
    # NIST 15803: 6 documents, 5 submission sets, 2 folders, 15 associations
    assert ids_by_kind(resp) == {
        "ExtrinsicObject": N(*ALL_DOCS),
        "SubmissionSet": N(*ALL_SETS),
        "Folder": N("F1", "F2"),
        "Association": N(*ALL_ASSOCS),
    }


def test_get_all_approved_only_drops_links_to_the_deprecated_entry(eng):
    resp = run(
        eng,
        C.SQ_GET_ALL,
        [
            ("$patientId", q(PID)),
            ("$XDSDocumentEntryStatus", APPROVED),
            ("$XDSSubmissionSetStatus", APPROVED),
            ("$XDSFolderStatus", APPROVED),
        ],
    )
    kinds = ids_by_kind(resp)
    assert kinds["ExtrinsicObject"] == N("D1", "D2", "D3", "D4", "D6")
    assert kinds["Association"] == N(*ALL_ASSOCS) - N("A13", "A15")


def test_get_documents_by_uuid_and_unique_id(eng):
    resp = run(eng, C.SQ_GET_DOCUMENTS, [("$XDSDocumentEntryEntryUUID", ql(ident(A, "D1"), ident(A, "D5")))])
    assert_success(resp)
    assert_valid(resp)
    assert ids(resp) == N("D1", "D5")  # no status filter: the deprecated entry too
    # CP 295: values spread over several rim:Value elements
    resp = run(eng, C.SQ_GET_DOCUMENTS, [("$XDSDocumentEntryUniqueId", [ql(uid(A, "D2")), ql(uid(A, "D3"))])])
    assert ids(resp) == N("D2", "D3")


def test_get_documents_only_returns_document_entries(eng):
    # NIST 12000.1a: ids of a SubmissionSet and a Folder give nothing
    resp = run(eng, C.SQ_GET_DOCUMENTS, [("$XDSDocumentEntryEntryUUID", ql(ident(A, "SS1"), ident(A, "F1"), ident(A, "D2")))])
    assert ids(resp) == N("D2")


def test_get_folders(eng):
    resp = run(eng, C.SQ_GET_FOLDERS, [("$XDSFolderEntryUUID", ql(ident(A, "F1")))])
    assert_success(resp)
    assert_valid(resp)
    assert ids_by_kind(resp) == {"Folder": N("F1")}
    resp = run(eng, C.SQ_GET_FOLDERS, [("$XDSFolderUniqueId", ql(uid(A, "F1"), uid(A, "F2")))])
    assert ids(resp) == N("F1", "F2")


def test_get_associations(eng):
    resp = run(eng, C.SQ_GET_ASSOCIATIONS, [("$uuid", ql(ident(A, "D2")))])
    assert_success(resp)
    assert_valid(resp)
    assert ids_by_kind(resp) == {"Association": N("A2", "A4")}
    resp = run(eng, C.SQ_GET_ASSOCIATIONS, [("$uuid", ql(ident(A, "D5"), ident(A, "D1")))])
    assert ids(resp) == N("A1", "A13", "A15")


def test_get_documents_and_associations(eng):
    resp = run(eng, C.SQ_GET_DOCUMENTS_AND_ASSOCIATIONS, [("$XDSDocumentEntryEntryUUID", ql(ident(A, "D1")))])
    assert_success(resp)
    assert_valid(resp)
    assert ids_by_kind(resp) == {"ExtrinsicObject": N("D1"), "Association": N("A1")}
    resp = run(eng, C.SQ_GET_DOCUMENTS_AND_ASSOCIATIONS, [("$XDSDocumentEntryUniqueId", ql(uid(A, "D3"), uid(A, "D4")))])
    assert ids_by_kind(resp) == {"ExtrinsicObject": N("D3", "D4"), "Association": N("A6", "A7", "A9", "A10")}


def test_get_submission_sets(eng):
    resp = run(eng, C.SQ_GET_SUBMISSION_SETS, [("$uuid", ql(ident(A, "D1")))])
    assert_success(resp)
    assert_valid(resp)
    assert ids_by_kind(resp) == {"SubmissionSet": N("SS1"), "Association": N("A1")}
    resp = run(eng, C.SQ_GET_SUBMISSION_SETS, [("$uuid", ql(ident(A, "D3"), ident(A, "D4")))])
    assert ids_by_kind(resp) == {"SubmissionSet": N("SS3"), "Association": N("A6", "A7")}
    resp = run(eng, C.SQ_GET_SUBMISSION_SETS, [("$uuid", ql(ident(A, "D1"), ident(A, "F1")))])
    assert ids_by_kind(resp) == {"SubmissionSet": N("SS1", "SS2"), "Association": N("A1", "A3")}


def test_get_submission_set_and_contents(eng):
    resp = run(eng, C.SQ_GET_SUBMISSION_SET_AND_CONTENTS, [("$XDSSubmissionSetEntryUUID", q(ident(A, "SS3")))])
    assert_success(resp)
    assert_valid(resp)
    assert ids_by_kind(resp) == {
        "SubmissionSet": N("SS3"),
        "ExtrinsicObject": N("D3", "D4"),
        "Folder": N("F2"),
        "Association": N("A6", "A7", "A8", "A9", "A10", "A11", "A12"),
    }
    by_uid = run(eng, C.SQ_GET_SUBMISSION_SET_AND_CONTENTS, [("$XDSSubmissionSetUniqueId", q(uid(A, "SS3")))])
    assert ids(by_uid) == ids(resp)


def test_get_submission_set_and_contents_filters(eng):
    resp = run(
        eng,
        C.SQ_GET_SUBMISSION_SET_AND_CONTENTS,
        [("$XDSSubmissionSetEntryUUID", q(ident(A, "SS3"))), ("$XDSDocumentEntryFormatCode", ql("XDS-SD^^Connect-a-thon formatCodes"))],
    )
    assert ids_by_kind(resp) == {
        "SubmissionSet": N("SS3"),
        "ExtrinsicObject": N("D4"),
        "Folder": N("F2"),
        "Association": N("A7", "A8", "A10", "A12"),
    }
    resp = run(
        eng,
        C.SQ_GET_SUBMISSION_SET_AND_CONTENTS,
        [("$XDSSubmissionSetEntryUUID", q(ident(A, "SS3"))), ("$XDSDocumentEntryConfidentialityCode", ql("R^^" + "2.16.840.1.113883.5.25"))],
    )
    assert ids_by_kind(resp)["ExtrinsicObject"] == N("D3")
    resp = run(eng, C.SQ_GET_SUBMISSION_SET_AND_CONTENTS, [("$XDSSubmissionSetEntryUUID", q(ident(A, "SS3")))], "ObjectRef")
    assert_valid(resp)
    assert len(ids(resp)) == 11


def test_get_submission_set_and_contents_unknown_is_empty(eng):
    resp = run(eng, C.SQ_GET_SUBMISSION_SET_AND_CONTENTS, [("$XDSSubmissionSetEntryUUID", q("urn:uuid:00000000-0000-0000-0000-000000000000"))])
    assert_success(resp)
    assert_valid(resp)
    assert ids(resp) == set()


def test_get_folder_and_contents(eng):
    resp = run(eng, C.SQ_GET_FOLDER_AND_CONTENTS, [("$XDSFolderEntryUUID", q(ident(A, "F2")))])
    assert_success(resp)
    assert_valid(resp)
    assert ids_by_kind(resp) == {"Folder": N("F2"), "ExtrinsicObject": N("D3", "D4"), "Association": N("A9", "A10")}
    resp = run(
        eng,
        C.SQ_GET_FOLDER_AND_CONTENTS,
        [("$XDSFolderUniqueId", q(uid(A, "F2"))), ("$XDSDocumentEntryConfidentialityCode", ql("V^^2.16.840.1.113883.5.25"))],
    )
    assert ids_by_kind(resp) == {"Folder": N("F2"), "ExtrinsicObject": N("D4"), "Association": N("A10")}


def test_get_folders_for_document(eng):
    resp = run(eng, C.SQ_GET_FOLDERS_FOR_DOCUMENT, [("$XDSDocumentEntryEntryUUID", q(ident(A, "D3")))])
    assert_success(resp)
    assert_valid(resp)
    assert ids_by_kind(resp) == {"Folder": N("F2")}
    resp = run(eng, C.SQ_GET_FOLDERS_FOR_DOCUMENT, [("$XDSDocumentEntryUniqueId", q(uid(A, "D1")))])
    assert ids(resp) == set()


def test_get_related_documents(eng):
    resp = run(
        eng,
        C.SQ_GET_RELATED_DOCUMENTS,
        [("$XDSDocumentEntryEntryUUID", q(ident(A, "D5"))), ("$AssociationTypes", ql(C.ASSOC_RPLC, C.ASSOC_APND))],
    )
    assert_success(resp)
    assert_valid(resp)
    assert ids_by_kind(resp) == {"ExtrinsicObject": N("D5", "D6"), "Association": N("A15")}
    # From the other end, by uniqueId
    resp = run(
        eng,
        C.SQ_GET_RELATED_DOCUMENTS,
        [("$XDSDocumentEntryUniqueId", q(uid(A, "D6"))), ("$AssociationTypes", ql(C.ASSOC_RPLC))],
    )
    assert ids(resp) == N("D5", "D6", "A15")
    # A document without relations, and a type it does not have: nothing (NIST 11909)
    for doc, types in (("D1", ql(C.ASSOC_RPLC)), ("D5", ql(C.ASSOC_APND))):
        resp = run(
            eng,
            C.SQ_GET_RELATED_DOCUMENTS,
            [("$XDSDocumentEntryEntryUUID", q(ident(A, doc))), ("$AssociationTypes", types)],
        )
        assert_success(resp)
        assert ids(resp) == set()


def test_home_community_id_is_echoed(eng):
    home = "urn:oid:1.2.3.4.5"
    params = [("$XDSDocumentEntryEntryUUID", ql(ident(A, "D1"))), ("$homeCommunityId", q(home))]
    leaf = run(eng, C.SQ_GET_DOCUMENTS, params)
    assert_valid(leaf)
    assert [o.get("home") for o in objects(leaf)] == [home]
    ref = run(eng, C.SQ_GET_DOCUMENTS, params, "ObjectRef")
    assert [o.get("home") for o in objects(ref)] == [home]


def test_patient_b_is_not_mixed_in(eng):
    resp = run(eng, C.SQ_FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", q(PATIENTS["B"])), ("$XDSDocumentEntryStatus", BOTH)])
    assert ids(resp) == names("B", *ALL_DOCS)
    assert status(resp) == C.RESPONSE_SUCCESS and error_codes(resp) == []
