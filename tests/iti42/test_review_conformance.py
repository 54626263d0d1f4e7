"""ITI-42 registry behaviour checked against the TF where a review found Carnet deviating
(ITI TF-3 §4.2.2.1.1, §4.2.3.2.23, §4.2.3.2.24, §4.2.3.2.26). Each test registers against a real store,
SQLite and PostgreSQL, and asserts the exact XDS error code and rule id."""

from __future__ import annotations

import attrs
import pytest
from lxml import etree
from sqlalchemy import select

from registry import constants as C
from registry import schema as S
from registry.errors import XdsErrorCode as E
from registry.errors import XdsFailure
from registry.fragments import unpack
from registry.iti42_register import register
from registry.model import LocalizedString, Slot
from registry.validate import ValidationConfig, validate_submission

from iti42.builders import (
    SS_ID,
    document,
    has_member,
    one_document,
    relationship,
    submission,
)


def fails(store, req, code: E, rule: str, **kw) -> XdsFailure:
    """The submission fails, every error has `code`, `rule` fired, and nothing is stored."""
    before = store.count_rows()
    with pytest.raises(XdsFailure) as info:
        register(req, store, **kw)
    errors = [e for e in info.value.errors if e.is_error]
    assert {e.code for e in errors} == {code}, errors
    assert rule in {e.rule for e in errors}, errors
    assert store.count_rows() == before
    return info.value


def with_slot(doc, name: str, *values: str):
    return attrs.evolve(doc, slots=(*(s for s in doc.slots if s.name != name), Slot(name, values)))


# --- DocumentEntry.uniqueId: up to 128 characters (ITI TF-3 §4.2.3.2.26) ---------------------
# "Max length is 128 characters"; for a CDA document it is root^extension with an OID of at most
# 64 characters and an extension of at most 16 — 81 characters, more than the 64 Carnet allowed.

ROOT_60 = "1.2.250.1.999." + "1" * 46  # a 60-character OID
assert len(ROOT_60) == 60


@pytest.mark.parametrize("uid", [
    ROOT_60 + "^" + "A" * 16,  # 77 characters: CDA root^extension at their maxima (almost)
    "1.2.250.1.999." + "2" * 50 + "^" + "ext-é-1",  # 64-character root, UTF-8 extension
], ids=["ascii-extension", "utf8-extension"])
def test_document_unique_id_longer_than_64_is_registered(store, uid):
    result = register(one_document(document(unique_id=uid)), store)
    assert result.document_unique_ids == (uid,)


@pytest.mark.parametrize("uid", [
    "1.2.250.1.999." + "3" * 51,  # a 65-character OID root
    ROOT_60 + "^" + "B" * 17,  # extension longer than 16
    ROOT_60 + "^",  # empty extension
], ids=["root-65", "extension-17", "extension-empty"])
def test_document_unique_id_limits_still_enforced(store, uid):
    fails(store, one_document(document(unique_id=uid)), E.XDSRegistryMetadataError, "DE.uniqueId.format")


# --- SubmissionSetStatus (ITI TF-3 §4.2.2.1.1) -----------------------------------------------
# Original: the DocumentEntry is submitted in this SubmissionSet; Reference: it was registered by
# an earlier submission. Both NIST's and IPF's validators refuse the other pairings.


def test_original_pointing_at_a_registered_entry_is_refused(store):
    old = register(one_document(document("Old")), store).entry_uuids["Old"]
    req = submission(has_member("hm-old", SS_ID, old, "Original"))
    fails(store, req, E.XDSRegistryMetadataError, "ASSOC.hasMember.original")


def test_reference_pointing_at_an_entry_of_the_submission_is_refused(store):
    doc = document()
    req = submission(doc, has_member("hm-doc", SS_ID, doc.id, "Reference"))
    fails(store, req, E.XDSRegistryMetadataError, "ASSOC.hasMember.reference")


def test_reference_to_a_registered_entry_is_still_accepted(store):
    old = register(one_document(document("Old")), store).entry_uuids["Old"]
    result = register(submission(has_member("hm-old", SS_ID, old, "Reference")), store)
    assert result.entry_uuids["hm-old"].startswith("urn:uuid:")


def test_submission_set_status_has_one_value(store):
    doc = document()
    hm = attrs.evolve(has_member("hm-doc", SS_ID, doc.id),
                      slots=(Slot(C.SLOT_SUBMISSION_SET_STATUS, ("Original", "Reference")),))
    fails(store, submission(doc, hm), E.XDSRegistryMetadataError, "ASSOC.hasMember.submissionSetStatus")


def test_status_pairing_rules_are_relaxable():
    doc = document()
    req = submission(doc, has_member("hm-doc", SS_ID, doc.id, "Reference"))
    (finding,) = validate_submission(req, ValidationConfig(relaxed={"ASSOC.hasMember.reference"}))
    assert (finding.rule, finding.is_error) == ("ASSOC.hasMember.reference", False)


# --- sourcePatientInfo: PID-x|value (ITI TF-3 §4.2.3.2.23) -----------------------------------


@pytest.mark.parametrize("value", ["DOE^JOHN", "PID-|x", "PID-0|x", "pid-5|DOE^JOHN", "PID-5 DOE^JOHN"])
def test_source_patient_info_not_a_pid_field_is_refused(store, value):
    doc = with_slot(document(), "sourcePatientInfo", "PID-3|IPP42^^^&1.2.250.1.999.2&ISO", value)
    fails(store, one_document(doc), E.XDSRegistryMetadataError, "DE.sourcePatientInfo.format")


def test_source_patient_info_pid_fields_are_accepted(store):
    doc = with_slot(document(), "sourcePatientInfo", "PID-3|IPP42^^^&1.2.250.1.999.2&ISO",
                    "PID-5|MARTIN^Claire^^^^^L", "PID-7|19800101", "PID-8|F", "PID-11|1 rue X^^Paris^^75001^FRA")
    register(one_document(doc), store)


# --- DocumentEntry.title: at most 128 characters (ITI TF-3 §4.2.3.2.24) -----------------------


def with_titles(doc, *titles: str):
    return attrs.evolve(doc, name=tuple(LocalizedString(t, lang) for t, lang in zip(titles, ("fr-FR", "en-US"))))


def test_title_of_128_characters_is_registered_and_returned(store):
    title = "Compte rendu opératoire — " + "é" * 102  # 128 characters, 230 UTF-8 bytes
    assert len(title) == 128
    result = register(one_document(with_titles(document(), title)), store)
    with store.engine.connect() as c:
        xml = c.execute(select(S.document_entry.c.xml)
                        .where(S.document_entry.c.id == result.entry_uuids["Document01"])).scalar_one()
    stored = etree.fromstring(unpack(xml)).xpath("rim:Name/rim:LocalizedString/@value", namespaces={"rim": C.NS_RIM})
    assert stored == [title]


@pytest.mark.parametrize("titles", [("T" * 129,), ("Titre court", "T" * 129)], ids=["one", "second-language"])
def test_title_longer_than_128_characters_is_refused(store, titles):
    failure = fails(store, one_document(with_titles(document(), *titles)), E.XDSRegistryMetadataError, "DE.title.length")
    assert any(e.location and "title" in e.location for e in failure.errors)


# --- IsSnapshotOf: a Stable entry snapshots an On-Demand one (ITI TF-3 §4.2.2.2) --------------


def on_demand(id: str = "OnDemand01"):
    doc = document(id)
    return attrs.evolve(doc, object_type=C.DOC_ENTRY_ON_DEMAND,
                        slots=tuple(s for s in doc.slots if s.name not in ("hash", "size")))


def registered(store, doc) -> str:
    return register(one_document(doc), store).entry_uuids[doc.id]


def test_snapshot_of_an_on_demand_entry_is_registered(store):
    target = registered(store, on_demand())
    result = register(relationship(C.ASSOC_IS_SNAPSHOT_OF, document("Snapshot"), target), store)
    assert result.entry_uuids["Snapshot"].startswith("urn:uuid:")


def test_snapshot_of_a_stable_entry_is_refused(store):
    target = registered(store, document("Stable01"))
    failure = fails(store, relationship(C.ASSOC_IS_SNAPSHOT_OF, document("Snapshot"), target),
                    E.XDSRegistryMetadataError, "iti42.relationship.snapshot")
    assert "On-Demand" in failure.errors[0].message


def test_an_on_demand_entry_is_no_snapshot(store):
    target = registered(store, on_demand())
    fails(store, relationship(C.ASSOC_IS_SNAPSHOT_OF, on_demand("OnDemand02"), target),
          E.XDSRegistryMetadataError, "iti42.relationship.snapshot")
