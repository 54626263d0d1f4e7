"""Property: whatever symbolic ids a source uses, the registry stores only entryUUIDs, and every
reference follows its object (ITI TF-3 §4.1.12.1). Runs the pure handler against an in-memory
fake of the store's ITI-42 interface (no database)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from registry.ebrim import object_to_element
from registry.iti42_register import register
from registry.store import RegistrationPlan

from iti42.builders import PATIENT, document, folder, has_member, submission, submission_set

# The registry assigns time-ordered version 7 UUIDs (registry.uuid7).
UUID_RE = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
REF_ATTRS = ("id", "classifiedObject", "registryObject", "sourceObject", "targetObject", "lid")


class EmptyRegistryFake:
    """The store's ITI-42 interface over an empty registry that knows PATIENT; keeps the plan."""

    def __init__(self) -> None:
        self.plans: list[RegistrationPlan] = []

    def is_known(self, cx: str) -> bool:
        return cx == PATIENT

    def objects_by_id(self, ids):
        return {}

    def documents_by_unique_id(self, uids):
        return {}

    def existing_submission_set_unique_ids(self, uids):
        return set()

    def existing_folder_unique_ids(self, uids):
        return set()

    def folders_containing(self, ids):
        return {}

    def approved_children(self, ids):
        return {}

    def commit(self, plan: RegistrationPlan) -> None:
        self.plans.append(plan)


symbolic = st.from_regex(r"[A-Za-z][A-Za-z0-9_.]{0,15}", fullmatch=True)


@settings(max_examples=60)
@given(st.lists(symbolic, min_size=7, max_size=7, unique=True))
def test_only_entry_uuids_are_stored(names):
    ss_id, doc_id, fol_id, a1, a2, a3, a4 = names
    ss = submission_set(ss_id)
    req = submission(
        document(doc_id),
        folder(fol_id),
        has_member(a1, ss_id, doc_id, "Original"),
        has_member(a2, ss_id, fol_id),
        has_member(a3, fol_id, doc_id),
        has_member(a4, ss_id, a3),
        ss=ss,
    )
    fake = EmptyRegistryFake()
    result = register(req, fake, now="20260101000000")
    (plan,) = fake.plans
    ids = result.entry_uuids
    assert set(ids) == set(names)
    assert len(set(ids.values())) == len(names)

    objects = (plan.submission_set, *plan.documents, *plan.folders, *plan.associations)
    seen_ids = set()
    for obj in objects:
        root = object_to_element(obj)
        for el in root.iter():
            for attr in REF_ATTRS:
                value = el.get(attr)
                if value is not None:
                    assert UUID_RE.match(value), (attr, value)
            if el.get("id"):
                assert el.get("id") not in seen_ids  # nested ids are fresh too
                seen_ids.add(el.get("id"))
    by_id = {a.id: a for a in plan.associations}
    assert (by_id[ids[a3]].source_object, by_id[ids[a3]].target_object) == (ids[fol_id], ids[doc_id])
    assert by_id[ids[a4]].target_object == ids[a3]
    assert plan.documents[0].lid == plan.documents[0].id == ids[doc_id]
