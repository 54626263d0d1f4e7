"""Every FindDocuments parameter (ITI TF-2a §3.18.4.1.2.3.7.1) on the NIST 12346 fixture:
time ranges (From inclusive, To exclusive), OR within a slot and AND across slots for codes,
author LIKE, type default, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from registry import constants as C

from iti18.fixtures import CS_CLASS, CS_CONF, CS_EVENT, CS_FORMAT, CS_HCFT, CS_PRACTICE, CS_TYPE, PATIENTS, DocSpec, document_entry, load_nist_fixture, load_plans
from iti18.sq import assert_success, ids, names, q, ql, run
from registry.store.write import RegistrationPlan

A = "A"
BASE = [("$XDSDocumentEntryPatientId", q(PATIENTS[A])), ("$XDSDocumentEntryStatus", ql(C.STATUS_APPROVED, C.STATUS_DEPRECATED))]


@pytest.fixture
def eng(engine):
    load_nist_fixture(engine, "A")
    load_nist_fixture(engine, "B")
    return engine


def find(eng, *extra):
    resp = run(eng, C.SQ_FIND_DOCUMENTS, BASE + list(extra))
    assert_success(resp)
    return ids(resp)


def N(*n):
    return names(A, *n)


@pytest.mark.parametrize(
    "param, value, expected",
    [
        ("$XDSDocumentEntryClassCode", ql(f"Consult^^{CS_CLASS}"), ("D2", "D4")),
        ("$XDSDocumentEntryClassCode", ql(f"Consult^^{CS_CLASS}", f"History and Physical^^{CS_CLASS}"), ("D2", "D3", "D4")),
        ("$XDSDocumentEntryClassCode", ql("Consult^^another scheme"), ()),  # scheme must match too
        ("$XDSDocumentEntryTypeCode", ql(f"18842-5^^{CS_TYPE}", f"11506-3^^{CS_TYPE}"), ("D2", "D3")),
        ("$XDSDocumentEntryPracticeSettingCode", ql(f"Dialysis^^{CS_PRACTICE}"), ("D2", "D3")),
        ("$XDSDocumentEntryHealthcareFacilityTypeCode", ql(f"Emergency^^{CS_HCFT}"), ("D4",)),
        ("$XDSDocumentEntryFormatCode", ql(f"PDF/IHE 1.0^^{CS_FORMAT}", f"XDS-SD^^{CS_FORMAT}"), ("D2", "D4")),
        ("$XDSDocumentEntryEventCodeList", ql(f"Colonoscopy^^{CS_EVENT}"), ("D1", "D2")),
        ("$XDSDocumentEntryEventCodeList", ql(f"Colonoscopy^^{CS_EVENT}", f"Appendectomy^^{CS_EVENT}"), ("D1", "D2", "D3")),
        ("$XDSDocumentEntryConfidentialityCode", ql(f"R^^{CS_CONF}"), ("D2", "D3")),
        ("$XDSDocumentEntryAuthorPerson", ql("^Smith^%"), ("D1", "D3", "D5", "D6")),
        ("$XDSDocumentEntryAuthorPerson", ql("^Doe^Jane", "^Jones^Ann"), ("D1", "D2")),
        ("$XDSDocumentEntryAuthorPerson", ql("^Sm_th^Robert"), ("D3",)),
        ("$XDSDocumentEntryAuthorPerson", ql("^o'brien%"), ("D4",)),  # sent as '^o''brien%'; case-insensitive
        ("$XDSDocumentEntryAuthorPerson", ql("Smith"), ()),  # no implicit wildcard
        ("$XDSDocumentEntryStatus", ql(C.STATUS_DEPRECATED), ("D5",)),
        ("$XDSDocumentEntryStatus", ql("urn:example:NotAStatus", C.STATUS_DEPRECATED), ("D5",)),  # unknown ignored
    ],
)
def test_code_author_status_parameters(eng, param, value, expected):
    params = [p for p in BASE if p[0] != param] + [(param, value)]
    resp = run(eng, C.SQ_FIND_DOCUMENTS, params)
    assert_success(resp)
    assert ids(resp) == N(*expected)


def test_event_codes_and_across_slots(eng):
    # ITI TF-2a §3.18.4.1.2.3.5: (Colonoscopy) AND (Appendectomy) → only D2 has both
    both = find(
        eng,
        ("$XDSDocumentEntryEventCodeList", ql(f"Colonoscopy^^{CS_EVENT}")),
        ("$XDSDocumentEntryEventCodeList", ql(f"Appendectomy^^{CS_EVENT}")),
    )
    assert both == N("D2")
    # (Colonoscopy OR Appendectomy) AND (Appendectomy)
    assert find(
        eng,
        ("$XDSDocumentEntryEventCodeList", ql(f"Colonoscopy^^{CS_EVENT}", f"Appendectomy^^{CS_EVENT}")),
        ("$XDSDocumentEntryEventCodeList", ql(f"Appendectomy^^{CS_EVENT}")),
    ) == N("D2", "D3")


def test_confidentiality_codes_and_across_slots(eng):
    assert find(
        eng,
        ("$XDSDocumentEntryConfidentialityCode", ql(f"N^^{CS_CONF}")),
        ("$XDSDocumentEntryConfidentialityCode", ql(f"R^^{CS_CONF}")),
    ) == N("D2")


def test_parameters_combine_with_and(eng):
    assert find(
        eng,
        ("$XDSDocumentEntryClassCode", ql(f"Consult^^{CS_CLASS}")),
        ("$XDSDocumentEntryHealthcareFacilityTypeCode", ql(f"Inpatient^^{CS_HCFT}")),
    ) == N("D2")


# creationTime keys: D1 20040101, D2 20050101, D3 20051231235959, D4 2006(→20060101000000),
# D5 20070601, D6 20070602
@pytest.mark.parametrize(
    "frm, to, expected",
    [
        ("20050101", "20060101", ("D2", "D3")),  # From inclusive, To exclusive (D4 = 2006-01-01)
        ("20050101000001", None, ("D3", "D4", "D5", "D6")),  # just after D2: D2 out
        (None, "20050101", ("D1",)),  # right edge excluded
        (None, "2006", ("D1", "D2", "D3")),  # a short bound is padded to its earliest instant
        ("2006", "200601010000", ()),
        ("20051231235959", "20051231235959", ()),  # From == To: empty
        ("20051231235959", "20060101", ("D3",)),
    ],
)
def test_creation_time_range(eng, frm, to, expected):
    extra = []
    if frm:
        extra.append(("$XDSDocumentEntryCreationTimeFrom", frm))
    if to:
        extra.append(("$XDSDocumentEntryCreationTimeTo", to))
    assert find(eng, *extra) == N(*expected)


def test_service_times(eng):
    # serviceStartTime: D1 200412230800, D2 200501010800, D3 20051231
    assert find(eng, ("$XDSDocumentEntryServiceStartTimeFrom", "200412230800"), ("$XDSDocumentEntryServiceStartTimeTo", "200501010800")) == N("D1")
    assert find(eng, ("$XDSDocumentEntryServiceStartTimeFrom", "2005")) == N("D2", "D3")
    # serviceStopTime: D1 200412230801, D2 200501010900, D3 20060101
    assert find(eng, ("$XDSDocumentEntryServiceStopTimeTo", "20060101")) == N("D1", "D2")
    assert find(eng, ("$XDSDocumentEntryServiceStopTimeFrom", "20060101")) == N("D3")
    # Entries without the attribute never match a bound on it
    assert not find(eng, ("$XDSDocumentEntryServiceStopTimeFrom", "1900")) & N("D4", "D5", "D6")


def test_quoted_time_is_accepted(eng):
    assert find(eng, ("$XDSDocumentEntryCreationTimeFrom", "'2007'")) == N("D5", "D6")


def test_document_entry_type_defaults_to_stable(engine):
    load_nist_fixture(engine, "A")
    od = document_entry("A", DocSpec("OD1", on_demand=True))
    load_plans(engine, [RegistrationPlan(documents=(od,))])
    assert find(engine) == N("D1", "D2", "D3", "D4", "D5", "D6")
    assert find(engine, ("$XDSDocumentEntryType", ql(C.DOC_ENTRY_ON_DEMAND))) == N("OD1")
    assert find(engine, ("$XDSDocumentEntryType", ql(C.DOC_ENTRY_STABLE, C.DOC_ENTRY_ON_DEMAND))) == N(
        "D1", "D2", "D3", "D4", "D5", "D6", "OD1"
    )
