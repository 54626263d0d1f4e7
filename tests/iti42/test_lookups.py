"""ITI-42 asks the registry only what can matter, in one query on one connection
(issue: ITI-42 speed); the answers are those of the single look-ups."""

from __future__ import annotations

import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from registry import constants as C
from registry.errors import XdsFailure
from registry.iti42_register import new_entry_uuid, register
from registry.store import RegistrationPlan, RegistryStore
from registry.store.write import RegistrationLookups
from registry.uuid7 import uuid7_hex, uuid7_ints, uuid7_urns

from iti42.builders import PATIENT, document, has_member, one_document, relationship, submission, with_folder


class RecordingStore:
    """A store offering the combined look-up: records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[dict] = []
        self.plans: list[RegistrationPlan] = []

    def registration_lookups(self, **kw) -> RegistrationLookups:
        self.asked.append(kw)
        return RegistrationLookups(patient_known=kw.get("patient_id") == PATIENT)

    def commit(self, plan: RegistrationPlan) -> None:
        self.plans.append(plan)


def test_symbolic_ids_only_means_no_entry_uuid_look_up():
    store = RecordingStore()
    req = with_folder()
    register(req, store, now="20260101000000")
    (asked,) = store.asked
    assert asked["ids"] == []  # fresh entryUUIDs cannot be in the registry
    assert asked["patient_id"] == PATIENT
    assert asked["document_unique_ids"] == [req.documents[0].unique_id]
    assert asked["submission_set_unique_ids"] == [req.submission_sets[0].unique_id]
    assert asked["folder_unique_ids"] == [req.folders[0].unique_id]
    assert len(store.plans) == 1


def test_supplied_entry_uuids_and_outside_references_are_looked_up():
    store = RecordingStore()
    supplied = "urn:uuid:" + str(uuid.uuid4())
    target = "urn:uuid:" + str(uuid.uuid4())
    req = relationship(C.ASSOC_APND, document(supplied), target)
    with pytest.raises(XdsFailure):  # the target is not in this (empty) registry
        register(req, store)
    (asked,) = store.asked
    assert set(asked["ids"]) == {supplied, target}


def test_a_patient_port_other_than_the_store_is_asked_itself():
    class Patients:
        def __init__(self):
            self.asked = []

        def is_known(self, cx):
            self.asked.append(cx)
            return True

    store, patients = RecordingStore(), Patients()
    register(one_document(), store, patients=patients)
    assert patients.asked == [PATIENT] and store.asked[0]["patient_id"] is None


def test_registration_uses_one_connection_and_two_statements(engine):
    store = RegistryStore(engine)
    store.add_patient(PATIENT)
    checkouts, statements = [], []
    event.listen(engine.pool, "checkout", lambda *a: checkouts.append(1))
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    from registry.store import write

    direct = write._driver_execute

    def counted(c, sql, params, **kw):
        statements.append(sql)
        return direct(c, sql, params, **kw)

    write._driver_execute = counted
    try:
        register(one_document(), store)
    finally:
        write._driver_execute = direct
    assert len(checkouts) == 1
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1
    if engine.dialect.name == "postgresql":
        assert len(statements) == 2  # the look-up, then every row in one self-committing INSERT
    assert store.count_rows()["document_entry"] == 1


@settings(max_examples=50)
@given(st.integers(1, 40))
def test_fresh_entry_uuids_are_version_7_urns(n):
    urns = uuid7_urns(n) + [new_entry_uuid()]
    assert len(set(urns)) == n + 1
    for urn in urns:
        assert urn.startswith("urn:uuid:")
        u = uuid.UUID(urn[len("urn:uuid:"):])
        assert u.version == 7 and u.variant == uuid.RFC_4122 and str(u) == urn[len("urn:uuid:"):]
    u = uuid.UUID(hex=uuid7_hex())
    assert u.version == 7 and u.variant == uuid.RFC_4122


def test_fresh_entry_uuids_carry_the_time_and_sort_by_it():
    # RFC 9562 §5.7: the first 48 bits are the Unix time in ms; a later id sorts after, as text too.
    before = time.time_ns() // 1_000_000
    first = uuid7_ints(1)[0]
    after = time.time_ns() // 1_000_000
    assert before <= first >> 80 <= after
    time.sleep(0.002)
    later = new_entry_uuid()
    assert uuid.UUID(later[len("urn:uuid:"):]).int > first
    assert later > "urn:uuid:" + str(uuid.UUID(int=first))


def test_registered_entry_uuids_are_version_7():
    store = RecordingStore()
    result = register(submission(document("Doc1"), has_member("a1", "SubmissionSet01", "Doc1", "Original")), store)
    assert set(result.entry_uuids) == {"SubmissionSet01", "Doc1", "a1"}
    for urn in result.entry_uuids.values():
        assert uuid.UUID(urn[len("urn:uuid:"):]).version == 7


def test_submission_with_urn_uuid_member_is_still_checked():
    # has_member to an unknown urn:uuid: the look-up must include it (UnresolvedReference).
    store = RecordingStore()
    missing = "urn:uuid:" + str(uuid.uuid4())
    req = submission(document("Doc1"), has_member("a1", "SubmissionSet01", "Doc1", "Original"),
                     has_member("a2", "SubmissionSet01", missing, "Reference"))
    with pytest.raises(XdsFailure) as info:
        register(req, store)
    assert "UnresolvedReferenceException" in [e.code.value for e in info.value.errors]
    assert missing in store.asked[0]["ids"]
