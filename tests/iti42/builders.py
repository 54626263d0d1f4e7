"""Small builders of valid ITI-42 submissions (model objects) for the registry tests.

Every nested Classification/ExternalIdentifier id is derived from its owner's id, so several
entries can share one submission. Import as `from iti42.builders import ...` (tests/ is on the
path; `iti42` is a namespace package).
"""

from __future__ import annotations

import hashlib
import itertools

from registry import constants as C
from registry.model import (
    Association,
    Classification,
    DocumentEntry,
    ExternalIdentifier,
    Folder,
    LocalizedString,
    Slot,
    SubmissionSet,
    SubmitObjectsRequest,
)

PATIENT = "1234567890123^^^&1.2.250.1.213.1.4.10&ISO"
OTHER_PATIENT = "2234567890123^^^&1.2.250.1.213.1.4.10&ISO"
SS_ID = "SubmissionSet01"

_counter = itertools.count(1)


def fresh_oid(root: str = "1.2.250.1.999.7") -> str:
    return f"{root}.{next(_counter)}"


def sha1(content: bytes) -> str:
    return hashlib.sha1(content).hexdigest()


def _nid(owner: str, name: str) -> str:
    """A symbolic id for a nested object (never urn:uuid:-shaped, even for a urn:uuid: owner)."""
    return f"{owner.removeprefix('urn:uuid:')}-{name}"


def _code(owner: str, name: str, scheme: str, value: str, coding_scheme: str) -> Classification:
    return Classification(
        id=_nid(owner, name),
        classified_object=owner,
        classification_scheme=scheme,
        node_representation=value,
        name=(LocalizedString(value),),
        slots=(Slot("codingScheme", (coding_scheme,)),),
    )


def _author(owner: str, scheme: str, person: str) -> Classification:
    return Classification(
        id=_nid(owner, "author"),
        classified_object=owner,
        classification_scheme=scheme,
        node_representation="",
        slots=(
            Slot("authorPerson", (person,)),
            Slot("authorInstitution", ("Clinique du Parc^^^^^&1.2.250.1.71.4.2.2&ISO^^^^10B0012345",)),
        ),
    )


def _ext(owner: str, name: str, scheme: str, value: str) -> ExternalIdentifier:
    return ExternalIdentifier(
        id=_nid(owner, name), registry_object=owner, identification_scheme=scheme, value=value
    )


def document(
    id: str = "Document01",
    unique_id: str | None = None,
    *,
    patient: str = PATIENT,
    content: bytes = b"hello",
    hash: str | None = None,
    size: str | None = None,
    status: str | None = None,
    reference_ids: tuple[str, ...] = (),
    event_codes: tuple[str, ...] = ("E1",),
) -> DocumentEntry:
    slots = [
        Slot("creationTime", ("20240102030405",)),
        Slot("hash", (hash or sha1(content),)),
        Slot("size", (size or str(len(content)),)),
        Slot("languageCode", ("fr-FR",)),
        Slot("repositoryUniqueId", ("1.2.250.1.999.1",)),
        Slot("serviceStartTime", ("202401020304",)),
        Slot("serviceStopTime", ("2024010205",)),
        Slot("sourcePatientId", ("IPP42^^^CLINIQUE&1.2.250.1.999.2&ISO^PI",)),
    ]
    if reference_ids:
        slots.append(Slot("urn:ihe:iti:xds:2013:referenceIdList", reference_ids))
    return DocumentEntry(
        id=id,
        mime_type="text/plain",
        object_type=C.DOC_ENTRY_STABLE,
        status=status,
        name=(LocalizedString(f"Document {id}"),),
        slots=tuple(slots),
        classifications=(
            _author(id, C.DE_AUTHOR, "12345^Martin^Claire^^^Dr^^^&1.2.250.1.71.4.2.1&ISO"),
            _code(id, "class", C.DE_CLASS_CODE, "10", "1.2.250.1.213.1.1.4.1"),
            _code(id, "conf", C.DE_CONFIDENTIALITY_CODE, "N", "2.16.840.1.113883.5.25"),
            *(
                _code(id, f"event{i}", C.DE_EVENT_CODE, e, "1.2.3.4")
                for i, e in enumerate(event_codes)
            ),
            _code(id, "format", C.DE_FORMAT_CODE, "urn:ihe:iti:xds-sd:text:2008", "1.3.6.1.4.1.19376.1.2.3"),
            _code(id, "hcft", C.DE_HEALTHCARE_FACILITY_TYPE_CODE, "SA01", "1.2.250.1.71.4.2.4"),
            _code(id, "pract", C.DE_PRACTICE_SETTING_CODE, "ETABLISSEMENT", "1.2.250.1.213.1.1.4.9"),
            _code(id, "type", C.DE_TYPE_CODE, "11490-0", "2.16.840.1.113883.6.1"),
        ),
        external_identifiers=(
            _ext(id, "pid", C.DE_PATIENT_ID, patient),
            _ext(id, "uid", C.DE_UNIQUE_ID, unique_id or fresh_oid()),
        ),
    )


def submission_set(
    id: str = SS_ID, unique_id: str | None = None, *, patient: str = PATIENT, home: str | None = None
) -> SubmissionSet:
    return SubmissionSet(
        id=id,
        home=home,
        name=(LocalizedString("Envoi"),),
        slots=(Slot("submissionTime", ("20240102030506",)),),
        classifications=(
            _author(id, C.SS_AUTHOR, "12345^Martin^Claire^^^Dr^^^&1.2.250.1.71.4.2.1&ISO"),
            _code(id, "ct", C.SS_CONTENT_TYPE_CODE, "04", "1.2.250.1.213.1.1.4.12"),
            Classification(id=_nid(id, "node"), classified_object=id, classification_node=C.SS_CLASSIFICATION_NODE),
        ),
        external_identifiers=(
            _ext(id, "pid", C.SS_PATIENT_ID, patient),
            _ext(id, "src", C.SS_SOURCE_ID, "1.2.250.1.999.4"),
            _ext(id, "uid", C.SS_UNIQUE_ID, unique_id or fresh_oid("1.2.250.1.999.5")),
        ),
    )


def folder(
    id: str = "Folder01",
    unique_id: str | None = None,
    *,
    patient: str = PATIENT,
    last_update_time: str | None = None,
) -> Folder:
    slots = (Slot("lastUpdateTime", (last_update_time,)),) if last_update_time else ()
    return Folder(
        id=id,
        name=(LocalizedString("Épisode"),),
        slots=slots,
        classifications=(
            _code(id, "code", C.FOLDER_CODE_LIST, "EP", "1.2.3.5"),
            Classification(id=_nid(id, "node"), classified_object=id, classification_node=C.FOLDER_CLASSIFICATION_NODE),
        ),
        external_identifiers=(
            _ext(id, "pid", C.FOLDER_PATIENT_ID, patient),
            _ext(id, "uid", C.FOLDER_UNIQUE_ID, unique_id or fresh_oid("1.2.250.1.999.6")),
        ),
    )


def association(id: str, type_: str, source: str, target: str, ss_status: str | None = None) -> Association:
    slots = (Slot(C.SLOT_SUBMISSION_SET_STATUS, (ss_status,)),) if ss_status else ()
    return Association(id=id, association_type=type_, source_object=source, target_object=target, slots=slots)


def has_member(id: str, source: str, target: str, ss_status: str | None = None) -> Association:
    return association(id, C.ASSOC_HAS_MEMBER, source, target, ss_status)


def submission(*objects, ss: SubmissionSet | None = None) -> SubmitObjectsRequest:
    """A request with `ss` (a fresh SubmissionSet by default) and `objects` after it."""
    return SubmitObjectsRequest(objects=(ss or submission_set(), *objects))


def one_document(doc: DocumentEntry | None = None, *, ss: SubmissionSet | None = None) -> SubmitObjectsRequest:
    """SubmissionSet + one DocumentEntry + the SS→Doc HasMember (Original)."""
    doc = doc or document()
    ss = ss or submission_set()
    return submission(doc, has_member(f"hm-{doc.id}", ss.id, doc.id, "Original"), ss=ss)


def with_folder(doc: DocumentEntry | None = None, fol: Folder | None = None,
                *, ss: SubmissionSet | None = None) -> SubmitObjectsRequest:
    """SubmissionSet + DocumentEntry + Folder holding it, with every HasMember the TF asks."""
    doc = doc or document()
    fol = fol or folder()
    ss = ss or submission_set()
    return submission(
        doc,
        fol,
        has_member("hm-ss-doc", ss.id, doc.id, "Original"),
        has_member("hm-ss-fol", ss.id, fol.id),
        has_member("hm-fol-doc", fol.id, doc.id),
        has_member("hm-ss-foldoc", ss.id, "hm-fol-doc"),
        ss=ss,
    )


def relationship(type_: str, doc: DocumentEntry, target: str, *, ss: SubmissionSet | None = None,
                 extra: tuple = ()) -> SubmitObjectsRequest:
    """A new DocumentEntry related (RPLC/APND/XFRM/XFRM_RPLC/signs) to an existing entry."""
    ss = ss or submission_set()
    return submission(
        doc,
        has_member(f"hm-{doc.id}", ss.id, doc.id, "Original"),
        association(f"rel-{doc.id}", type_, doc.id, target),
        *extra,
        ss=ss,
    )
