"""Stored query parameter errors with their exact codes (ITI TF-2a §3.18.4.1.3, ITI TF-3
Table 4.2.4.1-2), the NIST validator's negative requests, and the response limits."""

from __future__ import annotations

import pytest
from lxml import etree

from registry import constants as C
from registry.ebrim import parse_adhoc_query_request
from registry.iti18_stored_query import StoredQueryConfig, audit_details, execute, stored_query
from registry.ports import TransactionContext
from registry.store.read import ResultRow

from iti18.fixtures import PATIENTS, ident, load_nist_fixture
from iti18.sq import CONTEXT, assert_success, assert_valid, error_codes, ids, names, q, ql, request_xml, run, run_bytes, status
from support import need_shared

PID = q(PATIENTS["A"])
APPROVED = ql(C.STATUS_APPROVED)


class NoStore:
    """A reader that must not be reached: parameter errors are found before any SQL."""

    def stored_query(self, query, *, limit=None):
        raise AssertionError("the store was queried")


class AllowAll:
    def filter(self, context, rows):
        return rows


def answer(query_id, params, return_type="LeafClass"):
    body = request_xml(query_id, params, return_type)
    req = parse_adhoc_query_request(etree.fromstring(body))
    resp = etree.fromstring(stored_query(req, NoStore(), policy=AllowAll(), context=CONTEXT))
    assert status(resp) == C.RESPONSE_FAILURE
    assert_valid(resp)
    return error_codes(resp)


@pytest.mark.parametrize(
    "query_id, params, code",
    [
        ("urn:uuid:00000000-0000-0000-0000-000000000000", [], "XDSUnknownStoredQuery"),
        (C.SQ_FIND_DOCUMENTS, [("$XDSDocumentEntryStatus", APPROVED)], "XDSStoredQueryMissingParam"),
        (C.SQ_FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", PID)], "XDSStoredQueryMissingParam"),
        (C.SQ_GET_DOCUMENTS, [], "XDSStoredQueryMissingParam"),
        (C.SQ_GET_DOCUMENTS, [("$XDSDocumentEntryEntryUUID", ql("urn:uuid:a")), ("$XDSDocumentEntryUniqueId", ql("1.2"))], "XDSStoredQueryParamNumber"),
        (C.SQ_GET_SUBMISSION_SET_AND_CONTENTS, [("$XDSSubmissionSetEntryUUID", q("urn:uuid:a")), ("$XDSSubmissionSetUniqueId", q("1.2"))], "XDSStoredQueryParamNumber"),
        (C.SQ_GET_SUBMISSION_SET_AND_CONTENTS, [("$XDSSubmissionSetEntryUUID", ql("urn:uuid:a", "urn:uuid:b"))], "XDSStoredQueryParamNumber"),
        (C.SQ_FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", PID), ("$XDSDocumentEntryPatientId", PID), ("$XDSDocumentEntryStatus", APPROVED)], "XDSStoredQueryParamNumber"),
        (C.SQ_FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", PID), ("$XDSDocumentEntryStatus", APPROVED), ("$XDSDocumentEntryClassCode", ql("a^^b")), ("$XDSDocumentEntryClassCode", ql("c^^d"))], "XDSStoredQueryParamNumber"),
        (C.SQ_FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", PID), ("$XDSDocumentEntryStatus", APPROVED), ("$XDSDocumentEntryCreationTimeFrom", ["2004", "2005"])], "XDSStoredQueryParamNumber"),
        (C.SQ_GET_RELATED_DOCUMENTS, [("$XDSDocumentEntryEntryUUID", q("urn:uuid:a"))], "XDSStoredQueryMissingParam"),
        (C.SQ_GET_ALL, [("$patientId", PID), ("$XDSDocumentEntryStatus", APPROVED), ("$XDSFolderStatus", APPROVED)], "XDSStoredQueryMissingParam"),
        # value syntax → XDSRegistryError
        (C.SQ_FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", PATIENTS["A"]), ("$XDSDocumentEntryStatus", APPROVED)], "XDSRegistryError"),
        (C.SQ_FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", PID), ("$XDSDocumentEntryStatus", C.STATUS_APPROVED)], "XDSRegistryError"),
        (C.SQ_FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", PID), ("$XDSDocumentEntryStatus", f"({C.STATUS_APPROVED})")], "XDSRegistryError"),
        (C.SQ_FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", PID), ("$XDSDocumentEntryStatus", APPROVED), ("$XDSDocumentEntryClassCode", ql("value^^"))], "XDSRegistryError"),
        (C.SQ_FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", PID), ("$XDSDocumentEntryStatus", APPROVED), ("$XDSDocumentEntryClassCode", ql("^^scheme"))], "XDSRegistryError"),
        # the old two-parameter code syntax (NIST 11897 old_scheme): a code without ^^scheme
        (C.SQ_FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", PID), ("$XDSDocumentEntryStatus", APPROVED), ("$XDSDocumentEntryClassCode", ql("Communication")), ("$XDSDocumentEntryClassCodeScheme", ql("Connect-a-thon classCodes"))], "XDSRegistryError"),
        (C.SQ_FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", PID), ("$XDSDocumentEntryStatus", APPROVED), ("$XDSDocumentEntryCreationTimeFrom", "2004-01-01")], "XDSRegistryError"),
        (C.SQ_FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", PID), ("$XDSDocumentEntryStatus", APPROVED), ("$XDSDocumentEntryCreationTimeFrom", "200413")], "XDSRegistryError"),
        (C.SQ_FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", PID), ("$XDSDocumentEntryStatus", "()")], "XDSRegistryError"),
        (C.SQ_FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", "'unterminated"), ("$XDSDocumentEntryStatus", APPROVED)], "XDSRegistryError"),
        (C.SQ_FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", PID), ("$XDSDocumentEntryStatus", APPROVED), ("$MetadataLevel", "3")], "XDSRegistryError"),
    ],
)
def test_parameter_errors(query_id, params, code):
    assert code in answer(query_id, params)


def test_all_errors_are_reported():
    codes = answer(C.SQ_FIND_DOCUMENTS, [("$XDSDocumentEntryClassCode", ql("x"))])
    assert sorted(codes) == ["XDSRegistryError", "XDSStoredQueryMissingParam", "XDSStoredQueryMissingParam"]


def test_bad_return_type():
    assert answer(C.SQ_GET_DOCUMENTS, [("$XDSDocumentEntryEntryUUID", ql("urn:uuid:a"))], "LeafClassWithRepositoryItem") == ["XDSRegistryError"]


@pytest.mark.parametrize(
    "sample, code",
    [
        ("nist-validator__sq-req-bad-code.xml", "XDSRegistryError"),
        ("nist-validator__sq-req-bad-pid-format.xml", "XDSRegistryError"),
        ("nist-validator__sq-req-bad-stat-format1.xml", "XDSRegistryError"),
        ("nist-validator__sq-req-bad-stat-format2.xml", "XDSRegistryError"),
        ("nist-validator__sq-req-missing-stat.xml", "XDSStoredQueryMissingParam"),
        ("ipf__iti18request.xml", "XDSRegistryError"),  # unterminated '…'' patientId (SQL injection probe)
    ],
)
def test_nist_negative_samples(sample, code):
    body = need_shared("samples", "iti18", sample).read_bytes()
    req = parse_adhoc_query_request(etree.fromstring(body))
    out = execute(req, NoStore(), policy=AllowAll(), context=CONTEXT)
    resp = etree.fromstring(out.body)
    assert status(resp) == C.RESPONSE_FAILURE
    assert error_codes(resp) == [code]
    assert [e.code.value for e in out.errors] == [code]
    assert_valid(resp)


def test_nist_positive_sample(engine):
    load_nist_fixture(engine, "A")
    body = need_shared("samples", "iti18", "nist-validator__sq-req.xml").read_bytes()
    out = run_bytes(engine, body)
    resp = etree.fromstring(out.body)
    assert_success(resp)
    assert_valid(resp)
    assert ids(resp) == set()  # class code value^^scheme matches nothing
    assert out.query_id == C.SQ_FIND_DOCUMENTS and out.patient_ids == (PATIENTS["A"],)


def test_unknown_parameters_are_ignored(engine):
    # ebRS 3.0 §6.3.2.1
    load_nist_fixture(engine, "A")
    resp = run(engine, C.SQ_GET_DOCUMENTS, [("$XDSDocumentEntryEntryUUID", ql(ident("A", "D1"))), ("$XDSDocumentEntryStatus", APPROVED), ("$Whatever", "garbage(")])
    assert_success(resp)
    assert ids(resp) == names("A", "D1")


def test_too_many_results(engine):
    load_nist_fixture(engine, "A")
    params = [("$XDSDocumentEntryPatientId", PID), ("$XDSDocumentEntryStatus", ql(C.STATUS_APPROVED, C.STATUS_DEPRECATED))]
    body = request_xml(C.SQ_FIND_DOCUMENTS, params)
    resp = etree.fromstring(run_bytes(engine, body, config=StoredQueryConfig(max_results=5)).body)
    assert error_codes(resp) == ["XDSTooManyResults"]
    assert_valid(resp)
    resp = etree.fromstring(run_bytes(engine, body, config=StoredQueryConfig(max_results=6)).body)
    assert len(ids(resp)) == 6
    # ObjectRef has its own limit
    ref = request_xml(C.SQ_FIND_DOCUMENTS, params, "ObjectRef")
    resp = etree.fromstring(run_bytes(engine, ref, config=StoredQueryConfig(max_results=1, max_object_refs=6)).body)
    assert_success(resp)
    # a multi-step query counts every object: GetAll returns 28
    getall = request_xml(C.SQ_GET_ALL, [("$patientId", PID), ("$XDSDocumentEntryStatus", APPROVED), ("$XDSSubmissionSetStatus", APPROVED), ("$XDSFolderStatus", APPROVED)])
    resp = etree.fromstring(run_bytes(engine, getall, config=StoredQueryConfig(max_results=20)).body)
    assert error_codes(resp) == ["XDSTooManyResults"]


@pytest.mark.parametrize(
    "query_id, params",
    [
        (C.SQ_GET_DOCUMENTS, [("$XDSDocumentEntryEntryUUID", ql(ident("A", "D1"), ident("B", "D1")))]),
        (C.SQ_GET_FOLDERS, [("$XDSFolderEntryUUID", ql(ident("A", "F1"), ident("B", "F1")))]),
        (C.SQ_GET_SUBMISSION_SETS, [("$uuid", ql(ident("A", "D1"), ident("B", "D1")))]),
        (C.SQ_GET_DOCUMENTS_AND_ASSOCIATIONS, [("$XDSDocumentEntryEntryUUID", ql(ident("A", "D1"), ident("B", "D1")))]),
    ],
)
def test_result_not_single_patient(engine, query_id, params):
    # NIST 12368: LeafClass fails, ObjectRef succeeds
    load_nist_fixture(engine, "A")
    load_nist_fixture(engine, "B")
    resp = run(engine, query_id, params)
    assert error_codes(resp) == ["XDSResultNotSinglePatient"]
    assert_valid(resp)
    resp = run(engine, query_id, params, "ObjectRef")
    assert_success(resp)
    assert len(ids(resp)) >= 2


def test_access_policy_filters_every_result(engine):
    load_nist_fixture(engine, "A")
    seen = []

    class HideD1:
        def filter(self, context, rows):
            seen.append((context, list(rows)))
            return [r for r in rows if r.id != ident("A", "D1")]

    resp = run(engine, C.SQ_FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", PID), ("$XDSDocumentEntryStatus", APPROVED)], policy=HideD1())
    assert ids(resp) == names("A", "D2", "D3", "D4", "D6")
    (context, rows), = seen
    assert context == CONTEXT
    assert all(isinstance(r, ResultRow) and r.kind == "DocumentEntry" and r.patient_id == PATIENTS["A"] for r in rows)
    assert all(r.xml.startswith(b"<rim:ExtrinsicObject") for r in rows)


def test_store_failure_is_a_registry_error(engine):
    load_nist_fixture(engine, "A")
    engine.dispose()
    from sqlalchemy import text

    with engine.begin() as c:
        c.execute(text("DROP TABLE document_entry"))
    resp = run(engine, C.SQ_FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", PID), ("$XDSDocumentEntryStatus", APPROVED)])
    assert error_codes(resp) == ["XDSRegistryError"]
    assert_valid(resp)


def test_audit_details():
    req = parse_adhoc_query_request(etree.fromstring(request_xml(C.SQ_GET_ALL, [("$patientId", PID), ("$XDSDocumentEntryPatientId", "garbage")])))
    assert audit_details(req) == (C.SQ_GET_ALL, (PATIENTS["A"],))
