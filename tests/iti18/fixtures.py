"""The stored query test data: NIST test 12346's fixture (conformance-tests.md §0), loaded
straight into the store with SQLAlchemy Core, rows computed from model objects by the store's
own pure row mapping (`registry.store.write.plan_rows`) so they are what ITI-42 would write.

Per patient: single_doc (SS1 + D1), doc_w_fol (SS2 + D2 + F1), two_doc_w_fol (SS3 + D3, D4 +
F2), doc_for_rplc (SS4 + D5), rplc (SS5 + D6, D6 RPLC D5, D5 Deprecated): 6 entries, 5 sets,
2 folders, 15 associations. `load_nist_fixture(engine, "A")` and `(engine, "B")` give two
patients with disjoint ids; each DocumentEntry carries distinct codes, times, authors so every
FindDocuments parameter can select it.
"""

from __future__ import annotations

import uuid
from typing import Iterable

import attrs
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from registry import constants as C
from registry import model as M
from registry.schema import metadata, patient
from registry.store.write import RegistrationPlan, plan_rows

PATIENTS = {
    "A": "c4d77e21d0dd487^^^&1.3.6.1.4.1.21367.2005.3.7&ISO",
    "B": "7a1b9c2e4f3d210^^^&1.3.6.1.4.1.21367.2005.3.7&ISO",
}
CS_CONF = "2.16.840.1.113883.5.25"
CS_CLASS = "Connect-a-thon classCodes"
CS_EVENT = "Connect-a-thon eventCodeList"
CS_FORMAT = "Connect-a-thon formatCodes"
CS_HCFT = "Connect-a-thon healthcareFacilityTypeCodes"
CS_PRACTICE = "Connect-a-thon practiceSettingCodes"
CS_TYPE = "LOINC"
CS_FOLDER = "Connect-a-thon folderCodeList"
CS_CONTENT = "Connect-a-thon contentTypeCodes"
SOURCE_ID = "1.3.6.1.4.1.21367.4"
OTHER_SOURCE_ID = "1.3.6.1.4.1.21367.5"


def ident(patient_tag: str, name: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'carnet-iti18/{patient_tag}/{name}')}"


def uid(patient_tag: str, name: str) -> str:
    n = int(uuid.uuid5(uuid.NAMESPACE_URL, f"uid/{patient_tag}/{name}")) % 10**12
    return f"1.2.250.1.999.{ord(patient_tag)}.{n}"


def _code(obj_id: str, n: int, scheme: str, code: str, coding_scheme: str) -> M.Classification:
    return M.Classification(
        id=f"{obj_id}-c{n}",
        classified_object=obj_id,
        classification_scheme=scheme,
        node_representation=code,
        name=(M.LocalizedString(code),),
        slots=(M.Slot("codingScheme", (coding_scheme,)),),
    )


def _author(obj_id: str, n: int, scheme: str, person: str) -> M.Classification:
    return M.Classification(
        id=f"{obj_id}-c{n}",
        classified_object=obj_id,
        classification_scheme=scheme,
        node_representation="",
        slots=(M.Slot("authorPerson", (person,)), M.Slot("authorInstitution", ("Some Hospital",))),
    )


def _ext(obj_id: str, n: int, scheme: str, value: str, name: str) -> M.ExternalIdentifier:
    return M.ExternalIdentifier(
        id=f"{obj_id}-e{n}",
        registry_object=obj_id,
        identification_scheme=scheme,
        value=value,
        name=(M.LocalizedString(name),),
    )


@attrs.frozen
class DocSpec:
    """The query-relevant metadata of one DocumentEntry of the fixture."""

    name: str
    class_code: str = "Communication"
    type_code: str = "34133-9"
    practice: str = "Cardiology"
    hcft: str = "Outpatient"
    fmt: str = "CDAR2/IHE 1.0"
    confs: tuple[str, ...] = ("N",)
    events: tuple[str, ...] = ()
    creation: str = "20040101"
    start: str | None = None
    stop: str | None = None
    authors: tuple[str, ...] = ("Dr. Smith",)
    refs: tuple[str, ...] = ()
    on_demand: bool = False


# Distinct values per entry so each FindDocuments parameter can single it out.
DOCS = {
    "D1": DocSpec("D1", "Communication", "34133-9", "Cardiology", "Outpatient", "CDAR2/IHE 1.0",
                  ("N",), ("Colonoscopy",), "20040101", "200412230800", "200412230801",
                  ("^Smith^John^^^Dr", "^Doe^Jane"), ("ref-1^^^&1.2.3&ISO^urn:ihe:iti:xds:2013:accession",)),
    "D2": DocSpec("D2", "Consult", "18842-5", "Dialysis", "Inpatient", "PDF/IHE 1.0",
                  ("N", "R"), ("Colonoscopy", "Appendectomy"), "20050101", "200501010800", "200501010900",
                  ("^Jones^Ann",), ("ref-2^^^&1.2.3&ISO^urn:ihe:iti:xds:2013:accession",)),
    "D3": DocSpec("D3", "History and Physical", "11506-3", "Dialysis", "Outpatient", "CDAR2/IHE 1.0",
                  ("R",), ("Appendectomy",), "20051231235959", "20051231", "20060101",
                  ("^Smith^Robert",), ()),
    "D4": DocSpec("D4", "Consult", "34133-9", "Cardiology", "Emergency", "XDS-SD",
                  ("V",), (), "2006", None, None, ("^O'Brien^Pat",), ()),
    "D5": DocSpec("D5", "Communication", "34133-9", "Cardiology", "Outpatient", "CDAR2/IHE 1.0",
                  ("N",), (), "20070601", None, None, ("^Smith^John^^^Dr",), ()),
    "D6": DocSpec("D6", "Communication", "34133-9", "Cardiology", "Outpatient", "CDAR2/IHE 1.0",
                  ("N",), (), "20070602", None, None, ("^Smith^John^^^Dr",), ()),
}


def document_entry(tag: str, spec: DocSpec, status: str = C.STATUS_APPROVED) -> M.DocumentEntry:
    i = ident(tag, spec.name)
    classes = [
        _code(i, 1, C.DE_CLASS_CODE, spec.class_code, CS_CLASS),
        _code(i, 2, C.DE_TYPE_CODE, spec.type_code, CS_TYPE),
        _code(i, 3, C.DE_PRACTICE_SETTING_CODE, spec.practice, CS_PRACTICE),
        _code(i, 4, C.DE_HEALTHCARE_FACILITY_TYPE_CODE, spec.hcft, CS_HCFT),
        _code(i, 5, C.DE_FORMAT_CODE, spec.fmt, CS_FORMAT),
    ]
    n = 10
    for c in spec.confs:
        classes.append(_code(i, n, C.DE_CONFIDENTIALITY_CODE, c, CS_CONF))
        n += 1
    for e in spec.events:
        classes.append(_code(i, n, C.DE_EVENT_CODE, e, CS_EVENT))
        n += 1
    for a in spec.authors:
        classes.append(_author(i, n, C.DE_AUTHOR, a))
        n += 1
    slots = [M.Slot("creationTime", (spec.creation,)), M.Slot("languageCode", ("en-us",))]
    if spec.start:
        slots.append(M.Slot("serviceStartTime", (spec.start,)))
    if spec.stop:
        slots.append(M.Slot("serviceStopTime", (spec.stop,)))
    slots.append(M.Slot("sourcePatientId", (PATIENTS[tag],)))
    if not spec.on_demand:
        slots += [M.Slot("hash", ("da39a3ee5e6b4b0d3255bfef95601890afd80709",)), M.Slot("size", ("0",)),
                  M.Slot("repositoryUniqueId", ("1.19.6.24.109.42.1.5",))]
    if spec.refs:
        slots.append(M.Slot("urn:ihe:iti:xds:2013:referenceIdList", spec.refs))
    return M.DocumentEntry(
        id=i,
        lid=i,
        mime_type="text/xml",
        object_type=C.DOC_ENTRY_ON_DEMAND if spec.on_demand else C.DOC_ENTRY_STABLE,
        status=status,
        name=(M.LocalizedString(f"Document {spec.name}"),),
        slots=tuple(slots),
        classifications=tuple(classes),
        external_identifiers=(
            _ext(i, 1, C.DE_PATIENT_ID, PATIENTS[tag], "XDSDocumentEntry.patientId"),
            _ext(i, 2, C.DE_UNIQUE_ID, uid(tag, spec.name), "XDSDocumentEntry.uniqueId"),
        ),
    )


def submission_set(tag: str, name: str, time: str, author: str, source: str = SOURCE_ID,
                   content: str = "Initial evaluation") -> M.SubmissionSet:
    i = ident(tag, name)
    return M.SubmissionSet(
        id=i,
        lid=i,
        status=C.STATUS_APPROVED,
        name=(M.LocalizedString(f"Submission {name}"),),
        slots=(M.Slot("submissionTime", (time,)),),
        classifications=(
            M.Classification(id=f"{i}-node", classified_object=i, classification_node=C.SS_CLASSIFICATION_NODE),
            _author(i, 1, C.SS_AUTHOR, author),
            _code(i, 2, C.SS_CONTENT_TYPE_CODE, content, CS_CONTENT),
        ),
        external_identifiers=(
            _ext(i, 1, C.SS_UNIQUE_ID, uid(tag, name), "XDSSubmissionSet.uniqueId"),
            _ext(i, 2, C.SS_SOURCE_ID, source, "XDSSubmissionSet.sourceId"),
            _ext(i, 3, C.SS_PATIENT_ID, PATIENTS[tag], "XDSSubmissionSet.patientId"),
        ),
    )


def folder(tag: str, name: str, last_update: str, codes: Iterable[str]) -> M.Folder:
    i = ident(tag, name)
    return M.Folder(
        id=i,
        lid=i,
        status=C.STATUS_APPROVED,
        name=(M.LocalizedString(f"Folder {name}"),),
        slots=(M.Slot("lastUpdateTime", (last_update,)),),
        classifications=(
            M.Classification(id=f"{i}-node", classified_object=i, classification_node=C.FOLDER_CLASSIFICATION_NODE),
            *(_code(i, n, C.FOLDER_CODE_LIST, c, CS_FOLDER) for n, c in enumerate(codes, 1)),
        ),
        external_identifiers=(
            _ext(i, 1, C.FOLDER_UNIQUE_ID, uid(tag, name), "XDSFolder.uniqueId"),
            _ext(i, 2, C.FOLDER_PATIENT_ID, PATIENTS[tag], "XDSFolder.patientId"),
        ),
    )


def assoc(tag: str, name: str, kind: str, source: str, target: str, original: bool | None = True) -> M.Association:
    slots = ()
    if kind == C.ASSOC_HAS_MEMBER and original is not None:
        slots = (M.Slot(C.SLOT_SUBMISSION_SET_STATUS, ("Original" if original else "Reference",)),)
    return M.Association(
        id=ident(tag, name), association_type=kind, source_object=source, target_object=target,
        status=C.STATUS_APPROVED, slots=slots,
    )


HM = C.ASSOC_HAS_MEMBER


def nist_plans(tag: str) -> list[RegistrationPlan]:
    """The five 12346 submissions for patient `tag`, in registration order (final state)."""
    I = lambda n: ident(tag, n)  # noqa: E731
    docs = {n: document_entry(tag, s, C.STATUS_DEPRECATED if n == "D5" else C.STATUS_APPROVED)
            for n, s in DOCS.items()}
    plans = [
        RegistrationPlan(
            submission_set=submission_set(tag, "SS1", "20040102", "^Smith^John^^^Dr"),
            documents=(docs["D1"],),
            associations=(assoc(tag, "A1", HM, I("SS1"), I("D1")),),
        ),
        RegistrationPlan(
            submission_set=submission_set(tag, "SS2", "20050102", "^Jones^Ann", content="Follow-up"),
            documents=(docs["D2"],),
            folders=(folder(tag, "F1", "20050102", ["Referral"]),),
            associations=(
                assoc(tag, "A2", HM, I("SS2"), I("D2")),
                assoc(tag, "A3", HM, I("SS2"), I("F1"), original=None),
                assoc(tag, "A4", HM, I("F1"), I("D2"), original=None),
                assoc(tag, "A5", HM, I("SS2"), I("A4"), original=None),
            ),
        ),
        RegistrationPlan(
            submission_set=submission_set(tag, "SS3", "20060102", "^Smith^Robert", source=OTHER_SOURCE_ID),
            documents=(docs["D3"], docs["D4"]),
            folders=(folder(tag, "F2", "20060102", ["Referral", "Cardio"]),),
            associations=(
                assoc(tag, "A6", HM, I("SS3"), I("D3")),
                assoc(tag, "A7", HM, I("SS3"), I("D4")),
                assoc(tag, "A8", HM, I("SS3"), I("F2"), original=None),
                assoc(tag, "A9", HM, I("F2"), I("D3"), original=None),
                assoc(tag, "A10", HM, I("F2"), I("D4"), original=None),
                assoc(tag, "A11", HM, I("SS3"), I("A9"), original=None),
                assoc(tag, "A12", HM, I("SS3"), I("A10"), original=None),
            ),
        ),
        RegistrationPlan(
            submission_set=submission_set(tag, "SS4", "20070601", "^Smith^John^^^Dr"),
            documents=(docs["D5"],),
            associations=(assoc(tag, "A13", HM, I("SS4"), I("D5")),),
        ),
        RegistrationPlan(
            submission_set=submission_set(tag, "SS5", "20070602", "^Smith^John^^^Dr"),
            documents=(docs["D6"],),
            associations=(
                assoc(tag, "A14", HM, I("SS5"), I("D6")),
                assoc(tag, "A15", C.ASSOC_RPLC, I("D6"), I("D5"), original=None),
            ),
        ),
    ]
    return plans


def load_plans(engine: Engine, plans: Iterable[RegistrationPlan], patients: Iterable[str] = ()) -> None:
    with engine.begin() as conn:
        for pid in patients:
            conn.execute(insert(patient), [{"patient_id": pid, "created_at": "20040101000000"}])
        for plan in plans:
            for table_name, rows in plan_rows(plan).items():
                if rows:
                    conn.execute(insert(metadata.tables[table_name]), rows)


def load_nist_fixture(engine: Engine, tag: str = "A") -> None:
    load_plans(engine, nist_plans(tag), [PATIENTS[tag]])
