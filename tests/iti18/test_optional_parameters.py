"""Optional stored query parameters that filter FindSubmissionSets, FindFolders, GetDocuments,
GetFolders and FindDocumentsByReferenceId (ITI TF-2a §3.18.4.1.2.3.7), checked on the results,
on SQLite and PostgreSQL.

The NIST 12346 fixture (`iti18.fixtures`) is loaded for patients A and B; a few tests add
objects of their own (more folders, new versions, documents with several referenceIds, an
On-Demand entry) so every filter has both objects it keeps and objects it drops.

Submission sets of patient A (submissionTime, author, sourceId, contentType):
  SS1 20040102 ^Smith^John^^^Dr  SOURCE_ID        Initial evaluation
  SS2 20050102 ^Jones^Ann        SOURCE_ID        Follow-up
  SS3 20060102 ^Smith^Robert     OTHER_SOURCE_ID  Initial evaluation
  SS4 20070601 ^Smith^John^^^Dr  SOURCE_ID        Initial evaluation
  SS5 20070602 ^Smith^John^^^Dr  SOURCE_ID        Initial evaluation
Folders of patient A (lastUpdateTime, codeList): F1 20050102 [Referral], F2 20060102
[Referral, Cardio]; `more_folders` adds F3 20070101 [Cardio] and F4 20080101 [Emergency].
"""

from __future__ import annotations

import attrs
import pytest

from registry import constants as C
from registry.store.write import RegistrationPlan

from iti18.fixtures import (
    CS_CLASS,
    CS_CONTENT,
    CS_FOLDER,
    OTHER_SOURCE_ID,
    PATIENTS,
    SOURCE_ID,
    DocSpec,
    document_entry,
    folder,
    ident,
    load_nist_fixture,
    load_plans,
    uid,
)
from iti18.sq import assert_success, assert_valid, ids, ids_by_kind, names, q, ql, run

A = "A"
PID = q(PATIENTS[A])
APPROVED = ql(C.STATUS_APPROVED)
BOTH = ql(C.STATUS_APPROVED, C.STATUS_DEPRECATED)
ALL_SETS = ("SS1", "SS2", "SS3", "SS4", "SS5")


@pytest.fixture
def eng(engine):
    load_nist_fixture(engine, "A")
    load_nist_fixture(engine, "B")
    return engine


def N(*n: str) -> set[str]:
    return names(A, *n)


def _answer(eng, query_id, params) -> set[str]:
    resp = run(eng, query_id, params)
    assert_success(resp)
    assert_valid(resp)
    return ids(resp)


# --- FindSubmissionSets (ITI TF-2a §3.18.4.1.2.3.7.2) --------------------------------------


def find_sets(eng, *extra) -> set[str]:
    base = [("$XDSSubmissionSetPatientId", PID), ("$XDSSubmissionSetStatus", APPROVED)]
    return _answer(eng, C.SQ_FIND_SUBMISSION_SETS, base + list(extra))


def test_find_submission_sets_without_optional_parameters(eng):
    # The baseline the filters below narrow: every set of patient A, none of patient B.
    assert find_sets(eng) == N(*ALL_SETS)


@pytest.mark.parametrize(
    "value, expected",
    [
        (ql(SOURCE_ID), ("SS1", "SS2", "SS4", "SS5")),
        (ql(OTHER_SOURCE_ID), ("SS3",)),
        (ql(OTHER_SOURCE_ID, SOURCE_ID), ALL_SETS),  # values of one slot are ORed
        (ql("1.3.6.1.4.1.21367.4.1"), ()),  # exact match, no prefix match
    ],
)
def test_find_submission_sets_by_source_id(eng, value, expected):
    """$XDSSubmissionSetSourceId: a list of sourceIds, ORed (ITI TF-2a §3.18.4.1.2.3.7.2)."""
    assert find_sets(eng, ("$XDSSubmissionSetSourceId", value)) == N(*expected)


# submissionTime keys: SS1 20040102, SS2 20050102, SS3 20060102, SS4 20070601, SS5 20070602
@pytest.mark.parametrize(
    "frm, to, expected",
    [
        ("20050102", "20070601", ("SS2", "SS3")),  # From inclusive (SS2), To exclusive (SS4)
        ("20050102000001", None, ("SS3", "SS4", "SS5")),  # one second after SS2: SS2 out
        ("20070601", None, ("SS4", "SS5")),  # left edge included
        (None, "20050102", ("SS1",)),  # right edge excluded
        (None, "20050102000001", ("SS1", "SS2")),
        ("2006", "2007", ("SS3",)),  # short bounds are padded to their earliest instant
        ("20070602", "20070602", ()),  # From == To: empty
    ],
)
def test_find_submission_sets_by_submission_time(eng, frm, to, expected):
    """$XDSSubmissionSetSubmissionTimeFrom / To: From inclusive (>=), To exclusive (<)
    (ITI TF-2a §3.18.4.1.2.3.7.2, the time semantics of §3.18.4.1.2.3.7.1)."""
    extra = []
    if frm:
        extra.append(("$XDSSubmissionSetSubmissionTimeFrom", frm))
    if to:
        extra.append(("$XDSSubmissionSetSubmissionTimeTo", to))
    assert find_sets(eng, *extra) == N(*expected)


@pytest.mark.parametrize(
    "value, expected",
    [
        (ql("^Smith^%"), ("SS1", "SS3", "SS4", "SS5")),  # % wildcard
        (ql("^Smith^John%"), ("SS1", "SS4", "SS5")),
        (ql("%Robert"), ("SS3",)),  # leading wildcard
        (ql("^Sm_th^Robert"), ("SS3",)),  # _ matches one character
        (ql("^Jones^Ann"), ("SS2",)),  # exact value
        (ql("Smith"), ()),  # no implicit wildcard
        (ql("^Smith^John"), ()),  # the stored value is ^Smith^John^^^Dr: not a prefix match
    ],
)
def test_find_submission_sets_by_author_person(eng, value, expected):
    """$XDSSubmissionSetAuthorPerson: SQL LIKE wildcards % and _ (ITI TF-2a §3.18.4.1.2.3.7.2,
    as for $XDSDocumentEntryAuthorPerson in §3.18.4.1.2.3.7.1)."""
    assert find_sets(eng, ("$XDSSubmissionSetAuthorPerson", value)) == N(*expected)


@pytest.mark.parametrize(
    "value, expected",
    [
        (ql(f"Follow-up^^{CS_CONTENT}"), ("SS2",)),
        (ql(f"Initial evaluation^^{CS_CONTENT}"), ("SS1", "SS3", "SS4", "SS5")),
        (ql(f"Follow-up^^{CS_CONTENT}", f"Initial evaluation^^{CS_CONTENT}"), ALL_SETS),  # ORed
        (ql("Follow-up^^another scheme"), ()),  # the coding scheme must match too
        (ql(f"Discharge^^{CS_CONTENT}"), ()),
    ],
)
def test_find_submission_sets_by_content_type(eng, value, expected):
    """$XDSSubmissionSetContentType: code^^scheme values, ORed (ITI TF-2a §3.18.4.1.2.3.7.2,
    code syntax §3.18.4.1.2.3.5)."""
    assert find_sets(eng, ("$XDSSubmissionSetContentType", value)) == N(*expected)


def test_find_submission_sets_parameters_combine_with_and(eng):
    """Distinct parameters are ANDed (ITI TF-2a §3.18.4.1.2.3.7.2)."""
    assert find_sets(
        eng,
        ("$XDSSubmissionSetSourceId", ql(SOURCE_ID)),
        ("$XDSSubmissionSetAuthorPerson", ql("^Smith^%")),
        ("$XDSSubmissionSetSubmissionTimeFrom", "2005"),
    ) == N("SS4", "SS5")
    assert find_sets(
        eng,
        ("$XDSSubmissionSetSourceId", ql(OTHER_SOURCE_ID)),
        ("$XDSSubmissionSetContentType", ql(f"Follow-up^^{CS_CONTENT}")),
    ) == set()


# --- FindFolders (ITI TF-2a §3.18.4.1.2.3.7.3) ----------------------------------------------


@pytest.fixture
def more_folders(eng):
    load_plans(
        eng,
        [
            RegistrationPlan(
                folders=(folder(A, "F3", "20070101", ["Cardio"]), folder(A, "F4", "20080101", ["Emergency"]))
            )
        ],
    )
    return eng


def find_folders(eng, *extra) -> set[str]:
    base = [("$XDSFolderPatientId", PID), ("$XDSFolderStatus", APPROVED)]
    return _answer(eng, C.SQ_FIND_FOLDERS, base + list(extra))


def test_find_folders_without_optional_parameters(more_folders):
    assert find_folders(more_folders) == N("F1", "F2", "F3", "F4")


# lastUpdateTime keys: F1 20050102, F2 20060102, F3 20070101, F4 20080101
@pytest.mark.parametrize(
    "frm, to, expected",
    [
        ("20060102", None, ("F2", "F3", "F4")),  # From inclusive
        ("20060102000001", None, ("F3", "F4")),
        (None, "20060102", ("F1",)),  # To exclusive
        ("20050102", "20070101", ("F1", "F2")),
        ("2006", "2008", ("F2", "F3")),  # short bounds padded; F4 (2008-01-01) is on To
        ("20070101", "20070101", ()),
    ],
)
def test_find_folders_by_last_update_time(more_folders, frm, to, expected):
    """$XDSFolderLastUpdateTimeFrom / To: From inclusive, To exclusive (ITI TF-2a
    §3.18.4.1.2.3.7.3)."""
    extra = []
    if frm:
        extra.append(("$XDSFolderLastUpdateTimeFrom", frm))
    if to:
        extra.append(("$XDSFolderLastUpdateTimeTo", to))
    assert find_folders(more_folders, *extra) == N(*expected)


REFERRAL = f"Referral^^{CS_FOLDER}"
CARDIO = f"Cardio^^{CS_FOLDER}"
EMERGENCY = f"Emergency^^{CS_FOLDER}"


@pytest.mark.parametrize(
    "slots, expected",
    [
        ([ql(CARDIO)], ("F2", "F3")),
        ([ql(REFERRAL, CARDIO)], ("F1", "F2", "F3")),  # OR within one slot; F4 out
        ([ql(REFERRAL), ql(CARDIO)], ("F2",)),  # AND across slots: only F2 has both
        ([ql(REFERRAL, CARDIO), ql(CARDIO, EMERGENCY)], ("F2", "F3")),  # (R or C) and (C or E)
        ([ql(REFERRAL), ql(EMERGENCY)], ()),  # no folder has both
        ([ql("Cardio^^another scheme")], ()),  # the coding scheme must match too
    ],
)
def test_find_folders_by_code_list(more_folders, slots, expected):
    """$XDSFolderCodeList has AND/OR semantics: values in one slot are ORed, repeated slots
    ANDed (ITI TF-2a §3.18.4.1.2.3.7.3 and §3.18.4.1.2.3.5)."""
    extra = [("$XDSFolderCodeList", v) for v in slots]
    assert find_folders(more_folders, *extra) == N(*expected)


def test_find_folders_code_list_and_time_combine(more_folders):
    assert find_folders(
        more_folders, ("$XDSFolderCodeList", ql(REFERRAL, CARDIO)), ("$XDSFolderLastUpdateTimeFrom", "2006")
    ) == N("F2", "F3")


# --- GetDocuments / GetFolders by logicalID (ITI TF-2a §3.18.4.1.2.3.7.5, .6) ---------------


def _same_unique_id(obj, scheme: str, value: str):
    return attrs.evolve(
        obj,
        external_identifiers=tuple(
            attrs.evolve(e, value=value) if e.identification_scheme == scheme else e
            for e in obj.external_identifiers
        ),
    )


@pytest.fixture
def versions(eng):
    """A version 2 of D1 and of F1: new entryUUIDs, the lid and uniqueId of version 1."""
    d1v2 = attrs.evolve(document_entry(A, DocSpec("D1v2")), lid=ident(A, "D1"), version_name="2")
    d1v2 = _same_unique_id(d1v2, C.DE_UNIQUE_ID, uid(A, "D1"))
    f1v2 = attrs.evolve(folder(A, "F1v2", "20080101", ["Referral"]), lid=ident(A, "F1"), version_name="2")
    f1v2 = _same_unique_id(f1v2, C.FOLDER_UNIQUE_ID, uid(A, "F1"))
    load_plans(eng, [RegistrationPlan(documents=(d1v2,), folders=(f1v2,))])
    return eng


def test_get_documents_by_logical_id(versions):
    """$XDSDocumentEntryLogicalID selects entries by lid: every version of each logical
    document (ITI TF-2a §3.18.4.1.2.3.7.5, Metadata Update)."""
    get = lambda *lids: _answer(versions, C.SQ_GET_DOCUMENTS, [("$XDSDocumentEntryLogicalID", ql(*lids))])  # noqa: E731
    assert get(ident(A, "D1")) == N("D1", "D1v2")
    assert get(ident(A, "D1"), ident(A, "D3")) == N("D1", "D1v2", "D3")
    # D1v2's entryUUID is no entry's lid: the parameter is matched on lid, not on id
    assert get(ident(A, "D1v2")) == set()
    # by entryUUID the same value names the one version
    by_uuid = _answer(versions, C.SQ_GET_DOCUMENTS, [("$XDSDocumentEntryEntryUUID", ql(ident(A, "D1v2")))])
    assert by_uuid == N("D1v2")


def test_get_folders_by_logical_id(versions):
    """$XDSFolderLogicalID selects folders by lid, every version (ITI TF-2a
    §3.18.4.1.2.3.7.6, Metadata Update)."""
    get = lambda *lids: run(versions, C.SQ_GET_FOLDERS, [("$XDSFolderLogicalID", ql(*lids))])  # noqa: E731
    resp = get(ident(A, "F1"))
    assert_success(resp)
    assert_valid(resp)
    assert ids_by_kind(resp) == {"Folder": N("F1", "F1v2")}
    assert ids(get(ident(A, "F1"), ident(A, "F2"))) == N("F1", "F1v2", "F2")
    assert ids(get(ident(A, "F1v2"))) == set()


# --- FindDocumentsByReferenceId (ITI TF-2a §3.18.4.1.2.3.7.14) ------------------------------

REF = "ref-{}^^^&1.2.3&ISO^urn:ihe:iti:xds:2013:accession"
REF1, REF2, REF3 = REF.format(1), REF.format(2), REF.format(3)


@pytest.fixture
def refs(eng):
    """D1 has REF1 and D2 REF2 (fixture); R1 has REF1 and REF3, R2 REF3, OD (On-Demand) REF3,
    RD (Deprecated) REF1."""
    load_plans(
        eng,
        [
            RegistrationPlan(
                documents=(
                    document_entry(A, DocSpec("R1", refs=(REF1, REF3))),
                    document_entry(A, DocSpec("R2", refs=(REF3,), class_code="Consult")),
                    document_entry(A, DocSpec("OD", refs=(REF3,), on_demand=True)),
                    document_entry(A, DocSpec("RD", refs=(REF1,)), status=C.STATUS_DEPRECATED),
                )
            )
        ],
    )
    return eng


def find_by_ref(eng, *extra, status=BOTH) -> set[str]:
    base = [("$XDSDocumentEntryPatientId", PID), ("$XDSDocumentEntryStatus", status)]
    return _answer(eng, C.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID, base + list(extra))


@pytest.mark.parametrize(
    "slots, expected",
    [
        ([ql(REF1)], ("D1", "R1", "RD")),
        ([ql(REF3)], ("R1", "R2")),  # OD is On-Demand: left out when no $XDSDocumentEntryType
        ([ql(REF1, REF2)], ("D1", "D2", "R1", "RD")),  # OR within one slot
        ([ql(REF1), ql(REF3)], ("R1",)),  # AND across slots: only R1 has both
        ([ql(REF1, REF2), ql(REF3)], ("R1",)),  # (1 or 2) and 3
        ([ql(REF2), ql(REF3)], ()),
        ([ql("ref-1")], ()),  # exact match on the whole CXi value
    ],
)
def test_find_documents_by_reference_id_list(refs, slots, expected):
    """$XDSDocumentEntryReferenceIdList: values in one slot ORed, repeated slots ANDed
    (ITI TF-2a §3.18.4.1.2.3.7.14, AND/OR semantics of §3.18.4.1.2.3.5)."""
    extra = [("$XDSDocumentEntryReferenceIdList", v) for v in slots]
    assert find_by_ref(refs, *extra) == N(*expected)


def test_find_documents_by_reference_id_with_other_parameters(refs):
    # FindDocuments' parameters still apply (ITI TF-2a §3.18.4.1.2.3.7.14)
    assert find_by_ref(
        refs, ("$XDSDocumentEntryReferenceIdList", ql(REF3)), ("$XDSDocumentEntryClassCode", ql(f"Consult^^{CS_CLASS}"))
    ) == N("R2")
    assert find_by_ref(refs, ("$XDSDocumentEntryReferenceIdList", ql(REF1)), status=APPROVED) == N("D1", "R1")
    deprecated = ql(C.STATUS_DEPRECATED)
    assert find_by_ref(refs, ("$XDSDocumentEntryReferenceIdList", ql(REF1)), status=deprecated) == N("RD")


@pytest.mark.parametrize(
    "types, expected",
    [
        (None, ("R1", "R2")),  # default: stable entries only
        (ql(C.DOC_ENTRY_STABLE), ("R1", "R2")),
        (ql(C.DOC_ENTRY_ON_DEMAND), ("OD",)),
        (ql(C.DOC_ENTRY_STABLE, C.DOC_ENTRY_ON_DEMAND), ("R1", "R2", "OD")),
    ],
)
def test_document_entry_type(refs, types, expected):
    """$XDSDocumentEntryType selects Stable and/or On-Demand entries by objectType; absent,
    only Stable ones are returned (ITI TF-2a §3.18.4.1.2.3.6.2, §3.18.4.1.2.3.7.1 and .14)."""
    extra = [("$XDSDocumentEntryType", types)] if types else []
    assert find_by_ref(refs, ("$XDSDocumentEntryReferenceIdList", ql(REF3)), *extra) == N(*expected)
    # the same on FindDocuments (looking only at these three entries)
    find = [("$XDSDocumentEntryPatientId", PID), ("$XDSDocumentEntryStatus", BOTH), *extra]
    assert _answer(refs, C.SQ_FIND_DOCUMENTS, find) & N("R1", "R2", "OD") == N(*expected)
