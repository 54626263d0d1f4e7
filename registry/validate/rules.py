"""Metadata validation of an XDS.b submission (ITI-42, and the metadata of ITI-41), pure.

`validate_submission(req, config)` returns every `RegistryError` found, each with
- `rule`: a stable id (``DE.classCode.required``, ``ASSOC.self``…; the catalogue is `RULES`),
- `location`: the id of the object at fault, then ``/`` and the attribute (``Document01/classCode``).

Relaxing (DESIGN.md §3 rule 4): `ValidationConfig.relaxed` holds rule ids or prefixes. An entry
matches a rule id when it is equal to it, or is a prefix of it ending at a dot: ``DE.`` and ``DE``
relax every DocumentEntry rule, ``DE.languageCode`` relaxes ``DE.languageCode.required`` and
``DE.languageCode.format``. A relaxed rule's findings are returned as warnings and logged on the
``carnet.validate`` logger; they are never dropped.

What is not checked here because it needs the registry (the ITI-42 handler does it with the store):
unknown patient (XDSUnknownPatientId), uniqueId already registered (XDSDuplicateUniqueIdInRegistry,
XDSNonIdenticalHash), existence and status of `urn:uuid:` targets (XDSRegistryDeprecatedDocumentError),
replacing across patients. `external_targets()` lists the references the handler must resolve.

Decisions where the TF leaves room (documented so they can be changed in one place):
- Extra metadata (ITI TF-3 §4.2.3.1.3): a slot named ``urn:…`` but not ``urn:ihe:…`` on a
  DocumentEntry, SubmissionSet or Folder is extra metadata; Carnet saves it, so no
  XDSExtraMetadataNotSaved. Any other slot name that XDS does not define (a plain name, or an
  ``urn:ihe:`` name IHE has not defined) is neither XDS metadata nor legal extra metadata:
  XDSRegistryMetadataError under ``<OBJ>.slot.unknown`` (relaxable).
- Associations: the ebRS 2.1 short form ``HasMember`` (used by the official IHE ITI-41/42
  examples) is read as the ebRS 3.0 URN, see `normalize_association_type`.
- Scheme UUIDs are matched ignoring whitespace (IPF's fixtures carry ``…-92fd- a8ff…``).
- hash, size and repositoryUniqueId are required on stable entries for ITI-42 (the registry's
  column of ITI TF-3 Table 4.3.1-3); with ``ValidationConfig(transaction="ITI-41")`` they are
  optional (a Document Source may omit them; the repository fills them before ITI-42).
- limitedMetadata is an XDR/XDM feature; an XDS registry rejects it (ITI TF-3 §4.1.1).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Callable, Iterable, Literal

import attrs

from registry import constants as C
from registry.errors import RegistryError, XdsErrorCode
from registry.model import (
    Association,
    Classification,
    DocumentEntry,
    Folder,
    SubmissionSet,
    SubmitObjectsRequest,
)
from registry.validate import formats as F

log = logging.getLogger("carnet.validate")

META = XdsErrorCode.XDSRegistryMetadataError

# --- configuration ------------------------------------------------------------------------


@attrs.frozen
class ValidationConfig:
    """`relaxed`: rule ids or dotted prefixes whose findings become warnings (see module doc).
    `transaction`: "ITI-42" (registry, default) or "ITI-41" (repository receiving a PnR)."""

    relaxed: frozenset[str] = attrs.field(default=frozenset(), converter=frozenset)
    transaction: Literal["ITI-42", "ITI-41"] = "ITI-42"

    def is_relaxed(self, rule: str) -> bool:
        for entry in self.relaxed:
            prefix = entry if entry.endswith(".") else entry + "."
            if rule == entry or rule.startswith(prefix):
                return True
        return False


# --- rule catalogue -----------------------------------------------------------------------

RULES: dict[str, tuple[XdsErrorCode, str]] = {}


def _rule(rule_id: str, code: XdsErrorCode, text: str) -> str:
    RULES[rule_id] = (code, text)
    return rule_id


# Coded attributes: (short name, scheme UUID, min, max) per object type (ITI TF-3 Table 4.3.1-3).
DE_CODES: tuple[tuple[str, str, int, int | None], ...] = (
    ("classCode", C.DE_CLASS_CODE, 1, 1),
    ("confidentialityCode", C.DE_CONFIDENTIALITY_CODE, 1, None),
    ("eventCodeList", C.DE_EVENT_CODE, 0, None),
    ("formatCode", C.DE_FORMAT_CODE, 1, 1),
    ("healthcareFacilityTypeCode", C.DE_HEALTHCARE_FACILITY_TYPE_CODE, 1, 1),
    ("practiceSettingCode", C.DE_PRACTICE_SETTING_CODE, 1, 1),
    ("typeCode", C.DE_TYPE_CODE, 1, 1),
)
SS_CODES = (("contentTypeCode", C.SS_CONTENT_TYPE_CODE, 1, 1),)
FOL_CODES = (("codeList", C.FOLDER_CODE_LIST, 1, None),)

# External identifiers: (short name, scheme UUID, syntax check) — each exactly once.
DE_EXT_IDS = (("patientId", C.DE_PATIENT_ID, F.cx_patient_id), ("uniqueId", C.DE_UNIQUE_ID, F.document_unique_id))
SS_EXT_IDS = (
    ("patientId", C.SS_PATIENT_ID, F.cx_patient_id),
    ("sourceId", C.SS_SOURCE_ID, F.oid),
    ("uniqueId", C.SS_UNIQUE_ID, F.oid),
)
FOL_EXT_IDS = (("patientId", C.FOLDER_PATIENT_ID, F.cx_patient_id), ("uniqueId", C.FOLDER_UNIQUE_ID, F.oid))

# Slots: name -> (syntax check or None, single-valued). ITI TF-3 Tables 4.2.3.2-1, 4.2.3.3-1, 4.2.3.4-1.
DE_SLOTS: dict[str, tuple[Callable[[str], str | None] | None, bool]] = {
    "creationTime": (F.dtm, True),
    "hash": (F.sha1_hash, True),
    "languageCode": (F.language_code, True),
    "legalAuthenticator": (F.xcn, True),
    "repositoryUniqueId": (F.oid, True),
    "serviceStartTime": (F.dtm, True),
    "serviceStopTime": (F.dtm, True),
    "size": (F.size, True),
    "sourcePatientId": (F.cx_source_patient_id, True),
    "sourcePatientInfo": (F.source_patient_info, False),  # PID-x|value (ITI TF-3 §4.2.3.2.23)
    "URI": (F.uri, True),
    "urn:ihe:iti:xds:2013:referenceIdList": (None, False),
}
SS_SLOTS: dict[str, tuple[Callable[[str], str | None] | None, bool]] = {
    "submissionTime": (F.dtm, True),
    "intendedRecipient": (None, False),
}
FOL_SLOTS: dict[str, tuple[Callable[[str], str | None] | None, bool]] = {
    "lastUpdateTime": (F.dtm, True),
}

AUTHOR_CHECKS = (
    ("authorPerson", F.xcn),
    ("authorInstitution", F.xon),
    ("authorTelecommunication", F.xtn),
)

SHORT_ASSOCIATION_TYPES = {
    "HasMember": C.ASSOC_HAS_MEMBER,
}
ITI42_ASSOCIATION_TYPES = (C.ASSOC_HAS_MEMBER, *C.RELATIONSHIP_TYPES)
DOCUMENTED_TYPES = (C.ASSOC_RPLC, C.ASSOC_APND, C.ASSOC_XFRM, C.ASSOC_XFRM_RPLC)  # ITI TF-3 §4.2.2.2.7
SUBMISSION_SET_STATUSES = ("Original", "Reference")


def _register_object_rules(prefix: str, codes, ext_ids, slots) -> None:
    _rule(f"{prefix}.classification.unknown", META, "classification scheme not defined for this object (ITI TF-3 §4.2.5)")
    _rule(f"{prefix}.classification.classifiedObject", META, "nested classification classifies another object")
    _rule(f"{prefix}.externalIdentifier.unknown", META, "identification scheme not defined for this object")
    _rule(f"{prefix}.externalIdentifier.registryObject", META, "external identifier belongs to another object")
    _rule(f"{prefix}.limitedMetadata", META, "limitedMetadata is not allowed in XDS (ITI TF-3 §4.1.1)")
    _rule(f"{prefix}.slot.unknown", META, "slot name neither XDS metadata nor extra metadata (ITI TF-3 §4.2.3.1.3)")
    for name, _scheme, low, high in codes:
        if low:
            _rule(f"{prefix}.{name}.required", META, f"{name} is required")
        if high == 1:
            _rule(f"{prefix}.{name}.multiple", META, f"{name} must appear once")
        _rule(f"{prefix}.{name}.code", META, f"{name} needs a nodeRepresentation (ITI TF-3 §4.2.3.1.2)")
        _rule(f"{prefix}.{name}.codingScheme", META, f"{name} needs one codingScheme slot value")
        _rule(f"{prefix}.{name}.displayName", META, f"{name} needs a Name (display name)")
    for name, _scheme, _check in ext_ids:
        _rule(f"{prefix}.{name}.required", META, f"{name} is required")
        _rule(f"{prefix}.{name}.multiple", META, f"{name} must appear once")
        _rule(f"{prefix}.{name}.format", META, f"{name} syntax")
    for name, (check, single) in slots.items():
        if check:
            _rule(f"{prefix}.{name}.format", META, f"{name} syntax")
        if single:
            _rule(f"{prefix}.{name}.multiple", META, f"{name} has one value")


def _register_author_rules(prefix: str) -> None:
    _rule(f"{prefix}.author.empty", META, "author needs authorPerson, authorInstitution or authorTelecommunication")
    _rule(f"{prefix}.author.authorPerson.multiple", META, "authorPerson has one value (ITI TF-3 §4.2.3.1.4)")
    for slot, _check in AUTHOR_CHECKS:
        _rule(f"{prefix}.author.{slot}.format", META, f"{slot} syntax")


_register_object_rules("DE", DE_CODES, DE_EXT_IDS, DE_SLOTS)
_register_object_rules("SS", SS_CODES, SS_EXT_IDS, SS_SLOTS)
_register_object_rules("FOL", FOL_CODES, FOL_EXT_IDS, FOL_SLOTS)
_register_author_rules("DE")
_register_author_rules("SS")
for _name in ("mimeType", "creationTime", "languageCode", "sourcePatientId", "hash", "size", "repositoryUniqueId"):
    _rule(f"DE.{_name}.required", META, f"{_name} is required (ITI TF-3 Table 4.3.1-3)")
_rule("DE.mimeType.format", META, "mimeType syntax")
_rule("DE.objectType", META, "objectType must be the stable or On-Demand DocumentEntry type")
_rule("DE.hash.onDemand", META, "an On-Demand DocumentEntry carries no hash")
_rule("DE.size.onDemand", META, "an On-Demand DocumentEntry carries no size")
_rule("SS.submissionTime.required", META, "submissionTime is required")
_rule("FOL.title.required", META, "Folder title (Name) is required")
_rule("DE.title.length", META, f"DocumentEntry title (Name) at most {F.TITLE_MAX} characters (ITI TF-3 §4.2.3.2.24)")

_rule("SUB.submissionSet.count", META, "a submission has exactly one SubmissionSet (ITI TF-3 §4.1.4)")
_rule("SUB.id.unique", META, "ids are unique within the message")
_rule("SUB.id.uuid", META, "an id in urn:uuid: form must be a valid UUID")
_rule("SUB.reference.dangling", META, "reference neither a symbolic id of the message nor a urn:uuid:")
_rule("SUB.empty", META, "the SubmissionSet registers nothing: no DocumentEntry, Folder or Association")
_rule("SUB.hasMember.missing", META, "every DocumentEntry and Folder is a member of the SubmissionSet")
_rule("SUB.uniqueId.duplicate", XdsErrorCode.XDSRegistryDuplicateUniqueIdInMessage, "uniqueId used twice in the message")
_rule("SUB.patientId.match", XdsErrorCode.XDSPatientIdDoesNotMatch, "one patientId across the submission (ITI TF-2b §3.42.4.1.3)")
_rule("ASSOC.type.unknown", META, "associationType not allowed in ITI-42 (ITI TF-3 §4.2.2)")
_rule("ASSOC.self", META, "association refers to itself or joins an object to itself")
_rule("ASSOC.hasMember.source", META, "HasMember source must be the SubmissionSet or a Folder")
_rule("ASSOC.hasMember.target", META, "HasMember target not allowed for this source")
_rule("ASSOC.hasMember.submissionSetStatus", META, "SubmissionSet→DocumentEntry HasMember needs one SubmissionSetStatus, Original|Reference")
_rule("ASSOC.hasMember.original", META, "SubmissionSetStatus Original names a DocumentEntry of this submission (ITI TF-3 §4.2.2.1.1)")
_rule("ASSOC.hasMember.reference", META, "SubmissionSetStatus Reference names an entry already registered (ITI TF-3 §4.2.2.1.1)")
_rule("ASSOC.hasMember.folderMembership", META, "a Folder→DocumentEntry HasMember must itself be a member of the SubmissionSet")
_rule("ASSOC.relationship.source", META, "relationship source must be a DocumentEntry of the submission (ITI TF-3 §4.2.2.2)")
_rule("ASSOC.relationship.target", META, "relationship target must be an existing entry (urn:uuid:) outside the submission")
_rule("ASSOC.documentation.notAllowed", META, "documentation classification only on RPLC/APND/XFRM/XFRM_RPLC (ITI TF-3 §4.2.2.2.7)")
_rule("ASSOC.documentation.code", META, "association documentation needs a code, codingScheme and Name")


# --- helpers ------------------------------------------------------------------------------


def _norm(ref: str | None) -> str:
    """A reference compared without whitespace (see module doc)."""
    if not ref:
        return ""
    if " " not in ref and ref.isprintable():
        return ref  # no white space: str.isspace() characters are all separators or controls
    return "".join(ref.split())


def normalize_association_type(value: str) -> str:
    """The ebRS 3.0 association type URN for `value` (ebRS 2.1 short forms mapped)."""
    return SHORT_ASSOCIATION_TYPES.get(value, value)


def is_uuid_ref(ref: str | None) -> bool:
    return bool(ref) and F.uuid_urn(ref) is None


def _loc(obj_id: str, attr: str | None = None) -> str:
    return f"{obj_id}/{attr}" if attr else obj_id


class _Findings:
    def __init__(self, config: ValidationConfig):
        self.config = config
        self.items: list[RegistryError] = []

    def add(self, rule: str, message: str, location: str) -> None:
        code = RULES[rule][0]
        error = RegistryError(code, message, location, rule=rule)
        if self.config.is_relaxed(rule):
            error = error.as_warning()
            log.warning("relaxed rule %s at %s: %s (%s)", rule, location, message, code.value)
        self.items.append(error)


_CODES_BY_PREFIX = {"DE": DE_CODES, "SS": SS_CODES, "FOL": FOL_CODES}
_AUTHOR_BY_PREFIX = {"DE": C.DE_AUTHOR, "SS": C.SS_AUTHOR}


def _known_schemes(prefix: str) -> set[str]:
    """Classification schemes defined for the object type (ITI TF-3 §4.2.5)."""
    schemes = {scheme for _n, scheme, *_ in _CODES_BY_PREFIX[prefix]}
    if prefix in _AUTHOR_BY_PREFIX:
        schemes.add(_AUTHOR_BY_PREFIX[prefix])
    return schemes


_NODES = {
    "DE": ((), (C.DE_LIMITED_METADATA,)),
    "SS": ((C.SS_CLASSIFICATION_NODE,), (C.SS_LIMITED_METADATA,)),
    "FOL": ((C.FOLDER_CLASSIFICATION_NODE,), (C.FOLDER_LIMITED_METADATA,)),
}


# --- per object ---------------------------------------------------------------------------


def _check_code(out: _Findings, prefix: str, name: str, owner: str, cl: Classification) -> None:
    where = _loc(owner, f"{name}[{cl.id}]")
    if not cl.node_representation:
        out.add(f"{prefix}.{name}.code", f"{name} {cl.id} has no nodeRepresentation", where)
    schemes = cl.slot("codingScheme")
    if len(schemes) != 1 or not schemes[0].strip():
        out.add(f"{prefix}.{name}.codingScheme", f"{name} {cl.id} needs exactly one codingScheme value", where)
    if not cl.name or not cl.name[0].value.strip():
        out.add(f"{prefix}.{name}.displayName", f"{name} {cl.id} has no Name", where)


def _check_classifications(out: _Findings, prefix: str, obj, codes) -> None:
    known = _known_schemes(prefix)
    allowed_nodes, limited_nodes = _NODES[prefix]
    by_scheme: dict[str, list[Classification]] = {}
    for cl in obj.classifications:
        if _norm(cl.classified_object) != _norm(obj.id):
            out.add(
                f"{prefix}.classification.classifiedObject",
                f"classification {cl.id} inside {obj.id} classifies {cl.classified_object!r}",
                _loc(obj.id, cl.id),
            )
        scheme = _norm(cl.classification_scheme)
        node = _norm(cl.classification_node)
        if scheme:
            if scheme not in known:
                out.add(f"{prefix}.classification.unknown", f"unknown classificationScheme {cl.classification_scheme}", _loc(obj.id, cl.id))
            by_scheme.setdefault(scheme, []).append(cl)
        elif node in limited_nodes:
            out.add(f"{prefix}.limitedMetadata", "limitedMetadata is not allowed in an XDS submission", _loc(obj.id, "limitedMetadata"))
        elif node not in allowed_nodes:
            out.add(f"{prefix}.classification.unknown", f"unknown classification node {cl.classification_node!r}", _loc(obj.id, cl.id))
    for name, scheme, low, high in codes:
        found = by_scheme.get(scheme, [])
        if len(found) < low:
            out.add(f"{prefix}.{name}.required", f"{name} is missing", _loc(obj.id, name))
        if high is not None and len(found) > high:
            out.add(f"{prefix}.{name}.multiple", f"{name} appears {len(found)} times", _loc(obj.id, name))
        for cl in found:
            _check_code(out, prefix, name, obj.id, cl)


def _check_authors(out: _Findings, prefix: str, obj, scheme: str) -> None:
    for cl in obj.classifications:
        if _norm(cl.classification_scheme) != scheme:
            continue
        where = _loc(obj.id, f"author[{cl.id}]")
        if not any(v.strip() for s in ("authorPerson", "authorInstitution", "authorTelecommunication") for v in cl.slot(s)):
            out.add(f"{prefix}.author.empty", "author has no authorPerson, authorInstitution nor authorTelecommunication", where)
        if len(cl.slot("authorPerson")) > 1:
            out.add(f"{prefix}.author.authorPerson.multiple", "authorPerson has more than one value", where)
        for slot, check in AUTHOR_CHECKS:
            for value in cl.slot(slot):
                if problem := check(value):
                    out.add(f"{prefix}.author.{slot}.format", f"{slot} {value!r}: {problem}", _loc(obj.id, f"author[{cl.id}]/{slot}"))


def _check_external_ids(out: _Findings, prefix: str, obj, ext_ids) -> None:
    known = {scheme for _n, scheme, _c in ext_ids}
    for ei in obj.external_identifiers:
        if _norm(ei.registry_object) != _norm(obj.id):
            out.add(
                f"{prefix}.externalIdentifier.registryObject",
                f"external identifier {ei.id} inside {obj.id} belongs to {ei.registry_object!r}",
                _loc(obj.id, ei.id),
            )
        if _norm(ei.identification_scheme) not in known:
            out.add(f"{prefix}.externalIdentifier.unknown", f"unknown identificationScheme {ei.identification_scheme}", _loc(obj.id, ei.id))
    for name, scheme, check in ext_ids:
        found = ext_values(obj, scheme)
        if not found:
            out.add(f"{prefix}.{name}.required", f"{name} is missing", _loc(obj.id, name))
        elif len(found) > 1:
            out.add(f"{prefix}.{name}.multiple", f"{name} appears {len(found)} times", _loc(obj.id, name))
        for value in found:
            if problem := check(value):
                out.add(f"{prefix}.{name}.format", f"{name} {value!r}: {problem}", _loc(obj.id, name))


def _check_slots(out: _Findings, prefix: str, obj, slots) -> None:
    counts = Counter(s.name for s in obj.slots)
    for slot in obj.slots:
        spec = slots.get(slot.name)
        if spec is None:
            if slot.name.startswith("urn:") and not slot.name.startswith("urn:ihe:"):
                continue  # extra metadata, saved as is (ITI TF-3 §4.2.3.1.3)
            out.add(f"{prefix}.slot.unknown", f"slot {slot.name!r} is not XDS metadata nor extra metadata (urn:…)", _loc(obj.id, slot.name))
            continue
        check, single = spec
        if single and (len(slot.values) > 1 or counts[slot.name] > 1):
            out.add(f"{prefix}.{slot.name}.multiple", f"{slot.name} must have one value", _loc(obj.id, slot.name))
        if check:
            for value in slot.values:
                if problem := check(value):
                    out.add(f"{prefix}.{slot.name}.format", f"{slot.name} {value!r}: {problem}", _loc(obj.id, slot.name))


def _require_slot(out: _Findings, rule: str, obj, name: str) -> None:
    if not any(v.strip() for v in obj.slot(name)):
        out.add(rule, f"{name} is missing", _loc(obj.id, name))


def ext_values(obj, scheme: str) -> tuple[str, ...]:
    """All values of the external identifiers of `obj` with `scheme` (whitespace-insensitive)."""
    return tuple(e.value for e in obj.external_identifiers if _norm(e.identification_scheme) == scheme)


def _ext1(obj, scheme: str) -> str | None:
    values = ext_values(obj, scheme)
    return values[0] if values else None


def validate_document_entry(out: _Findings, de: DocumentEntry, config: ValidationConfig) -> None:
    # ITI TF-3 §4.2.3.2, Table 4.3.1-3
    if de.object_type not in C.DOC_ENTRY_TYPES:
        out.add("DE.objectType", f"objectType {de.object_type!r} is not a DocumentEntry type", _loc(de.id, "objectType"))
    if not de.mime_type:
        out.add("DE.mimeType.required", "mimeType is missing", _loc(de.id, "mimeType"))
    elif problem := F.mime_type(de.mime_type):
        out.add("DE.mimeType.format", f"mimeType {de.mime_type!r}: {problem}", _loc(de.id, "mimeType"))
    _check_classifications(out, "DE", de, DE_CODES)
    _check_authors(out, "DE", de, C.DE_AUTHOR)
    _check_external_ids(out, "DE", de, DE_EXT_IDS)
    _check_slots(out, "DE", de, DE_SLOTS)
    for title in de.name:
        # ITI TF-3 §4.2.3.2.24: the title is a string of at most 128 characters (the DMP counts
        # 128 UTF-8 bytes; this checks characters, the TF's unit), in every language given.
        if len(title.value) > F.TITLE_MAX:
            out.add("DE.title.length", f"title of {len(title.value)} characters, more than {F.TITLE_MAX}",
                    _loc(de.id, "title"))
    on_demand = de.object_type == C.DOC_ENTRY_ON_DEMAND
    for name in ("languageCode", "sourcePatientId"):
        _require_slot(out, f"DE.{name}.required", de, name)
    if not on_demand:
        _require_slot(out, "DE.creationTime.required", de, "creationTime")
    if config.transaction == "ITI-42":
        _require_slot(out, "DE.repositoryUniqueId.required", de, "repositoryUniqueId")
        if not on_demand:
            _require_slot(out, "DE.hash.required", de, "hash")
            _require_slot(out, "DE.size.required", de, "size")
    if on_demand:
        for name in ("hash", "size"):
            if de.slot(name):
                out.add(f"DE.{name}.onDemand", f"an On-Demand DocumentEntry must not carry {name}", _loc(de.id, name))


def validate_submission_set(out: _Findings, ss: SubmissionSet) -> None:
    # ITI TF-3 §4.2.3.3
    _check_classifications(out, "SS", ss, SS_CODES)
    _check_authors(out, "SS", ss, C.SS_AUTHOR)
    _check_external_ids(out, "SS", ss, SS_EXT_IDS)
    _check_slots(out, "SS", ss, SS_SLOTS)
    _require_slot(out, "SS.submissionTime.required", ss, "submissionTime")


def validate_folder(out: _Findings, fol: Folder) -> None:
    # ITI TF-3 §4.2.3.4
    _check_classifications(out, "FOL", fol, FOL_CODES)
    _check_external_ids(out, "FOL", fol, FOL_EXT_IDS)
    _check_slots(out, "FOL", fol, FOL_SLOTS)
    if not fol.name or not fol.name[0].value.strip():
        out.add("FOL.title.required", "Folder title is missing", _loc(fol.id, "title"))


# --- the submission as a whole ------------------------------------------------------------


def _all_ids(req: SubmitObjectsRequest) -> Iterable[str]:
    for obj in req.objects:
        yield obj.id
        for cl in obj.classifications:
            yield cl.id
        for ei in obj.external_identifiers:
            yield ei.id


def _check_ids(out: _Findings, req: SubmitObjectsRequest) -> None:
    seen: set[str] = set()
    for ident in _all_ids(req):
        key = _norm(ident)
        if key in seen:
            out.add("SUB.id.unique", f"id {ident!r} is used more than once", ident)
        seen.add(key)
        if ident.lower().startswith("urn:uuid:") and not is_uuid_ref(ident):
            out.add("SUB.id.uuid", f"id {ident!r} is not a valid urn:uuid:", ident)


def _check_unique_ids(out: _Findings, req: SubmitObjectsRequest) -> None:
    # XDSRegistryDuplicateUniqueIdInMessage (ITI TF-3 Table 4.2.4.1-2)
    schemes = {DocumentEntry: C.DE_UNIQUE_ID, SubmissionSet: C.SS_UNIQUE_ID, Folder: C.FOLDER_UNIQUE_ID}
    first: dict[str, str] = {}
    for obj in req.objects:
        scheme = schemes.get(type(obj))
        if scheme is None:
            continue
        for value in set(ext_values(obj, scheme)):
            if value in first:
                out.add("SUB.uniqueId.duplicate", f"uniqueId {value} is used by {first[value]} and {obj.id}", _loc(obj.id, "uniqueId"))
            else:
                first[value] = obj.id


def _check_patient(out: _Findings, req: SubmitObjectsRequest, ss: SubmissionSet | None) -> None:
    # ITI TF-2b §3.42.4.1.3: SubmissionSet, DocumentEntries and Folders share one patientId.
    if ss is None or (expected := _ext1(ss, C.SS_PATIENT_ID)) is None:
        return
    for obj, scheme in [(d, C.DE_PATIENT_ID) for d in req.documents] + [(f, C.FOLDER_PATIENT_ID) for f in req.folders]:
        value = _ext1(obj, scheme)
        if value is not None and value != expected:
            out.add(
                "SUB.patientId.match",
                f"patientId {value} of {obj.id} differs from the SubmissionSet's {expected}",
                _loc(obj.id, "patientId"),
            )


def _check_references(out: _Findings, req: SubmitObjectsRequest) -> None:
    local = {_norm(o.id) for o in req.objects}
    def resolvable(ref: str | None) -> bool:
        return _norm(ref) in local or is_uuid_ref(_norm(ref))
    for obj in req.objects:
        for cl in obj.classifications:
            if not resolvable(cl.classified_object):
                out.add("SUB.reference.dangling", f"classification {cl.id} classifies unknown object {cl.classified_object!r}", _loc(obj.id, cl.id))
        for ei in obj.external_identifiers:
            if not resolvable(ei.registry_object):
                out.add("SUB.reference.dangling", f"external identifier {ei.id} refers to unknown object {ei.registry_object!r}", _loc(obj.id, ei.id))
        if isinstance(obj, Association):
            for attr, ref in (("sourceObject", obj.source_object), ("targetObject", obj.target_object)):
                if not resolvable(ref):
                    out.add("SUB.reference.dangling", f"{attr} {ref!r} is neither in the submission nor a urn:uuid:", _loc(obj.id, attr))


def _check_associations(out: _Findings, req: SubmitObjectsRequest, ss: SubmissionSet | None) -> None:
    by_id = {_norm(o.id): o for o in req.objects}
    ss_id = _norm(ss.id) if ss else None
    members: set[str] = set()
    for a in req.associations:
        atype = normalize_association_type(a.association_type)
        src, tgt = _norm(a.source_object), _norm(a.target_object)
        source, target = by_id.get(src), by_id.get(tgt)
        if atype not in ITI42_ASSOCIATION_TYPES:
            out.add("ASSOC.type.unknown", f"associationType {a.association_type!r} is not allowed here", _loc(a.id, "associationType"))
        if _norm(a.id) in (src, tgt) or src == tgt:
            out.add("ASSOC.self", f"association {a.id} refers to itself", _loc(a.id))
            continue
        _check_association_documentation(out, a, atype)
        if atype == C.ASSOC_HAS_MEMBER:
            if src == ss_id:
                members.add(tgt)
            _check_has_member(out, a, source, target, src, tgt, ss_id)
        elif atype in C.RELATIONSHIP_TYPES:
            if not isinstance(source, DocumentEntry):
                out.add("ASSOC.relationship.source", f"source {a.source_object!r} is not a DocumentEntry of the submission", _loc(a.id, "sourceObject"))
            signs_local = atype == C.ASSOC_SIGNS and isinstance(target, (DocumentEntry, SubmissionSet))
            if not signs_local and (target is not None or not is_uuid_ref(tgt)):
                out.add("ASSOC.relationship.target", f"target {a.target_object!r} must be an existing entry's urn:uuid:", _loc(a.id, "targetObject"))
    for obj in (*req.documents, *req.folders):
        if _norm(obj.id) not in members:
            out.add("SUB.hasMember.missing", f"{obj.id} is not a member (HasMember) of the SubmissionSet", _loc(obj.id))
    for a in req.associations:
        # ITI TF-3 §4.2.2.1.3: adding a document to a folder also links the association to the SubmissionSet.
        if normalize_association_type(a.association_type) != C.ASSOC_HAS_MEMBER or _norm(a.source_object) == ss_id:
            continue
        if _norm(a.target_object) != _norm(a.id) and _norm(a.id) not in members:
            out.add("ASSOC.hasMember.folderMembership", f"Folder membership {a.id} is not a member of the SubmissionSet", _loc(a.id))


def _check_has_member(out, a: Association, source, target, src: str, tgt: str, ss_id: str | None) -> None:
    # ITI TF-3 §4.2.2.1: SS→DocumentEntry|Folder|Association, Folder→DocumentEntry.
    if src == ss_id:
        if isinstance(target, (SubmissionSet,)) or (target is None and not is_uuid_ref(tgt)):
            out.add("ASSOC.hasMember.target", f"SubmissionSet cannot contain {a.target_object!r}", _loc(a.id, "targetObject"))
        if isinstance(target, Association) and not (
            normalize_association_type(target.association_type) == C.ASSOC_HAS_MEMBER and _norm(target.source_object) != ss_id
        ):
            out.add("ASSOC.hasMember.target", f"SubmissionSet can only contain Folder membership associations, not {target.id}", _loc(a.id, "targetObject"))
        if isinstance(target, DocumentEntry) or (target is None and is_uuid_ref(tgt)):
            statuses = a.slot(C.SLOT_SUBMISSION_SET_STATUS)
            where = _loc(a.id, C.SLOT_SUBMISSION_SET_STATUS)
            if len(statuses) != 1 or statuses[0] not in SUBMISSION_SET_STATUSES:
                out.add(
                    "ASSOC.hasMember.submissionSetStatus",
                    f"SubmissionSetStatus {list(statuses)!r} must be one value, Original or Reference",
                    where,
                )
            # ITI TF-3 §4.2.2.1.1: "Original" – the DocumentEntry is submitted in this SubmissionSet;
            # "Reference" – it was registered by an earlier submission and is only referenced here.
            elif statuses[0] == "Original" and not isinstance(target, DocumentEntry):
                out.add("ASSOC.hasMember.original",
                        f"SubmissionSetStatus Original but {a.target_object!r} is not a DocumentEntry of this submission", where)
            elif statuses[0] == "Reference" and isinstance(target, DocumentEntry):
                out.add("ASSOC.hasMember.reference",
                        f"SubmissionSetStatus Reference but {a.target_object!r} is submitted here (Original)", where)
        return
    if isinstance(source, Folder) or (source is None and is_uuid_ref(src)):
        if not (isinstance(target, DocumentEntry) or (target is None and is_uuid_ref(tgt))):
            out.add("ASSOC.hasMember.target", f"a Folder can only contain DocumentEntries, not {a.target_object!r}", _loc(a.id, "targetObject"))
        return
    out.add("ASSOC.hasMember.source", f"HasMember source {a.source_object!r} is neither the SubmissionSet nor a Folder", _loc(a.id, "sourceObject"))


def _check_association_documentation(out: _Findings, a: Association, atype: str) -> None:
    # NIST test 12370; ITI TF-3 §4.2.2.2.7
    for cl in a.classifications:
        if _norm(cl.classification_scheme) != C.ASSOC_DOCUMENTATION:
            continue
        if atype not in DOCUMENTED_TYPES:
            out.add("ASSOC.documentation.notAllowed", f"documentation classification {cl.id} on a {a.association_type} association", _loc(a.id, cl.id))
            continue
        schemes = cl.slot("codingScheme")
        if not cl.node_representation or len(schemes) != 1 or not cl.name:
            out.add("ASSOC.documentation.code", f"documentation {cl.id} needs a code, one codingScheme and a Name", _loc(a.id, cl.id))


def validate_submission(
    req: SubmitObjectsRequest, config: ValidationConfig = ValidationConfig()
) -> list[RegistryError]:
    """Every metadata error of an ITI-42 (or ITI-41) submission, without touching the registry."""
    out = _Findings(config)
    sets = req.submission_sets
    if len(sets) != 1:
        out.add("SUB.submissionSet.count", f"the submission has {len(sets)} SubmissionSets, not one", "SubmitObjectsRequest")
    ss = sets[0] if sets else None
    _check_ids(out, req)
    _check_references(out, req)
    for obj in req.objects:
        if isinstance(obj, DocumentEntry):
            validate_document_entry(out, obj, config)
        elif isinstance(obj, SubmissionSet):
            validate_submission_set(out, obj)
        elif isinstance(obj, Folder):
            validate_folder(out, obj)
    if ss is not None and len(req.objects) == 1:
        # ITI TF-3 §4.1.4: a submission registers DocumentEntries, Folders and/or Associations;
        # a lone SubmissionSet would only leave an empty record behind.
        out.add("SUB.empty", "the submission holds a SubmissionSet and nothing else", ss.id)
    _check_associations(out, req, ss)
    _check_unique_ids(out, req)
    _check_patient(out, req, ss)
    return out.items


# --- helpers for the ITI-42 handler (checks that need the registry) ------------------------


def external_targets(req: SubmitObjectsRequest) -> dict[str, tuple[str, ...]]:
    """``urn:uuid:`` references of associations that are not objects of the submission, with the
    association types that use them: the entries the handler must find in the registry (and
    check for status and patient)."""
    local = {_norm(o.id) for o in req.objects}
    found: dict[str, list[str]] = {}
    for a in req.associations:
        for ref in (a.source_object, a.target_object):
            key = _norm(ref)
            if key not in local and is_uuid_ref(key):
                found.setdefault(key, []).append(normalize_association_type(a.association_type))
    return {k: tuple(v) for k, v in found.items()}


def submission_patient_id(req: SubmitObjectsRequest) -> str | None:
    """The SubmissionSet's patientId (the one the handler checks against the patient registry)."""
    sets = req.submission_sets
    return _ext1(sets[0], C.SS_PATIENT_ID) if sets else None


def has_errors(findings: Iterable[RegistryError]) -> bool:
    return any(f.is_error for f in findings)
