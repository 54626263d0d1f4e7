"""ITI-42 Register Document Set-b against a real store, SQLite and PostgreSQL (ITI TF-2b §3.42.4.1.3)."""

from __future__ import annotations

import pytest
from lxml import etree
from sqlalchemy import select

from registry.fragments import unpack
from registry import constants as C
from registry.ebrim import parse_submit_objects_request
from registry.errors import XdsErrorCode as E
from registry.errors import XdsFailure
from registry.iti42_register import register
from registry import schema as S
from registry.store import RegistryStore
from registry.validate import ValidationConfig
from soap.xmlparse import parse_xml
from support import need_shared

from iti42.builders import (
    OTHER_PATIENT,
    PATIENT,
    association as assoc,
    document,
    folder as make_folder,
    has_member,
    one_document,
    relationship,
    sha1,
    submission,
    submission_set,
    with_folder,
)

SAMPLE_PATIENT = "SELF-5^^^&1.3.6.1.4.1.21367.2005.3.7&ISO"
NOW = "20260102030405"
LATER = "20260203040506"


def rows(store, table, *where):
    with store.engine.connect() as c:
        return c.execute(select(table).where(*where)).all()


def codes_of(exc: XdsFailure) -> list[E]:
    return [e.code for e in exc.errors if e.is_error]


def fails(store, req, *codes: E, **kw) -> XdsFailure:
    """The submission fails with exactly these error codes and stores nothing."""
    before = store.count_rows()
    with pytest.raises(XdsFailure) as info:
        register(req, store, **kw)
    assert sorted(codes_of(info.value)) == sorted(codes), info.value.errors
    assert store.count_rows() == before
    return info.value


def status_of(store, entry_id: str) -> tuple[str, bytes]:
    (row,) = rows(store, S.document_entry, S.document_entry.c.id == entry_id)
    return row.status, unpack(row.xml)


def xml_status(xml: bytes) -> str:
    return etree.fromstring(xml).get("status")


def xml_slot(xml: bytes, name: str) -> list[str]:
    """The values of slot `name` of a fragment, stored (packed) or not."""
    root = etree.fromstring(unpack(xml))
    ns = {"rim": C.NS_RIM}
    return root.xpath(f"rim:Slot[@name='{name}']/rim:ValueList/rim:Value/text()", namespaces=ns)


# --- the IHE sample ------------------------------------------------------------------------


def test_registers_the_ihe_sample(engine):
    path = need_shared("samples", "iti42", "ihe__RegisterDocumentSet-bRequest.xml")
    req = parse_submit_objects_request(parse_xml(path.read_bytes()))
    store = RegistryStore(engine)
    # The 2007 sample predates hash/size/repositoryUniqueId being required for ITI-42.
    config = ValidationConfig(relaxed={"DE.hash", "DE.size", "DE.repositoryUniqueId"})
    with pytest.raises(XdsFailure) as info:
        register(req, store, config=config)
    assert codes_of(info.value) == [E.XDSUnknownPatientId]

    store.add_patient(SAMPLE_PATIENT)
    result = register(req, store, config=config, now=NOW)

    assert {w.rule for w in result.warnings} >= {"DE.hash.required", "DE.size.required"}
    assert result.patient_id == SAMPLE_PATIENT
    assert result.submission_set_unique_id == "1.3.6.1.4.1.21367.2005.3.9999.33"
    ids = result.entry_uuids
    assert set(ids) == {"Document01", "SubmissionSet01", "as01"}
    assert all(v.startswith("urn:uuid:") for v in ids.values())

    (de,) = rows(store, S.document_entry)
    assert de.id == ids["Document01"] and de.lid == de.id and de.version == 1
    assert de.unique_id == "1.3.6.1.4.1.21367.2005.3.9999.32"
    assert de.patient_id == SAMPLE_PATIENT
    assert de.status == C.STATUS_APPROVED
    assert de.creation_time == "20051224000000"
    assert de.service_start_time == "20041223080000"
    assert de.submission_set_id == ids["SubmissionSet01"]
    stored = etree.fromstring(unpack(de.xml))
    assert stored.get("id") == de.id and stored.get("status") == C.STATUS_APPROVED
    # every nested object now has an entryUUID and points at the new id
    for el in stored.iter(f"{{{C.NS_RIM}}}Classification", f"{{{C.NS_RIM}}}ExternalIdentifier"):
        assert el.get("id").startswith("urn:uuid:")
        assert (el.get("classifiedObject") or el.get("registryObject")) == de.id

    assert {(r.scheme, r.code) for r in rows(store, S.document_code)} == {
        ("classCode", "History and Physical"),
        ("confidentialityCode", "1.3.6.1.4.1.21367.2006.7.101"),
        ("formatCode", "CDAR2/IHE 1.0"),
        ("healthcareFacilityTypeCode", "Outpatient"),
        ("practiceSettingCode", "General Medicine"),
        ("typeCode", "34108-1"),
    }
    (ss,) = rows(store, S.submission_set)
    assert (ss.id, ss.unique_id, ss.source_id, ss.submission_time) == (
        ids["SubmissionSet01"], "1.3.6.1.4.1.21367.2005.3.9999.33", "3670984664", "20041225235050")
    assert ss.content_type_code == "History and Physical"
    (a,) = rows(store, S.association)
    assert (a.association_type, a.source_id, a.target_id, a.submission_set_status) == (
        C.ASSOC_HAS_MEMBER, ids["SubmissionSet01"], ids["Document01"], "Original")


# --- patients ------------------------------------------------------------------------------


def test_unknown_patient(engine):
    store = RegistryStore(engine)
    fails(store, one_document(), E.XDSUnknownPatientId)


def test_patient_id_checked_against_the_submission_set(store):
    stranger = "9999999999999^^^&1.2.250.1.213.1.4.10&ISO"
    req = one_document(document(patient=PATIENT), ss=submission_set(patient=stranger))
    err = fails(store, req, E.XDSUnknownPatientId, E.XDSPatientIdDoesNotMatch)
    assert any(stranger in e.message for e in err.errors if e.code == E.XDSUnknownPatientId)


def test_document_of_another_patient_in_the_submission(store):
    fails(store, one_document(document(patient=OTHER_PATIENT)), E.XDSPatientIdDoesNotMatch)


def test_existing_document_of_another_patient_cannot_join_a_folder(store):
    # NIST 12002
    first = register(one_document(document(patient=OTHER_PATIENT),
                                  ss=submission_set(patient=OTHER_PATIENT)), store)
    other_doc = first.entry_uuids["Document01"]
    fol = make_folder()
    req = submission(
        fol,
        has_member("hm-ss-fol", "SubmissionSet01", fol.id),
        has_member("hm-fol-doc", fol.id, other_doc),
        has_member("hm-ss-foldoc", "SubmissionSet01", "hm-fol-doc"),
    )
    fails(store, req, E.XDSPatientIdDoesNotMatch)


# --- ids, status, lid ----------------------------------------------------------------------


def test_symbolic_ids_replaced_and_status_forced_to_approved(store):
    doc = document(status=C.STATUS_DEPRECATED)  # the source's status is ignored
    result = register(with_folder(doc), store, now=NOW)
    ids = result.entry_uuids
    assert len(set(ids.values())) == len(ids) == 7
    (a,) = rows(store, S.association, S.association.c.source_id == ids["Folder01"])
    assert a.target_id == ids["Document01"]
    (ss_to_assoc,) = rows(store, S.association, S.association.c.target_id == ids["hm-fol-doc"])
    assert ss_to_assoc.source_id == ids["SubmissionSet01"]
    status, xml = status_of(store, ids["Document01"])
    assert status == xml_status(xml) == C.STATUS_APPROVED
    for t in (S.folder, S.submission_set, S.association):
        assert {r.status for r in rows(store, t)} == {C.STATUS_APPROVED}


def test_supplied_uuid_kept_but_must_be_new(store):
    # NIST 15806
    uid = "urn:uuid:5b0ac0c6-6a3f-4a41-a8a3-1c1f5c4f0a01"
    first = register(one_document(document(uid)), store)
    assert first.entry_uuids[uid] == uid
    assert rows(store, S.document_entry, S.document_entry.c.id == uid)
    again = one_document(document(uid))
    fails(store, again, E.XDSRegistryMetadataError)


def test_submission_set_home_kept(store):
    home = "urn:oid:1.2.250.1.999.77"
    result = register(one_document(ss=submission_set(home=home)), store)
    (ss,) = rows(store, S.submission_set, S.submission_set.c.id == result.submission_set_id)
    assert ss.home == home and etree.fromstring(unpack(ss.xml)).get("home") == home


# --- uniqueIds against the registry ---------------------------------------------------------


def test_resubmission_with_same_hash_is_accepted(store):
    uid = "1.2.250.1.999.3.42"
    register(one_document(document(unique_id=uid, content=b"abc")), store)
    register(one_document(document(unique_id=uid, content=b"abc")), store)
    assert len(rows(store, S.document_entry, S.document_entry.c.unique_id == uid)) == 2


def test_resubmission_with_other_hash_is_non_identical_hash(store):
    uid = "1.2.250.1.999.3.43"
    register(one_document(document(unique_id=uid, content=b"abc")), store)
    fails(store, one_document(document(unique_id=uid, content=b"abd")), E.XDSNonIdenticalHash)


def test_resubmission_with_other_size_is_non_identical_size(store):
    uid = "1.2.250.1.999.3.44"
    register(one_document(document(unique_id=uid, content=b"abc")), store)
    req = one_document(document(unique_id=uid, hash=sha1(b"abc"), size="4"))
    fails(store, req, E.XDSNonIdenticalSize)


def test_duplicate_submission_set_unique_id(store):
    register(one_document(ss=submission_set(unique_id="1.2.250.1.999.5.900")), store)
    fails(store, one_document(ss=submission_set(unique_id="1.2.250.1.999.5.900")),
          E.XDSDuplicateUniqueIdInRegistry)


def test_duplicate_folder_unique_id(store):
    register(with_folder(fol=make_folder(unique_id="1.2.250.1.999.6.900")), store)
    fails(store, with_folder(fol=make_folder(unique_id="1.2.250.1.999.6.900")),
          E.XDSDuplicateUniqueIdInRegistry)


def test_every_error_is_reported_and_nothing_stored(store):
    uid = "1.2.250.1.999.3.45"
    register(one_document(document(unique_id=uid, content=b"abc"),
                          ss=submission_set(unique_id="1.2.250.1.999.5.901")), store)
    req = one_document(
        document(unique_id=uid, content=b"xyz"),
        ss=submission_set(unique_id="1.2.250.1.999.5.901"),
    )
    fails(store, req, E.XDSNonIdenticalHash, E.XDSDuplicateUniqueIdInRegistry)


# --- folders -------------------------------------------------------------------------------


def test_folder_last_update_time_set_by_the_registry(store):
    # NIST 12323: the source's lastUpdateTime is overwritten
    req = with_folder(fol=make_folder(last_update_time="19990101"))
    result = register(req, store, now=NOW)
    (f,) = rows(store, S.folder, S.folder.c.id == result.entry_uuids["Folder01"])
    assert f.last_update_time == NOW
    assert xml_slot(f.xml, "lastUpdateTime") == [NOW]


def test_adding_an_existing_document_to_an_existing_folder(store):
    first = register(with_folder(), store, now=NOW)
    fol_id = first.entry_uuids["Folder01"]
    second = register(one_document(document("Doc2")), store, now=NOW)
    doc2 = second.entry_uuids["Doc2"]
    req = submission(
        has_member("hm-fol-doc2", fol_id, doc2),
        has_member("hm-ss-assoc", "SubmissionSet01", "hm-fol-doc2"),
    )
    third = register(req, store, now=LATER)
    members = {r.target_id for r in rows(store, S.association, S.association.c.source_id == fol_id)}
    assert members == {first.entry_uuids["Document01"], doc2}
    (f,) = rows(store, S.folder, S.folder.c.id == fol_id)
    assert f.last_update_time == LATER and xml_slot(f.xml, "lastUpdateTime") == [LATER]
    assert third.entry_uuids["hm-fol-doc2"].startswith("urn:uuid:")


def test_unknown_existing_folder_is_unresolved(store):
    doc = register(one_document(), store).entry_uuids["Document01"]
    missing = "urn:uuid:00000000-0000-4000-8000-000000000001"
    req = submission(
        has_member("hm-fol-doc", missing, doc),
        has_member("hm-ss-assoc", "SubmissionSet01", "hm-fol-doc"),
    )
    fails(store, req, E.UnresolvedReferenceException)


# --- document relationships ----------------------------------------------------------------


def _original_in_folder_with_addendum(store):
    first = register(with_folder(document("Orig", content=b"v1")), store, now=NOW)
    orig = first.entry_uuids["Orig"]
    fol = first.entry_uuids["Folder01"]
    apnd = register(relationship(C.ASSOC_APND, document("Addendum"), orig), store, now=NOW)
    return orig, fol, apnd.entry_uuids["Addendum"]


def test_replace_deprecates_original_and_its_addendum_and_joins_its_folder(store):
    # ITI TF-2b §3.42.4.1.3.5; NIST 12022 (APND/XFRM children), NIST 12327 (folders)
    orig, fol, addendum = _original_in_folder_with_addendum(store)
    result = register(relationship(C.ASSOC_RPLC, document("Repl", content=b"v2"), orig), store, now=LATER)
    repl = result.entry_uuids["Repl"]

    for entry in (orig, addendum):
        status, xml = status_of(store, entry)
        assert status == xml_status(xml) == C.STATUS_DEPRECATED
    status, xml = status_of(store, repl)
    assert status == xml_status(xml) == C.STATUS_APPROVED
    assert set(result.deprecated) == {orig, addendum}

    members = rows(store, S.association, S.association.c.source_id == fol,
                   S.association.c.association_type == C.ASSOC_HAS_MEMBER)
    assert {m.target_id for m in members} == {orig, repl}
    (new_member,) = [m for m in members if m.target_id == repl]
    assert new_member.status == C.STATUS_APPROVED
    # the registry-made folder membership is itself a member of the submission set
    (ss_link,) = rows(store, S.association, S.association.c.target_id == new_member.id)
    assert ss_link.source_id == result.submission_set_id
    (f,) = rows(store, S.folder, S.folder.c.id == fol)
    assert f.last_update_time == LATER and xml_slot(f.xml, "lastUpdateTime") == [LATER]


def test_xfrm_rplc_also_deprecates(store):
    orig = register(one_document(document("Orig")), store).entry_uuids["Orig"]
    register(relationship(C.ASSOC_XFRM_RPLC, document("T"), orig), store)
    assert status_of(store, orig)[0] == C.STATUS_DEPRECATED


@pytest.mark.parametrize("child_relation", [C.ASSOC_APND, C.ASSOC_XFRM], ids=["APND", "XFRM"])
def test_replace_deprecates_the_originals_addenda_and_transforms(store, child_relation):
    """ITI TF-2b §3.42.4.1.3.5 (NIST 12022): replacing a document deprecates it and the Approved
    documents that append to it or transform it."""
    orig = register(one_document(document("Orig")), store).entry_uuids["Orig"]
    child = register(relationship(child_relation, document("Child"), orig), store).entry_uuids["Child"]
    result = register(relationship(C.ASSOC_RPLC, document("Repl"), orig), store)
    assert set(result.deprecated) == {orig, child}
    for entry in (orig, child):
        status, xml = status_of(store, entry)
        assert status == xml_status(xml) == C.STATUS_DEPRECATED


def test_append_keeps_original_approved(store):
    orig = register(one_document(document("Orig")), store).entry_uuids["Orig"]
    register(relationship(C.ASSOC_APND, document("A"), orig), store)
    register(relationship(C.ASSOC_XFRM, document("X"), orig), store)
    assert status_of(store, orig)[0] == C.STATUS_APPROVED


def test_append_to_a_deprecated_document(store):
    orig = register(one_document(document("Orig")), store).entry_uuids["Orig"]
    register(relationship(C.ASSOC_RPLC, document("Repl"), orig), store)
    fails(store, relationship(C.ASSOC_APND, document("Late"), orig), E.XDSRegistryDeprecatedDocumentError)
    fails(store, relationship(C.ASSOC_RPLC, document("Late2"), orig), E.XDSRegistryDeprecatedDocumentError)


def test_replace_of_another_patients_document(store):
    # NIST 11998
    other = register(one_document(document("O", patient=OTHER_PATIENT),
                                  ss=submission_set(patient=OTHER_PATIENT)), store).entry_uuids["O"]
    fails(store, relationship(C.ASSOC_RPLC, document("Repl"), other), E.XDSPatientIdDoesNotMatch)
    assert status_of(store, other)[0] == C.STATUS_APPROVED


def test_replace_of_a_document_not_in_the_registry(store):
    missing = "urn:uuid:00000000-0000-4000-8000-000000000002"
    fails(store, relationship(C.ASSOC_RPLC, document("Repl"), missing), E.UnresolvedReferenceException)


def test_replacement_already_in_the_folder_gets_no_second_membership(store):
    first = register(with_folder(document("Orig")), store)
    orig, fol = first.entry_uuids["Orig"], first.entry_uuids["Folder01"]
    extra = (
        has_member("hm-fol-repl", fol, "Repl"),
        has_member("hm-ss-folrepl", "SubmissionSet01", "hm-fol-repl"),
    )
    result = register(relationship(C.ASSOC_RPLC, document("Repl"), orig, extra=extra), store)
    members = rows(store, S.association, S.association.c.source_id == fol,
                   S.association.c.target_id == result.entry_uuids["Repl"])
    assert len(members) == 1


def test_signs_may_target_the_submission_set(store):
    sig = document("Sig")
    req = submission(
        sig,
        has_member("hm-sig", "SubmissionSet01", sig.id, "Original"),
        assoc("signs", C.ASSOC_SIGNS, sig.id, "SubmissionSet01"),
    )
    result = register(req, store)
    (a,) = rows(store, S.association, S.association.c.association_type == C.ASSOC_SIGNS)
    assert (a.source_id, a.target_id) == (result.entry_uuids["Sig"], result.submission_set_id)
