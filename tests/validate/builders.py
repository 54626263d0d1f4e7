"""A valid ITI-42 submission as model objects, every part overridable.

`submission()` builds: SubmissionSet ``SubmissionSet01``, DocumentEntry ``Document01``, Folder
``Folder01``, HasMember SS→Document01 (``as-ss-doc``), SS→Folder01 (``as-ss-fol``),
Folder01→Document01 (``as-fol-doc``) and SS→(that association) (``as-ss-foldoc``).
"""

from __future__ import annotations

from typing import Any

import attrs

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
DE_ID, SS_ID, FOL_ID = "Document01", "SubmissionSet01", "Folder01"


def code(cid: str, owner: str, scheme: str, value: str, coding_scheme: str = "2.16.840.1.113883.6.1",
         display: str = "display") -> Classification:
    return Classification(
        id=cid,
        classified_object=owner,
        classification_scheme=scheme,
        node_representation=value,
        name=(LocalizedString(display),),
        slots=(Slot("codingScheme", (coding_scheme,)),),
    )


def author(cid: str, owner: str, scheme: str, **slots: tuple[str, ...]) -> Classification:
    values = {
        "authorPerson": ("12345^Martin^Claire^^^Dr^^^&1.2.250.1.71.4.2.1&ISO",),
        "authorInstitution": ("Clinique du Parc^^^^^&1.2.250.1.71.4.2.2&ISO^^^^10B0012345",),
        "authorRole": ("Médecin",),
        "authorSpecialty": ("G15_10/SM26^^1.2.250.1.213.1.1.4.5",),
        "authorTelecommunication": ("^^Internet^claire.martin@example.org",),
    }
    values.update(slots)
    return Classification(
        id=cid,
        classified_object=owner,
        classification_scheme=scheme,
        node_representation="",
        slots=tuple(Slot(k, v) for k, v in values.items() if v is not None),
    )


def ext(eid: str, owner: str, scheme: str, value: str) -> ExternalIdentifier:
    return ExternalIdentifier(id=eid, registry_object=owner, identification_scheme=scheme, value=value)


def document_entry(**over: Any) -> DocumentEntry:
    d = DE_ID
    base = DocumentEntry(
        id=d,
        mime_type="text/xml",
        object_type=C.DOC_ENTRY_STABLE,
        name=(LocalizedString("Compte rendu"),),
        slots=(
            Slot("creationTime", ("20240102030405",)),
            Slot("hash", ("da39a3ee5e6b4b0d3255bfef95601890afd80709",)),
            Slot("size", ("0",)),
            Slot("languageCode", ("fr-FR",)),
            Slot("repositoryUniqueId", ("1.2.250.1.999.1",)),
            Slot("serviceStartTime", ("202401020304",)),
            Slot("serviceStopTime", ("2024010205",)),
            Slot("sourcePatientId", ("IPP42^^^CLINIQUE&1.2.250.1.999.2&ISO^PI",)),
            Slot("sourcePatientInfo", ("PID-5|MARTIN^Claire^^^^^L",)),
            Slot("legalAuthenticator", ("12345^Martin^Claire",)),
            Slot("urn:ihe:iti:xds:2013:referenceIdList", ("123^^^&1.2.3&ISO^urn:ihe:iti:xds:2013:order",)),
        ),
        classifications=(
            author("cl-author", d, C.DE_AUTHOR),
            code("cl-class", d, C.DE_CLASS_CODE, "10", "1.2.250.1.213.1.1.4.1"),
            code("cl-conf", d, C.DE_CONFIDENTIALITY_CODE, "N", "2.16.840.1.113883.5.25"),
            code("cl-event", d, C.DE_EVENT_CODE, "E1", "1.2.3.4"),
            code("cl-format", d, C.DE_FORMAT_CODE, "urn:ihe:iti:xds-sd:pdf:2008", "1.3.6.1.4.1.19376.1.2.3"),
            code("cl-hcft", d, C.DE_HEALTHCARE_FACILITY_TYPE_CODE, "SA01", "1.2.250.1.71.4.2.4"),
            code("cl-pract", d, C.DE_PRACTICE_SETTING_CODE, "ETABLISSEMENT", "1.2.250.1.213.1.1.4.9"),
            code("cl-type", d, C.DE_TYPE_CODE, "11490-0", "2.16.840.1.113883.6.1"),
        ),
        external_identifiers=(
            ext("ei-de-pid", d, C.DE_PATIENT_ID, PATIENT),
            ext("ei-de-uid", d, C.DE_UNIQUE_ID, "1.2.250.1.999.3.1^EXT1"),
        ),
    )
    return attrs.evolve(base, **over)


def submission_set(**over: Any) -> SubmissionSet:
    s = SS_ID
    base = SubmissionSet(
        id=s,
        name=(LocalizedString("Envoi"),),
        slots=(Slot("submissionTime", ("20240102030506",)),),
        classifications=(
            author("cl-ss-author", s, C.SS_AUTHOR),
            code("cl-ss-ct", s, C.SS_CONTENT_TYPE_CODE, "04", "1.2.250.1.213.1.1.4.12"),
            Classification(id="cl-ss-node", classified_object=s, classification_node=C.SS_CLASSIFICATION_NODE),
        ),
        external_identifiers=(
            ext("ei-ss-pid", s, C.SS_PATIENT_ID, PATIENT),
            ext("ei-ss-src", s, C.SS_SOURCE_ID, "1.2.250.1.999.4"),
            ext("ei-ss-uid", s, C.SS_UNIQUE_ID, "1.2.250.1.999.5.1"),
        ),
    )
    return attrs.evolve(base, **over)


def folder(**over: Any) -> Folder:
    f = FOL_ID
    base = Folder(
        id=f,
        name=(LocalizedString("Épisode"),),
        classifications=(
            code("cl-fol-code", f, C.FOLDER_CODE_LIST, "EP", "1.2.3.5"),
            Classification(id="cl-fol-node", classified_object=f, classification_node=C.FOLDER_CLASSIFICATION_NODE),
        ),
        external_identifiers=(
            ext("ei-fol-pid", f, C.FOLDER_PATIENT_ID, PATIENT),
            ext("ei-fol-uid", f, C.FOLDER_UNIQUE_ID, "1.2.250.1.999.6.1"),
        ),
    )
    return attrs.evolve(base, **over)


def has_member(aid: str, source: str, target: str, status: str | None = "Original", **over: Any) -> Association:
    slots = (Slot(C.SLOT_SUBMISSION_SET_STATUS, (status,)),) if status is not None else ()
    return attrs.evolve(
        Association(id=aid, association_type=C.ASSOC_HAS_MEMBER, source_object=source, target_object=target, slots=slots),
        **over,
    )


def associations() -> tuple[Association, ...]:
    return (
        has_member("as-ss-doc", SS_ID, DE_ID),
        has_member("as-ss-fol", SS_ID, FOL_ID, status=None),
        has_member("as-fol-doc", FOL_ID, DE_ID, status=None),
        has_member("as-ss-foldoc", SS_ID, "as-fol-doc", status=None),
    )


def submission(*, ss: SubmissionSet | None = None, de: DocumentEntry | None = None,
               fol: Folder | None = None, assocs: tuple[Association, ...] | None = None,
               extra: tuple = ()) -> SubmitObjectsRequest:
    objects = (
        ss or submission_set(),
        de or document_entry(),
        fol or folder(),
        *(associations() if assocs is None else assocs),
        *extra,
    )
    return SubmitObjectsRequest(objects=objects)


# --- small editing helpers --------------------------------------------------------------------


def without_slot(obj, name: str):
    return attrs.evolve(obj, slots=tuple(s for s in obj.slots if s.name != name))


def with_slot(obj, name: str, *values: str):
    return attrs.evolve(obj, slots=tuple(s for s in obj.slots if s.name != name) + (Slot(name, values),))


def add_slot(obj, name: str, *values: str):
    return attrs.evolve(obj, slots=obj.slots + (Slot(name, values),))


def without_scheme(obj, scheme: str):
    return attrs.evolve(obj, classifications=tuple(c for c in obj.classifications if c.classification_scheme != scheme))


def without_classification(obj, cid: str):
    return attrs.evolve(obj, classifications=tuple(c for c in obj.classifications if c.id != cid))


def map_classification(obj, cid: str, **over: Any):
    return attrs.evolve(
        obj, classifications=tuple(attrs.evolve(c, **over) if c.id == cid else c for c in obj.classifications)
    )


def add_classification(obj, cl: Classification):
    return attrs.evolve(obj, classifications=obj.classifications + (cl,))


def without_ext(obj, scheme: str):
    return attrs.evolve(
        obj, external_identifiers=tuple(e for e in obj.external_identifiers if e.identification_scheme != scheme)
    )


def with_ext(obj, scheme: str, value: str):
    return attrs.evolve(
        obj,
        external_identifiers=tuple(
            attrs.evolve(e, value=value) if e.identification_scheme == scheme else e for e in obj.external_identifiers
        ),
    )


def add_ext(obj, e: ExternalIdentifier):
    return attrs.evolve(obj, external_identifiers=obj.external_identifiers + (e,))
