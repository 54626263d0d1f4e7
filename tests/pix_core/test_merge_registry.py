"""A merge of two INS reaches the registry (ITI TF-2a §3.8.4.2.3), at the store level on SQLite
and PostgreSQL: documents registered through ITI-42's real code path for patient A are found by
an ITI-18 FindDocuments for B after A is merged into B, their XML carrying B; a new ITI-42 for A
is refused with XDSUnknownPatientId; dossier keys stay where they were."""

from __future__ import annotations

import pytest
from lxml import etree
from sqlalchemy import insert, select, update

from pix import ins
from pix.identities import SqlCrossReferences
from pix.ins import InsPolicy, with_key
from pix.xref import Demographics, Identifier, PatientRecord, UnknownIdentifier
from registry.fragments import unpack
from registry import constants as C
from registry import schema as S
from registry.errors import InfrastructureError, XdsErrorCode, XdsFailure
from registry.iti42_register import register
from registry.store import RegistryStore
from registry.store.merge import rewrite_patient_id

from iti18.sq import ids_by_kind, q, ql, run
from iti42.builders import document, folder, submission_set, with_folder, one_document

HOSP = "1.2.250.1.999.1.1"
POLICY = InsPolicy(frozenset({ins.INS_NIR_TEST}))
INS_A = Identifier(with_key("1850275123001"), ins.INS_NIR_TEST)
INS_B = Identifier(with_key("2910269045002"), ins.INS_NIR_TEST)
A, B = INS_A.xds_cx(), INS_B.xds_cx()
R = "{%s}" % C.NS_RIM
APPROVED = ql(C.STATUS_APPROVED)


def rec(*identifiers: Identifier) -> PatientRecord:
    return PatientRecord(identifiers, Demographics(family_name="MARTIN"), ("VALI",))


@pytest.fixture
def xref(engine):
    x = SqlCrossReferences(engine, [HOSP], POLICY)
    x.feed(rec(Identifier("IPP-A", HOSP), INS_A))
    x.feed(rec(Identifier("IPP-B", HOSP), INS_B))
    return x


def _submit_for_a(store: RegistryStore, xref) -> None:
    req = with_folder(
        document("DocA", patient=A), folder("FolA", patient=A), ss=submission_set("SSA", patient=A)
    )
    register(req, store, patients=xref)


def _as_in_xml(cx: str) -> bytes:
    """A CX as it appears in a stored fragment's attribute (& escaped)."""
    return cx.replace("&", "&amp;").encode()


def _patient_ids(el: etree._Element, scheme: str) -> list[str]:
    return [e.get("value") for e in el.iter(R + "ExternalIdentifier") if e.get("identificationScheme") == scheme]


def _find(engine, query_id, param, status_param, patient_id):
    return run(engine, query_id, [(param, q(patient_id)), (status_param, APPROVED)])


def test_registry_answers_the_subsumed_patients_objects_under_the_surviving_id(engine, xref):
    store = RegistryStore(engine)
    _submit_for_a(store, xref)
    with engine.begin() as c:  # a dossier key of A (the repository's, repository/keys.py)
        c.execute(insert(S.dossier_key).values(key_id="k-a", patient_id=A, wrapped_key=b"w", created_at="20260101000000"))
    found = _find(engine, C.SQ_FIND_DOCUMENTS, "$XDSDocumentEntryPatientId", "$XDSDocumentEntryStatus", A)
    assert len(ids_by_kind(found).get("ExtrinsicObject", ())) == 1

    change = xref.merge(rec(INS_B), INS_A)
    assert change.retired == (A,)

    docs = _find(engine, C.SQ_FIND_DOCUMENTS, "$XDSDocumentEntryPatientId", "$XDSDocumentEntryStatus", B)
    (entry,) = [o for o in docs.find(R + "RegistryObjectList")]
    assert _patient_ids(entry, C.DE_PATIENT_ID) == [B]
    sets = _find(engine, C.SQ_FIND_SUBMISSION_SETS, "$XDSSubmissionSetPatientId", "$XDSSubmissionSetStatus", B)
    (ss,) = [o for o in sets.find(R + "RegistryObjectList")]
    assert _patient_ids(ss, C.SS_PATIENT_ID) == [B]
    folders = _find(engine, C.SQ_FIND_FOLDERS, "$XDSFolderPatientId", "$XDSFolderStatus", B)
    (fol,) = [o for o in folders.find(R + "RegistryObjectList")]
    assert _patient_ids(fol, C.FOLDER_PATIENT_ID) == [B]
    # nothing is left under A, and no fragment anywhere still names A
    for query_id, param, status in (
        (C.SQ_FIND_DOCUMENTS, "$XDSDocumentEntryPatientId", "$XDSDocumentEntryStatus"),
        (C.SQ_FIND_SUBMISSION_SETS, "$XDSSubmissionSetPatientId", "$XDSSubmissionSetStatus"),
        (C.SQ_FIND_FOLDERS, "$XDSFolderPatientId", "$XDSFolderStatus"),
    ):
        assert ids_by_kind(_find(engine, query_id, param, status, A)) == {}
    with engine.connect() as c:
        for table in (S.document_entry, S.submission_set, S.folder):
            for xml in c.execute(select(table.c.xml)).scalars():
                assert _as_in_xml(A) not in unpack(xml)
        # the dossier key stays: A's blobs are encrypted under it and must stay readable
        assert c.execute(select(S.dossier_key.c.patient_id)).scalars().all() == [A]

    # ITI-42 for A is now refused (ITI TF-2a §3.8.4.2.3), through the store and through PIX
    for patients in (None, xref):
        with pytest.raises(XdsFailure) as info:
            register(one_document(document("DocA2", patient=A), ss=submission_set("SSA2", patient=A)),
                     store, patients=patients)
        assert [e.code for e in info.value.errors if e.is_error] == [XdsErrorCode.XDSUnknownPatientId]
    assert not store.is_known(A) and store.is_known(B)
    # and one for B is accepted
    register(one_document(document("DocB1", patient=B), ss=submission_set("SSB1", patient=B)), store, patients=xref)

    (history,) = xref.merge_history(INS_A)
    assert (history["surviving_authority"], history["surviving_value"]) == (INS_B.authority, INS_B.value)
    assert history["registry_merged"] == 1
    # A's local id now belongs to B's person
    assert set(xref.query(Identifier("IPP-A", HOSP))) == {INS_B, Identifier("IPP-B", HOSP)}


def test_a_merge_that_cannot_rewrite_the_registry_changes_nothing(engine, xref):
    store = RegistryStore(engine)
    _submit_for_a(store, xref)
    with engine.begin() as c:  # a corrupt stored fragment: the rewrite fails half-way
        c.execute(update(S.folder).values(xml=b"<not-ebrim"))
    before = store.count_rows()
    with pytest.raises(InfrastructureError):
        xref.merge(rec(INS_B), INS_A)
    assert store.count_rows() == before
    assert store.is_known(A)
    assert xref.query(INS_A) == (Identifier("IPP-A", HOSP),)
    assert xref.merge_history(INS_A) == []
    with engine.connect() as c:
        assert set(c.execute(select(S.document_entry.c.patient_id)).scalars()) == {A}


def test_a_merge_of_local_ids_leaves_the_registry_alone(engine, xref):
    store = RegistryStore(engine)
    _submit_for_a(store, xref)
    change = xref.merge(rec(Identifier("IPP-B", HOSP)), Identifier("IPP-A", HOSP))
    assert change.retired == ()
    assert store.is_known(A) and store.is_known(B)
    with pytest.raises(UnknownIdentifier):
        xref.query(Identifier("IPP-A", HOSP))
    with engine.connect() as c:
        assert set(c.execute(select(S.document_entry.c.patient_id)).scalars()) == {A}
    (history,) = xref.merge_history(Identifier("IPP-A", HOSP))
    assert history["registry_merged"] == 0


def test_rewrite_patient_id_matches_the_store_encoding(engine, xref):
    """The rewritten fragment is what the store would have written for the object with B."""
    store = RegistryStore(engine)
    _submit_for_a(store, xref)
    with engine.connect() as c:
        stored_a = unpack(c.execute(select(S.document_entry.c.xml)).scalar_one())
    xref.merge(rec(INS_B), INS_A)
    with engine.connect() as c:
        stored_b = unpack(c.execute(select(S.document_entry.c.xml)).scalar_one())
    assert stored_b == rewrite_patient_id(stored_a, C.DE_PATIENT_ID, B)
    assert stored_b == stored_a.replace(_as_in_xml(A), _as_in_xml(B))
    assert _as_in_xml(A) not in stored_b and _as_in_xml(A) in stored_a
