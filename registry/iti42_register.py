"""ITI-42 Register Document Set-b: the Document Registry's side (ITI TF-2b §3.42.4.1.3).

A pure handler: model in, `RegisterResult` out, or `XdsFailure` carrying EVERY error found.
It talks to the database only through the store's batched look-ups and `store.commit(plan)`,
which writes the whole submission in one transaction (DESIGN.md §3 rule 6). A store offering
`registration()` (`registry.store.StoreWriter`) lends one connection for the whole
registration, and `registration_lookups` answers every look-up in one query.

What the registry does here, beyond the syntax checks of `registry.validate`:
- the SubmissionSet's patient must be known (XDSUnknownPatientId, ITI TF-2b §3.42.4.1.3);
- symbolic ids become fresh `urn:uuid:` entryUUIDs wherever referenced; a supplied `urn:uuid:`
  that is already registered is XDSRegistryMetadataError (ITI TF-3 §4.2.3.1.7 entryUUID; NIST 15806);
- every new object gets status Approved, lid = entryUUID and version 1: the registry, not the
  source, sets availabilityStatus (ITI TF-2b §3.42.4.1.3, ITI TF-3 §4.2.3.2.2); the first
  version of an object has logicalId = entryUUID (ITI TF-3 §4.1.12, metadata versioning);
- uniqueIds against the registry: a DocumentEntry uniqueId already registered with the same
  hash and size is accepted, else XDSNonIdenticalHash / XDSNonIdenticalSize; a SubmissionSet or
  Folder uniqueId already registered is XDSDuplicateUniqueIdInRegistry (ITI TF-3 Table 4.2.4.1-2);
- HasMember (ITI TF-3 §4.2.2.1), folder lastUpdateTime (ITI TF-3 §4.2.3.4: set by the registry
  on creation and on every membership change; the source's value is overwritten, NIST 12323);
- document relationships RPLC/APND/XFRM/XFRM_RPLC/signs (ITI TF-2b §3.42.4.1.3.5, ITI TF-3
  §4.2.2.2): target registered (UnresolvedReferenceException), Approved
  (XDSRegistryDeprecatedDocumentError), same patient (XDSPatientIdDoesNotMatch, NIST 11998);
  a replacement deprecates the original and its Approved APND/XFRM children (NIST 12022) and
  joins every folder of the original (new HasMember associations, NIST 12327).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable

import attrs

from registry import constants as C
from registry.ebrim import set_slot
from registry.errors import RegistryError, XdsErrorCode, XdsFailure
from registry.model import (
    Association,
    Classification,
    DocumentEntry,
    ExternalIdentifier,
    Folder,
    SubmissionSet,
    SubmitObjectsRequest,
)
from registry.ports import PatientIdentities
from registry.store.write import (
    KIND_ASSOCIATION,
    KIND_DOCUMENT,
    KIND_FOLDER,
    SLOT_LAST_UPDATE_TIME,
    RegistrationLookups,
    RegistrationPlan,
    StoredObject,
)
from registry.timefmt import now_dtm
from registry.uuid7 import URN_PREFIX, uuid7_urns
from registry.validate import validate_submission

E = XdsErrorCode
VERSION_1 = "1"

# ebRS 2.1 / early ITI-42 samples use short association type names; store the ebRS 3.0 URNs.
_SHORT_ASSOCIATION_TYPES = {
    "HasMember": C.ASSOC_HAS_MEMBER,
    "RPLC": C.ASSOC_RPLC,
    "APND": C.ASSOC_APND,
    "XFRM": C.ASSOC_XFRM,
    "XFRM_RPLC": C.ASSOC_XFRM_RPLC,
    "signs": C.ASSOC_SIGNS,
}
_TARGET_MUST_BE_APPROVED = (C.ASSOC_RPLC, C.ASSOC_APND, C.ASSOC_XFRM, C.ASSOC_XFRM_RPLC)


@attrs.frozen
class RegisterResult:
    """A successful registration: warnings to return, the ids assigned, what audit needs."""

    warnings: tuple[RegistryError, ...]
    entry_uuids: dict[str, str]  # every submitted top-level id → its stored entryUUID
    submission_set_id: str
    submission_set_unique_id: str | None
    patient_id: str | None
    document_unique_ids: tuple[str, ...] = ()
    deprecated: tuple[str, ...] = ()  # entryUUIDs this submission deprecated


def normalize_association_type(value: str) -> str:
    return _SHORT_ASSOCIATION_TYPES.get(value, value)


def _err(code: XdsErrorCode, message: str, location: str = "", rule: str | None = None) -> RegistryError:
    return RegistryError(code, message, location, rule=rule)


def _run_validation(request: SubmitObjectsRequest, config: Any) -> list[RegistryError]:
    found = validate_submission(request) if config is None else validate_submission(request, config)
    return list(found)


def new_entry_uuid() -> str:
    """A fresh time-ordered (version 7) UUID as a `urn:uuid:` (`registry.uuid7` says why)."""
    return uuid7_urns(1)[0]


# --- id assignment ---------------------------------------------------------------------------


def _all_ids(request: SubmitObjectsRequest) -> list[str]:
    """Every id the submission defines: top-level objects and their nested ebRIM objects."""
    ids: list[str] = []
    for o in request.objects:
        ids.append(o.id)
        ids.extend(c.id for c in o.classifications)
        ids.extend(e.id for e in o.external_identifiers)
    return ids


def assign_entry_uuids(
    request: SubmitObjectsRequest, new_uuid: Callable[[], str]
) -> dict[str, str]:
    """Map each id to its entryUUID: `urn:uuid:` ids are kept, symbolic ids get a fresh one
    (ITI TF-2b §3.42.4.1.3: the registry assigns entryUUIDs to symbolic ids)."""
    mapping: dict[str, str] = {}
    for i in _all_ids(request):
        if i in mapping:
            continue
        mapping[i] = i if i.startswith(URN_PREFIX) else new_uuid()
    return mapping


class _UuidBatch:
    """`new_entry_uuid` drawing from one os.urandom call per submission (ids come in bulk)."""

    def __init__(self, expected: int) -> None:
        self._pending = uuid7_urns(max(expected, 1))

    def __call__(self) -> str:
        if not self._pending:
            self._pending = uuid7_urns(8)
        return self._pending.pop()


def _m(mapping: dict[str, str], ref: str | None) -> str | None:
    return None if ref is None else mapping.get(ref, ref)


_INIT_NAMES: dict[type, tuple[str, ...]] = {}


def _evolve(obj, **changes):
    """`attrs.evolve` for the model's frozen classes (no converters, no init=False fields),
    without its per-call field introspection: ids are remapped on every object of a submission."""
    cls = obj.__class__
    names = _INIT_NAMES.get(cls)
    if names is None:
        names = _INIT_NAMES[cls] = tuple(a.alias for a in attrs.fields(cls) if a.init)
    for n in names:
        if n not in changes:
            changes[n] = getattr(obj, n)
    return cls(**changes)


def _classification(c: Classification, mapping: dict[str, str]) -> Classification:
    return _evolve(c, id=mapping.get(c.id, c.id), classified_object=_m(mapping, c.classified_object))


def _external_identifier(e: ExternalIdentifier, mapping: dict[str, str]) -> ExternalIdentifier:
    return _evolve(e, id=mapping.get(e.id, e.id), registry_object=_m(mapping, e.registry_object))


def _stamp(obj, mapping: dict[str, str]):
    """A new registry object as stored: entryUUID, lid, version 1, Approved, nested ids mapped."""
    new_id = mapping.get(obj.id, obj.id)
    return _evolve(
        obj,
        id=new_id,
        lid=new_id,  # ITI TF-3 §4.1.12: a first version's logicalId is its entryUUID
        version_name=VERSION_1,
        status=C.STATUS_APPROVED,  # the registry sets availabilityStatus (source value ignored)
        classifications=tuple(_classification(c, mapping) for c in obj.classifications),
        external_identifiers=tuple(_external_identifier(e, mapping) for e in obj.external_identifiers),
    )


# --- the handler -----------------------------------------------------------------------------


@attrs.define
class _Check:
    """Working state of one registration: the request, resolved ids, and the errors found."""

    request: SubmitObjectsRequest
    store: Any
    mapping: dict[str, str]
    ss: SubmissionSet
    patient_id: str | None
    errors: list[RegistryError] = attrs.Factory(list)
    new_docs: dict[str, DocumentEntry] = attrs.Factory(dict)  # by entryUUID
    new_folders: dict[str, Folder] = attrs.Factory(dict)
    new_assocs: dict[str, Association] = attrs.Factory(dict)
    existing: dict[str, StoredObject] = attrs.Factory(dict)

    def add(self, *a, **kw) -> None:
        self.errors.append(_err(*a, **kw))


def register(
    request: SubmitObjectsRequest,
    store,
    *,
    config: Any = None,
    patients: PatientIdentities | None = None,
    now: str | None = None,
    new_uuid: Callable[[], str] | None = None,
) -> RegisterResult:
    """Register one SubmitObjectsRequest atomically (ITI TF-2b §3.42.4.1.3).

    `store` offers the look-ups and `commit` of `registry.store.StoreWriter`; `patients` is the
    PatientIdentities port (defaults to the store); `now` is the registry time as a DTM.
    """
    stamp = now or now_dtm()

    found = _run_validation(request, config)
    errors = [e for e in found if e.is_error]
    warnings = [e for e in found if not e.is_error]

    sets = request.submission_sets
    if len(sets) != 1:
        # ITI TF-2b §3.42.4.1.3: exactly one SubmissionSet per submission; nothing else can be checked.
        if not errors:  # the validator reports it (rule SUB.submissionSet.count) when present
            errors.append(
                _err(E.XDSRegistryMetadataError, f"expected one SubmissionSet, found {len(sets)}",
                     rule="iti42.submission_set.count")
            )
        raise XdsFailure(errors + warnings)

    if new_uuid is None:
        new_uuid = _UuidBatch(len(_all_ids(request)))
    mapping = assign_entry_uuids(request, new_uuid)
    ss = sets[0]
    chk = _Check(request, store, mapping, ss, ss.patient_id, errors)
    session = store.registration() if hasattr(store, "registration") else nullcontext(store)
    with session as tx:
        chk.store = tx
        found_in_registry = _lookup(chk, tx, patients)
        _check_patients(chk, found_in_registry, patients, validator_checked=any(
            e.code == E.XDSPatientIdDoesNotMatch for e in found))
        _index_new_objects(chk)
        _check_existing(chk, found_in_registry)
        _check_unique_ids(chk, found_in_registry)
        plan_extra = _check_associations(chk)

        if chk.errors:
            raise XdsFailure(chk.errors + warnings)

        plan = _build_plan(chk, plan_extra, stamp, new_uuid)
        tx.commit(plan)
    return RegisterResult(
        warnings=tuple(warnings),
        entry_uuids={o.id: mapping[o.id] for o in request.objects},
        submission_set_id=mapping[ss.id],
        submission_set_unique_id=ss.unique_id,
        patient_id=ss.patient_id,
        document_unique_ids=tuple(d.unique_id for d in request.documents if d.unique_id),
        deprecated=(*plan.replaced, *plan.deprecated_children),
    )


def _lookup(chk: _Check, tx, patients: PatientIdentities | None) -> RegistrationLookups:
    """Everything the checks below need from the registry, in one query when the store can
    (`registration_lookups`): whether the patient is known (when the store is the patient
    port), supplied entryUUIDs and association ends outside the submission, uniqueIds."""
    supplied = [o.id for o in chk.request.objects if o.id.startswith(URN_PREFIX)]
    wanted = dict(
        patient_id=chk.patient_id if patients is None else None,
        ids=[*supplied, *_references(chk)],
        document_unique_ids=[d.unique_id for d in chk.request.documents if d.unique_id],
        submission_set_unique_ids=[chk.ss.unique_id] if chk.ss.unique_id else [],
        folder_unique_ids=[f.unique_id for f in chk.request.folders if f.unique_id],
    )
    combined = getattr(tx, "registration_lookups", None)
    if combined is not None:
        return combined(**wanted)
    # A store with only the single look-ups (one query each).
    pid = wanted["patient_id"]
    return RegistrationLookups(
        patient_known=None if pid is None else tx.is_known(pid),
        objects=tx.objects_by_id(wanted["ids"]) if wanted["ids"] else {},
        documents=tx.documents_by_unique_id(wanted["document_unique_ids"]),
        submission_set_unique_ids=frozenset(
            tx.existing_submission_set_unique_ids(wanted["submission_set_unique_ids"])),
        folder_unique_ids=frozenset(tx.existing_folder_unique_ids(wanted["folder_unique_ids"])),
    )


def _check_patients(chk: _Check, found: RegistrationLookups, patients: PatientIdentities | None,
                    *, validator_checked: bool) -> None:
    pid = chk.patient_id
    if pid is None:
        return  # a missing patientId is a metadata error the validator reports
    # ITI TF-2b §3.42.4.1.3 / ITI TF-3 Table 4.2.4.1-2: the patient must be known to the registry.
    known = found.patient_known if patients is None else patients.is_known(pid)
    if not known:
        chk.add(E.XDSUnknownPatientId, f"patient {pid} is not known to the registry",
                location=chk.ss.id, rule="iti42.patient.known")
    if validator_checked:
        return
    # ITI TF-2b §3.42.4.1.3: every DocumentEntry and Folder has the SubmissionSet's patient.
    for o in (*chk.request.documents, *chk.request.folders):
        if o.patient_id is not None and o.patient_id != pid:
            chk.add(E.XDSPatientIdDoesNotMatch,
                    f"{o.id} has patient {o.patient_id}, the SubmissionSet has {pid}",
                    location=o.id, rule="iti42.patient.same")


def _index_new_objects(chk: _Check) -> None:
    m = chk.mapping
    for d in chk.request.documents:
        chk.new_docs[m[d.id]] = d
    for f in chk.request.folders:
        chk.new_folders[m[f.id]] = f
    for a in chk.request.associations:
        chk.new_assocs[m[a.id]] = a


def _references(chk: _Check) -> set[str]:
    """Association ends that may be in the registry: not the fresh entryUUIDs this submission
    just assigned to its symbolic ids (nothing can hold those yet)."""
    fresh = {v for k, v in chk.mapping.items() if k != v}
    refs: set[str] = set()
    for a in chk.request.associations:
        refs.update((_m(chk.mapping, a.source_object), _m(chk.mapping, a.target_object)))
    return {r for r in refs if r and r not in fresh}


def _check_existing(chk: _Check, found: RegistrationLookups) -> None:
    """Supplied entryUUIDs must be new; `chk.existing` keeps the registered association ends."""
    supplied = [o.id for o in chk.request.objects if o.id.startswith(URN_PREFIX)]
    chk.existing = found.objects
    for i in supplied:
        if i in chk.existing:
            # An entryUUID supplied by the source must be new (NIST 15806).
            chk.add(E.XDSRegistryMetadataError, f"entryUUID {i} is already registered",
                    location=i, rule="iti42.entry_uuid.new")


def _check_unique_ids(chk: _Check, found: RegistrationLookups) -> None:
    docs = chk.request.documents
    stored = found.documents
    for d in docs:
        for old in stored.get(d.unique_id, ()):
            # ITI TF-3 Table 4.2.4.1-2: same uniqueId must mean the same document.
            new_hash, new_size = d.slot1("hash"), d.slot1("size")
            if new_hash and old.hash and new_hash.lower() != old.hash.lower():
                chk.add(E.XDSNonIdenticalHash,
                        f"document {d.unique_id} is registered with hash {old.hash}, not {new_hash}",
                        location=d.id, rule="iti42.unique_id.hash")
                break
            if new_size and old.size is not None and new_size.strip() != str(old.size):
                chk.add(E.XDSNonIdenticalSize,
                        f"document {d.unique_id} is registered with size {old.size}, not {new_size}",
                        location=d.id, rule="iti42.unique_id.size")
                break
    if chk.ss.unique_id and chk.ss.unique_id in found.submission_set_unique_ids:
        chk.add(E.XDSDuplicateUniqueIdInRegistry,
                f"SubmissionSet uniqueId {chk.ss.unique_id} is already registered",
                location=chk.ss.id, rule="iti42.unique_id.submission_set")
    taken = found.folder_unique_ids
    for f in chk.request.folders:
        if f.unique_id in taken:
            chk.add(E.XDSDuplicateUniqueIdInRegistry,
                    f"Folder uniqueId {f.unique_id} is already registered",
                    location=f.id, rule="iti42.unique_id.folder")


@attrs.frozen
class _Extra:
    replaced: dict[str, str]  # original entryUUID → replacement entryUUID
    updated_folders: tuple[str, ...]


def _kind(chk: _Check, ref: str) -> str | None:
    if ref in chk.new_docs:
        return KIND_DOCUMENT
    if ref in chk.new_folders:
        return KIND_FOLDER
    if ref in chk.new_assocs:
        return KIND_ASSOCIATION
    if ref == chk.mapping[chk.ss.id]:
        return "SubmissionSet"
    return None


def _unresolved(chk: _Check, a: Association, ref: str, what: str) -> None:
    # ITI TF-2b §3.42.4.1.3.5: a reference to an object neither in the submission nor in the
    # registry is UnresolvedReferenceException (symbolic ids must resolve in the submission).
    chk.add(E.UnresolvedReferenceException,
            f"association {a.id}: {what} {ref} is neither in the submission nor in the registry",
            location=a.id, rule="iti42.association.resolved")


def _same_patient(chk: _Check, a: Association, obj: StoredObject) -> None:
    if chk.patient_id and obj.patient_id and obj.patient_id != chk.patient_id:
        chk.add(E.XDSPatientIdDoesNotMatch,
                f"association {a.id}: {obj.kind} {obj.id} belongs to patient {obj.patient_id}, "
                f"the submission to {chk.patient_id}",
                location=a.id, rule="iti42.association.patient")


def _check_associations(chk: _Check) -> _Extra:
    replaced: dict[str, str] = {}
    updated_folders: list[str] = []
    ss_id = chk.mapping[chk.ss.id]
    for a in chk.request.associations:
        atype = normalize_association_type(a.association_type)
        src, tgt = _m(chk.mapping, a.source_object), _m(chk.mapping, a.target_object)
        if atype == C.ASSOC_HAS_MEMBER:
            _check_has_member(chk, a, src, tgt, ss_id, updated_folders)
        elif atype in C.RELATIONSHIP_TYPES:
            _check_relationship(chk, a, atype, src, tgt, replaced)
        else:
            chk.add(E.XDSRegistryMetadataError, f"association {a.id}: unknown type {a.association_type}",
                    location=a.id, rule="iti42.association.type")
    return _Extra(replaced, tuple(dict.fromkeys(updated_folders)))


def _check_has_member(chk: _Check, a, src: str, tgt: str, ss_id: str, updated_folders: list) -> None:
    # ITI TF-3 §4.2.2.1: HasMember from the SubmissionSet (to entries, folders, associations)
    # or from a Folder (to DocumentEntries).
    if src == ss_id:
        if _kind(chk, tgt) is not None and _kind(chk, tgt) != "SubmissionSet":
            return
        old = chk.existing.get(tgt)
        if old is None:
            _unresolved(chk, a, tgt, "target")
        elif old.kind in (KIND_DOCUMENT, KIND_FOLDER):
            _same_patient(chk, a, old)  # SubmissionSetStatus=Reference to an existing entry
        else:
            chk.add(E.XDSRegistryMetadataError,
                    f"association {a.id}: a SubmissionSet cannot hold existing {old.kind} {tgt}",
                    location=a.id, rule="iti42.has_member.target")
        return
    src_kind = _kind(chk, src)
    old_folder = chk.existing.get(src)
    if src_kind != KIND_FOLDER and not (old_folder and old_folder.kind == KIND_FOLDER):
        if src_kind is None and old_folder is None:
            _unresolved(chk, a, src, "source")
        else:
            chk.add(E.XDSRegistryMetadataError,
                    f"association {a.id}: HasMember source must be the SubmissionSet or a Folder",
                    location=a.id, rule="iti42.has_member.source")
        return
    if old_folder is not None and src_kind is None:
        _same_patient(chk, a, old_folder)
        updated_folders.append(src)  # ITI TF-3 §4.2.3.4: membership change → lastUpdateTime
    if _kind(chk, tgt) == KIND_DOCUMENT:
        return
    old_doc = chk.existing.get(tgt)
    if old_doc is None:
        if _kind(chk, tgt) is None:
            _unresolved(chk, a, tgt, "target")
        else:
            chk.add(E.XDSRegistryMetadataError,
                    f"association {a.id}: a Folder holds only DocumentEntries",
                    location=a.id, rule="iti42.has_member.folder_target")
    elif old_doc.kind != KIND_DOCUMENT:
        chk.add(E.XDSRegistryMetadataError,
                f"association {a.id}: a Folder holds only DocumentEntries, {tgt} is a {old_doc.kind}",
                location=a.id, rule="iti42.has_member.folder_target")
    else:
        _same_patient(chk, a, old_doc)  # NIST 12002


def _check_relationship(chk: _Check, a, atype: str, src: str, tgt: str, replaced: dict) -> None:
    # ITI TF-2b §3.42.4.1.3.5 / ITI TF-3 §4.2.2.2: source is a new DocumentEntry of this
    # submission; target an existing DocumentEntry (signs may also target this submission).
    if _kind(chk, src) != KIND_DOCUMENT:
        chk.add(E.XDSRegistryMetadataError,
                f"association {a.id}: the source of a document relationship must be a "
                f"DocumentEntry of this submission",
                location=a.id, rule="iti42.relationship.source")
        return
    if atype == C.ASSOC_SIGNS and _kind(chk, tgt) is not None:
        return
    old = chk.existing.get(tgt)
    if old is None:
        if _kind(chk, tgt) is None:
            _unresolved(chk, a, tgt, "target")
        else:
            chk.add(E.XDSRegistryMetadataError,
                    f"association {a.id}: the target of {atype.rsplit(':', 1)[-1]} must be a "
                    f"DocumentEntry already in the registry",
                    location=a.id, rule="iti42.relationship.target")
        return
    if old.kind != KIND_DOCUMENT and atype != C.ASSOC_SIGNS:
        chk.add(E.XDSRegistryMetadataError,
                f"association {a.id}: target {tgt} is a {old.kind}, not a DocumentEntry",
                location=a.id, rule="iti42.relationship.target")
        return
    _same_patient(chk, a, old)  # NIST 11998
    if atype == C.ASSOC_IS_SNAPSHOT_OF:
        _check_snapshot(chk, a, src, tgt, old)
    if atype in _TARGET_MUST_BE_APPROVED and old.status != C.STATUS_APPROVED:
        chk.add(E.XDSRegistryDeprecatedDocumentError,
                f"association {a.id}: target {tgt} is not Approved ({old.status})",
                location=a.id, rule="iti42.relationship.approved")
        return
    if atype in C.REPLACING_TYPES:
        if tgt in replaced:
            chk.add(E.XDSRegistryMetadataError,
                    f"association {a.id}: {tgt} is replaced twice in this submission",
                    location=a.id, rule="iti42.relationship.replace_once")
            return
        replaced[tgt] = src


def _check_snapshot(chk: _Check, a, src: str, tgt: str, old: StoredObject) -> None:
    # ITI TF-3 §4.2.2.2 (IsSnapshotOf): the source is a Stable DocumentEntry holding a snapshot of
    # the content of the target, an On-Demand DocumentEntry.
    if chk.new_docs[src].object_type != C.DOC_ENTRY_STABLE:
        chk.add(E.XDSRegistryMetadataError,
                f"association {a.id}: the source of IsSnapshotOf must be a Stable DocumentEntry",
                location=a.id, rule="iti42.relationship.snapshot")
    if old.object_type != C.DOC_ENTRY_ON_DEMAND:
        chk.add(E.XDSRegistryMetadataError,
                f"association {a.id}: the target of IsSnapshotOf must be an On-Demand DocumentEntry, "
                f"{tgt} is a Stable one",
                location=a.id, rule="iti42.relationship.snapshot")


# --- the plan --------------------------------------------------------------------------------


def _build_plan(chk: _Check, extra: _Extra, now: str, new_uuid: Callable[[], str]) -> RegistrationPlan:
    m = chk.mapping
    ss = _stamp(chk.ss, m)
    docs = tuple(_stamp(d, m) for d in chk.request.documents)
    folders = tuple(
        set_slot(_stamp(f, m), SLOT_LAST_UPDATE_TIME, (now,))
        for f in chk.request.folders
    )
    assocs = [
        _evolve(
            _stamp(a, m),
            association_type=normalize_association_type(a.association_type),
            source_object=_m(m, a.source_object),
            target_object=_m(m, a.target_object),
        )
        for a in chk.request.associations
    ]
    updated_folders = list(extra.updated_folders)
    originals = list(extra.replaced)
    children: list[str] = []
    if originals:
        # Look-ups only needed for a replacement (one query each).
        store_folders = chk.store.folders_containing(originals)
        store_children = chk.store.approved_children(originals)
        assocs.extend(_replacement_folder_members(chk, extra, store_folders, assocs, ss.id,
                                                  updated_folders, new_uuid))
        for o in originals:
            children.extend(c for c in store_children.get(o, ()) if c not in extra.replaced)
    return RegistrationPlan(
        submission_set=ss,
        documents=docs,
        folders=folders,
        associations=tuple(assocs),
        replaced=tuple(originals),
        deprecated_children=tuple(dict.fromkeys(children)),
        updated_folders=tuple(dict.fromkeys(updated_folders)),
        last_update_time=now,
    )


def _replacement_folder_members(
    chk: _Check,
    extra: _Extra,
    folders_of: dict[str, list[str]],
    assocs: list[Association],
    ss_id: str,
    updated_folders: list[str],
    new_uuid: Callable[[], str],
) -> list[Association]:
    """ITI TF-2b §3.42.4.1.3.5: the replacement joins every folder the original was in; the
    registry creates the Folder→DocumentEntry HasMember (and the SubmissionSet's HasMember to
    it), and each folder's lastUpdateTime changes (NIST 12327)."""
    explicit = {
        (a.source_object, a.target_object)
        for a in assocs
        if a.association_type == C.ASSOC_HAS_MEMBER
    }
    created: list[Association] = []
    for original, replacement in extra.replaced.items():
        for folder_id in folders_of.get(original, ()):
            updated_folders.append(folder_id)
            if (folder_id, replacement) in explicit:
                continue
            explicit.add((folder_id, replacement))
            member = Association(
                id=new_uuid(), association_type=C.ASSOC_HAS_MEMBER, source_object=folder_id,
                target_object=replacement, lid=None, status=C.STATUS_APPROVED,
            )
            member = attrs.evolve(member, lid=member.id, version_name=VERSION_1)
            ss_member = Association(
                id=new_uuid(), association_type=C.ASSOC_HAS_MEMBER, source_object=ss_id,
                target_object=member.id, status=C.STATUS_APPROVED,
            )
            ss_member = attrs.evolve(ss_member, lid=ss_member.id, version_name=VERSION_1)
            created.extend((member, ss_member))
    return created

