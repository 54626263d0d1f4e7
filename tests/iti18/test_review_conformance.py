"""Conformance review of ITI-18 against ITI TF-2a §3.18.4.1.2.3 (parameters, returns, errors):
the cases the other ITI-18 tests did not pin down, on SQLite and PostgreSQL.

- $XDSDocumentEntryType defaults to Stable entries in every query that takes it, GetRelatedDocuments
  included (§3.18.4.1.2.3.6.2), and a filtered-out entry takes its Associations with it in
  GetAll, GetSubmissionSetAndContents and GetFolderAndContents.
- $XDSSubmissionSetAuthorPerson is single-valued (Table 3.18.4.1.2.3.7.2-1: O, not M):
  several values are XDSStoredQueryParamNumber (ITI TF-3 Table 4.2.4.1-2).

On-Demand fixture (patient A, added to the NIST 12346 one): SS6 submits OD (On-Demand) and SN
(its Stable snapshot, SN IsSnapshotOf OD) and puts both into the existing folder F1:
  A20 SS6→OD, A21 SS6→SN (HasMember), A22 SN IsSnapshotOf OD,
  A23 F1→OD, A24 SS6→A23, A25 F1→SN, A26 SS6→A25.
"""

from __future__ import annotations

import pytest

from registry import constants as C
from registry.store.write import RegistrationPlan

from iti18.fixtures import (
    HM,
    PATIENTS,
    DocSpec,
    assoc,
    document_entry,
    ident,
    load_nist_fixture,
    load_plans,
    submission_set,
)
from iti18.sq import assert_success, assert_valid, error_codes, ids, ids_by_kind, names, q, ql, run, status

A = "A"
PID = q(PATIENTS[A])
APPROVED = ql(C.STATUS_APPROVED)
BOTH_TYPES = ql(C.DOC_ENTRY_STABLE, C.DOC_ENTRY_ON_DEMAND)
ON_DEMAND_PART = ("OD", "A20", "A22", "A23", "A24")


def N(*n: str) -> set[str]:
    return names(A, *n)


@pytest.fixture
def eng(engine):
    load_nist_fixture(engine, A)
    I = lambda n: ident(A, n)  # noqa: E731
    load_plans(
        engine,
        [
            RegistrationPlan(
                submission_set=submission_set(A, "SS6", "20080101", "^Smith^John^^^Dr"),
                documents=(document_entry(A, DocSpec("OD", on_demand=True)), document_entry(A, DocSpec("SN"))),
                associations=(
                    assoc(A, "A20", HM, I("SS6"), I("OD")),
                    assoc(A, "A21", HM, I("SS6"), I("SN")),
                    assoc(A, "A22", C.ASSOC_IS_SNAPSHOT_OF, I("SN"), I("OD"), original=None),
                    assoc(A, "A23", HM, I("F1"), I("OD"), original=None),
                    assoc(A, "A24", HM, I("SS6"), I("A23"), original=None),
                    assoc(A, "A25", HM, I("F1"), I("SN"), original=None),
                    assoc(A, "A26", HM, I("SS6"), I("A25"), original=None),
                ),
            )
        ],
    )
    return engine


def answer(eng, query_id, params, return_type="LeafClass") -> set[str]:
    resp = run(eng, query_id, params, return_type)
    assert_success(resp)
    assert_valid(resp)
    return ids(resp)


# --- $XDSDocumentEntryType (ITI TF-2a §3.18.4.1.2.3.6.2) -------------------------------------


def related(eng, doc: str, *extra) -> set[str]:
    params = [("$XDSDocumentEntryEntryUUID", q(ident(A, doc))), ("$AssociationTypes", ql(C.ASSOC_IS_SNAPSHOT_OF))]
    return answer(eng, C.SQ_GET_RELATED_DOCUMENTS, params + list(extra))


def test_get_related_documents_defaults_to_stable_entries(eng):
    """GetRelatedDocuments takes $XDSDocumentEntryType (Table 3.18.4.1.2.3.7.13-1), and "if no
    value is specified for DocumentEntryType, the value requesting only Stable Document Entries
    shall be assumed" (§3.18.4.1.2.3.6.2): the On-Demand entry at the other end of SN's
    IsSnapshotOf is left out, with its Association, unless asked for."""
    assert related(eng, "SN") == set()  # nothing related is left: nothing (NIST 11909)
    assert related(eng, "SN", ("$XDSDocumentEntryType", ql(C.DOC_ENTRY_STABLE))) == set()
    assert related(eng, "SN", ("$XDSDocumentEntryType", BOTH_TYPES)) == N("SN", "OD", "A22")
    assert related(eng, "SN", ("$XDSDocumentEntryType", ql(C.DOC_ENTRY_ON_DEMAND))) == N("SN", "OD", "A22")
    # The entry named by the query is returned whatever its type (it is asked for by id, as
    # GetDocuments returns any type); its Stable snapshot is related to it.
    assert related(eng, "OD") == N("OD", "SN", "A22")
    assert related(eng, "OD", ("$XDSDocumentEntryType", ql(C.DOC_ENTRY_ON_DEMAND))) == set()


def test_get_all_defaults_to_stable_entries_and_drops_their_associations(eng):
    params = [
        ("$patientId", PID),
        ("$XDSDocumentEntryStatus", APPROVED),
        ("$XDSSubmissionSetStatus", APPROVED),
        ("$XDSFolderStatus", APPROVED),
    ]
    everything = answer(eng, C.SQ_GET_ALL, params + [("$XDSDocumentEntryType", BOTH_TYPES)])
    assert N(*ON_DEMAND_PART, "SN", "A21", "A25", "A26") <= everything
    assert answer(eng, C.SQ_GET_ALL, params) == everything - N(*ON_DEMAND_PART)
    on_demand = answer(eng, C.SQ_GET_ALL, params + [("$XDSDocumentEntryType", ql(C.DOC_ENTRY_ON_DEMAND))])
    assert N("OD", "A20", "A23", "A24") <= on_demand
    assert not on_demand & N("SN", "D1", "A21", "A22", "A25")


def test_get_submission_set_and_contents_defaults_to_stable_entries(eng):
    params = [("$XDSSubmissionSetEntryUUID", q(ident(A, "SS6")))]
    resp = run(eng, C.SQ_GET_SUBMISSION_SET_AND_CONTENTS, params)
    assert_success(resp)
    # The folder F1 is not a member of SS6; the Folder→SN membership A25 is, with A26.
    assert ids_by_kind(resp) == {
        "SubmissionSet": N("SS6"),
        "ExtrinsicObject": N("SN"),
        "Association": N("A21", "A25", "A26"),
    }
    both = answer(eng, C.SQ_GET_SUBMISSION_SET_AND_CONTENTS, params + [("$XDSDocumentEntryType", BOTH_TYPES)])
    assert both == N("SS6", "SN", "OD", "A20", "A21", "A23", "A24", "A25", "A26")
    refs = answer(eng, C.SQ_GET_SUBMISSION_SET_AND_CONTENTS, params, "ObjectRef")
    assert refs == ids(resp)


def test_get_folder_and_contents_defaults_to_stable_entries(eng):
    params = [("$XDSFolderEntryUUID", q(ident(A, "F1")))]
    assert answer(eng, C.SQ_GET_FOLDER_AND_CONTENTS, params) == N("F1", "D2", "A4", "SN", "A25")
    both = answer(eng, C.SQ_GET_FOLDER_AND_CONTENTS, params + [("$XDSDocumentEntryType", BOTH_TYPES)])
    assert both == N("F1", "D2", "A4", "SN", "A25", "OD", "A23")


def test_get_documents_and_by_id_queries_return_every_type(eng):
    """GetDocuments, GetDocumentsAndAssociations, GetFoldersForDocument take no
    $XDSDocumentEntryType (§3.18.4.1.2.3.7.5, .8, .12): an entry named by id is returned."""
    assert answer(eng, C.SQ_GET_DOCUMENTS, [("$XDSDocumentEntryEntryUUID", ql(ident(A, "OD")))]) == N("OD")
    assert answer(
        eng, C.SQ_GET_DOCUMENTS_AND_ASSOCIATIONS, [("$XDSDocumentEntryEntryUUID", ql(ident(A, "OD")))]
    ) == N("OD", "A20", "A22", "A23")
    assert answer(eng, C.SQ_GET_FOLDERS_FOR_DOCUMENT, [("$XDSDocumentEntryEntryUUID", q(ident(A, "OD")))]) == N("F1")


# --- parameter multiplicity (ITI TF-2a §3.18.4.1.2.3.7, ITI TF-3 Table 4.2.4.1-2) -----------


def find_sets(eng, author_values):
    params = [("$XDSSubmissionSetPatientId", PID), ("$XDSSubmissionSetStatus", APPROVED)]
    return run(eng, C.SQ_FIND_SUBMISSION_SETS, params + [("$XDSSubmissionSetAuthorPerson", author_values)])


def test_submission_set_author_person_takes_one_value(eng):
    """Table 3.18.4.1.2.3.7.2-1 gives $XDSSubmissionSetAuthorPerson a single value (unlike
    $XDSDocumentEntryAuthorPerson): several are XDSStoredQueryParamNumber ("a parameter which only
    accepts a single value is coded with multiple values", ITI TF-3 Table 4.2.4.1-2)."""
    resp = find_sets(eng, ql("^Smith^%", "^Jones^Ann"))
    assert status(resp) == C.RESPONSE_FAILURE
    assert_valid(resp)
    assert error_codes(resp) == ["XDSStoredQueryParamNumber"]
    resp = find_sets(eng, [ql("^Smith^%"), ql("^Jones^Ann")])  # spread over two rim:Value (CP 295)
    assert error_codes(resp) == ["XDSStoredQueryParamNumber"]
    # one value, quoted alone or as a one-element list
    for value in (q("^Jones^Ann"), ql("^Jones^Ann")):
        resp = find_sets(eng, value)
        assert_success(resp)
        assert ids(resp) == N("SS2")


def test_document_entry_author_person_takes_several_values(eng):
    """$XDSDocumentEntryAuthorPerson is multi-valued, ORed (Table 3.18.4.1.2.3.7.1-1)."""
    params = [
        ("$XDSDocumentEntryPatientId", PID),
        ("$XDSDocumentEntryStatus", APPROVED),
        ("$XDSDocumentEntryAuthorPerson", ql("^Jones^Ann", "^O'Brien^Pat")),
    ]
    assert answer(eng, C.SQ_FIND_DOCUMENTS, params) == N("D2", "D4")
