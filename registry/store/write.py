"""The registry store's write side: patients, the look-ups ITI-42 needs, and the atomic commit.

Every look-up is one batched query (no N+1). `StoreWriter.commit` writes a whole
`RegistrationPlan` in ONE database transaction (DESIGN.md §3 rule 6): new rows with
executemany-style inserts, then status changes and folder lastUpdateTime changes.
Uniqueness (entryUUID, SubmissionSet/Folder uniqueId) is enforced by the database, so two
nodes racing the same submission cannot both win (DESIGN.md §5).
"""

from __future__ import annotations

import datetime as _dt
from typing import Iterable, Sequence

import attrs
from lxml import etree
from sqlalchemy import bindparam, func, insert, literal, select, union_all, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from registry import constants as C
from registry.ebrim import element_to_object, object_to_bytes, replace_status_in_fragment, set_slot
from registry.errors import InfrastructureError, RegistryError, XdsErrorCode, XdsFailure
from registry.model import Association, DocumentEntry, Folder, SubmissionSet
from registry.timefmt import dtm_key as _dtm_key
from registry.timefmt import now_dtm
from registry.schema import (
    association,
    document_author,
    document_code,
    document_entry,
    document_reference_id,
    folder,
    folder_code,
    patient,
    submission_set,
    submission_set_author,
)

KIND_DOCUMENT = "DocumentEntry"
KIND_FOLDER = "Folder"
KIND_SUBMISSION_SET = "SubmissionSet"
KIND_ASSOCIATION = "Association"

SLOT_LAST_UPDATE_TIME = "lastUpdateTime"  # ITI TF-3 §4.2.3.4 (XDSFolder.lastUpdateTime)


def dtm_key(value: str | None) -> str | None:
    """A DTM (ITI TF-3 §4.2.3.1.5) as the 14-digit key of the `*_time` columns; None if absent
    or invalid (the validator reports invalid values; the store never fails on them)."""
    if value is None:
        return None
    try:
        return _dtm_key(value.strip())
    except ValueError:
        return None


def utc_dtm(now: _dt.datetime | None = None) -> str:
    """Current UTC time as a 14-digit DTM (second precision)."""
    return now_dtm(now)


# --- look-up results -----------------------------------------------------------------------


@attrs.frozen
class StoredDocument:
    """What ITI-42 needs to know about an existing DocumentEntry with a given uniqueId."""

    id: str
    unique_id: str
    patient_id: str
    hash: str | None
    size: int | None
    status: str


@attrs.frozen
class StoredObject:
    """An existing registry object found by entryUUID (patient_id is None for associations)."""

    id: str
    kind: str  # KIND_DOCUMENT | KIND_FOLDER | KIND_SUBMISSION_SET | KIND_ASSOCIATION
    patient_id: str | None
    status: str
    lid: str | None


# --- the plan ------------------------------------------------------------------------------


@attrs.frozen
class RegistrationPlan:
    """Everything one submission writes, fully resolved by the handler (entryUUIDs, lid, status).

    `replaced` are the targets of RPLC / XFRM_RPLC: each must still be Approved when the
    transaction runs (else XDSRegistryDeprecatedDocumentError: another node replaced it first);
    `deprecated_children` (their APND/XFRM children, ITI TF-2b §3.42.4.1.3.5) are deprecated
    if still Approved. `updated_folders` are existing folders whose membership changed: their
    lastUpdateTime becomes `last_update_time` (ITI TF-3 §4.2.3.4).
    """

    submission_set: SubmissionSet | None = None
    documents: tuple[DocumentEntry, ...] = ()
    folders: tuple[Folder, ...] = ()
    associations: tuple[Association, ...] = ()
    replaced: tuple[str, ...] = ()
    deprecated_children: tuple[str, ...] = ()
    updated_folders: tuple[str, ...] = ()
    last_update_time: str | None = None


# --- rows ----------------------------------------------------------------------------------


def _serialize(obj) -> bytes:
    return object_to_bytes(obj)


def _replace_status(xml: bytes, status: str) -> bytes:
    return replace_status_in_fragment(xml, status)


def _version(version_name: str | None) -> int:
    return int(version_name) if version_name and version_name.isdigit() else 1


def _size(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


def _code_rows(d: DocumentEntry) -> list[dict]:
    return [
        {"entry_id": d.id, "scheme": name, "code": code.code, "coding_scheme": code.coding_scheme}
        for name, scheme in C.DE_CODE_SCHEMES.items()
        for code in d.codes(scheme)
    ]


def document_rows(d: DocumentEntry, submission_set_id: str | None, xml: bytes) -> dict[str, list[dict]]:
    row = {
        "id": d.id,
        "lid": d.lid or d.id,
        "version": _version(d.version_name),
        "unique_id": d.unique_id,
        "patient_id": d.patient_id,
        "status": d.status or C.STATUS_APPROVED,
        "object_type": d.object_type or C.DOC_ENTRY_STABLE,
        "creation_time": dtm_key(d.slot1("creationTime")),
        "service_start_time": dtm_key(d.slot1("serviceStartTime")),
        "service_stop_time": dtm_key(d.slot1("serviceStopTime")),
        "repository_unique_id": d.slot1("repositoryUniqueId"),
        "hash": d.slot1("hash"),
        "size": _size(d.slot1("size")),
        "mime_type": d.mime_type,
        "home": d.home,
        "submission_set_id": submission_set_id,
        "xml": xml,
    }
    return {
        "document_entry": [row],
        "document_code": _code_rows(d),
        "document_author": [
            {"entry_id": d.id, "person": a.person} for a in d.authors if a.person
        ],
        "document_reference_id": [
            {"entry_id": d.id, "reference_id": r} for r in d.reference_ids
        ],
    }


def submission_set_rows(ss: SubmissionSet, xml: bytes) -> dict[str, list[dict]]:
    content = ss.codes(C.SS_CONTENT_TYPE_CODE)
    row = {
        "id": ss.id,
        "unique_id": ss.unique_id,
        "patient_id": ss.patient_id,
        "source_id": ss.source_id,
        "submission_time": dtm_key(ss.slot1("submissionTime")),
        "status": ss.status or C.STATUS_APPROVED,
        "content_type_code": content[0].code if content else None,
        "content_type_coding_scheme": content[0].coding_scheme if content else None,
        "home": ss.home,
        "xml": xml,
    }
    return {
        "submission_set": [row],
        "submission_set_author": [
            {"ss_id": ss.id, "person": a.person} for a in ss.authors if a.person
        ],
    }


def folder_rows(f: Folder, xml: bytes) -> dict[str, list[dict]]:
    row = {
        "id": f.id,
        "lid": f.lid or f.id,
        "version": _version(f.version_name),
        "unique_id": f.unique_id,
        "patient_id": f.patient_id,
        "status": f.status or C.STATUS_APPROVED,
        "last_update_time": dtm_key(f.slot1(SLOT_LAST_UPDATE_TIME)),
        "home": f.home,
        "xml": xml,
    }
    return {
        "folder": [row],
        "folder_code": [
            {"folder_id": f.id, "code": c.code, "coding_scheme": c.coding_scheme}
            for c in f.codes(C.FOLDER_CODE_LIST)
        ],
    }


def association_rows(a: Association, xml: bytes) -> dict[str, list[dict]]:
    return {
        "association": [
            {
                "id": a.id,
                "association_type": a.association_type,
                "source_id": a.source_object,
                "target_id": a.target_object,
                "status": a.status or C.STATUS_APPROVED,
                "submission_set_status": a.submission_set_status,
                "xml": xml,
            }
        ]
    }


# Insert order: parents first (no foreign keys today, but keep it natural).
_TABLES = {
    t.name: t
    for t in (
        submission_set,
        submission_set_author,
        folder,
        folder_code,
        document_entry,
        document_code,
        document_author,
        document_reference_id,
        association,
    )
}


def plan_rows(plan: RegistrationPlan) -> dict[str, list[dict]]:
    """Every row a plan inserts, by table name (pure; serialises each object once)."""
    rows: dict[str, list[dict]] = {name: [] for name in _TABLES}

    def add(part: dict[str, list[dict]]) -> None:
        for name, lst in part.items():
            rows[name].extend(lst)

    ss_id = plan.submission_set.id if plan.submission_set is not None else None
    if plan.submission_set is not None:
        add(submission_set_rows(plan.submission_set, _serialize(plan.submission_set)))
    for f in plan.folders:
        add(folder_rows(f, _serialize(f)))
    for d in plan.documents:
        add(document_rows(d, ss_id, _serialize(d)))
    for a in plan.associations:
        add(association_rows(a, _serialize(a)))
    return rows


# --- stored fragments ----------------------------------------------------------------------

_FRAGMENT_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def set_slot_in_fragment(xml: bytes, name: str, values: Sequence[str]) -> bytes:
    """A stored ebRIM fragment with one top-level slot set (through the codec, not by text)."""
    obj = element_to_object(etree.fromstring(xml, _FRAGMENT_PARSER))
    return object_to_bytes(set_slot(obj, name, values))


# --- error mapping -------------------------------------------------------------------------


def _is_unique_violation(exc: IntegrityError) -> bool:
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate is not None:
        return sqlstate == "23505"  # PostgreSQL unique_violation
    text = str(orig).lower()
    return "unique constraint failed" in text  # SQLite


def duplicate_failure(exc: BaseException | None = None) -> XdsFailure:
    return XdsFailure(
        RegistryError(
            XdsErrorCode.XDSDuplicateUniqueIdInRegistry,
            "an object of this submission (entryUUID or SubmissionSet/Folder uniqueId) was "
            "registered concurrently",
            rule="store.unique",
        )
    )


# --- the writer ----------------------------------------------------------------------------


class StoreWriter:
    """Write side of the registry store over a SQLAlchemy Engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # patients (ITI TF-2a §3.8; fed by PIX later) ---------------------------------------------

    def add_patient(self, cx: str, *, now: str | None = None) -> bool:
        """Make a patient known; True if it was new. Idempotent (also under races)."""
        try:
            with self.engine.begin() as c:
                if c.execute(select(patient.c.patient_id).where(patient.c.patient_id == cx)).first():
                    return False
                c.execute(insert(patient).values(patient_id=cx, created_at=now or utc_dtm()))
                return True
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                return False
            raise InfrastructureError(f"add_patient failed: {exc}") from exc
        except SQLAlchemyError as exc:
            raise InfrastructureError(f"add_patient failed: {exc}") from exc

    def is_known_patient(self, cx: str) -> bool:
        try:
            with self.engine.connect() as c:
                return (
                    c.execute(select(patient.c.patient_id).where(patient.c.patient_id == cx)).first()
                    is not None
                )
        except SQLAlchemyError as exc:
            raise InfrastructureError(f"patient look-up failed: {exc}") from exc

    # The PatientIdentities port (registry/ports.py).
    def is_known(self, patient_id: str) -> bool:
        return self.is_known_patient(patient_id)

    def import_patients(self, cxs: Iterable[str], *, batch: int = 1000, now: str | None = None) -> int:
        """Add many patients (blank lines ignored); returns how many were new."""
        stamp = now or utc_dtm()
        added = 0
        chunk: list[str] = []

        def flush() -> int:
            wanted = list(dict.fromkeys(chunk))
            chunk.clear()
            if not wanted:
                return 0
            try:
                with self.engine.begin() as c:
                    known = set(
                        c.execute(
                            select(patient.c.patient_id).where(patient.c.patient_id.in_(wanted))
                        ).scalars()
                    )
                    new = [{"patient_id": p, "created_at": stamp} for p in wanted if p not in known]
                    if new:
                        c.execute(insert(patient), new)
                    return len(new)
            except IntegrityError:
                # a concurrent import added some of them: fall back to one at a time
                return sum(self.add_patient(p, now=stamp) for p in wanted)
            except SQLAlchemyError as exc:
                raise InfrastructureError(f"patient import failed: {exc}") from exc

        for raw in cxs:
            cx = raw.strip()
            if cx:
                chunk.append(cx)
            if len(chunk) >= batch:
                added += flush()
        added += flush()
        return added

    # look-ups for ITI-42 (one query each) ----------------------------------------------------

    def _read(self, stmt):
        try:
            with self.engine.connect() as c:
                return c.execute(stmt).all()
        except SQLAlchemyError as exc:
            raise InfrastructureError(f"registry look-up failed: {exc}") from exc

    def documents_by_unique_id(self, unique_ids: Iterable[str]) -> dict[str, list[StoredDocument]]:
        uids = sorted(set(unique_ids))
        if not uids:
            return {}
        de = document_entry.c
        rows = self._read(
            select(de.id, de.unique_id, de.patient_id, de.hash, de.size, de.status).where(
                de.unique_id.in_(uids)
            )
        )
        out: dict[str, list[StoredDocument]] = {}
        for r in rows:
            out.setdefault(r.unique_id, []).append(
                StoredDocument(r.id, r.unique_id, r.patient_id, r.hash, r.size, r.status)
            )
        return out

    def objects_by_id(self, ids: Iterable[str]) -> dict[str, StoredObject]:
        """Existing DocumentEntries, Folders, SubmissionSets and Associations by entryUUID."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        de, fo, ss, asc = document_entry.c, folder.c, submission_set.c, association.c
        null_cx = literal(None).cast(document_entry.c.patient_id.type)
        stmt = union_all(
            select(de.id, literal(KIND_DOCUMENT).label("kind"), de.patient_id, de.status, de.lid).where(
                de.id.in_(wanted)
            ),
            select(fo.id, literal(KIND_FOLDER).label("kind"), fo.patient_id, fo.status, fo.lid).where(
                fo.id.in_(wanted)
            ),
            select(
                ss.id, literal(KIND_SUBMISSION_SET).label("kind"), ss.patient_id, ss.status,
                ss.id.label("lid"),
            ).where(ss.id.in_(wanted)),
            select(
                asc.id, literal(KIND_ASSOCIATION).label("kind"), null_cx.label("patient_id"),
                asc.status, asc.id.label("lid"),
            ).where(asc.id.in_(wanted)),
        )
        return {r.id: StoredObject(r.id, r.kind, r.patient_id, r.status, r.lid) for r in self._read(stmt)}

    def existing_ids(self, ids: Iterable[str]) -> set[str]:
        return set(self.objects_by_id(ids))

    def existing_submission_set_unique_ids(self, unique_ids: Iterable[str]) -> set[str]:
        uids = sorted(set(unique_ids))
        if not uids:
            return set()
        rows = self._read(select(submission_set.c.unique_id).where(submission_set.c.unique_id.in_(uids)))
        return {r.unique_id for r in rows}

    def existing_folder_unique_ids(self, unique_ids: Iterable[str]) -> set[str]:
        uids = sorted(set(unique_ids))
        if not uids:
            return set()
        rows = self._read(select(folder.c.unique_id).where(folder.c.unique_id.in_(uids)).distinct())
        return {r.unique_id for r in rows}

    def folders_containing(self, document_ids: Iterable[str]) -> dict[str, list[str]]:
        """Approved folders holding each document (Folder→DocumentEntry HasMember)."""
        ids = sorted(set(document_ids))
        if not ids:
            return {}
        a = association.c
        stmt = (
            select(a.target_id, a.source_id)
            .join(folder, folder.c.id == a.source_id)
            .where(
                a.target_id.in_(ids),
                a.association_type == C.ASSOC_HAS_MEMBER,
                a.status == C.STATUS_APPROVED,
                folder.c.status == C.STATUS_APPROVED,
            )
            .order_by(a.target_id, a.source_id)
        )
        out: dict[str, list[str]] = {}
        for r in self._read(stmt):
            lst = out.setdefault(r.target_id, [])
            if r.source_id not in lst:
                lst.append(r.source_id)
        return out

    def approved_children(self, document_ids: Iterable[str]) -> dict[str, list[str]]:
        """Approved APND/XFRM children of each document (child --APND/XFRM--> original)."""
        ids = sorted(set(document_ids))
        if not ids:
            return {}
        a = association.c
        stmt = (
            select(a.target_id, a.source_id)
            .join(document_entry, document_entry.c.id == a.source_id)
            .where(
                a.target_id.in_(ids),
                a.association_type.in_((C.ASSOC_APND, C.ASSOC_XFRM)),
                document_entry.c.status == C.STATUS_APPROVED,
            )
            .order_by(a.target_id, a.source_id)
        )
        out: dict[str, list[str]] = {}
        for r in self._read(stmt):
            lst = out.setdefault(r.target_id, [])
            if r.source_id not in lst:
                lst.append(r.source_id)
        return out

    # the commit ------------------------------------------------------------------------------

    def commit(self, plan: RegistrationPlan) -> None:
        """Write the plan in ONE transaction; nothing is stored if any part fails.

        Raises XdsFailure(XDSDuplicateUniqueIdInRegistry) on a unique-constraint race,
        XdsFailure(XDSRegistryDeprecatedDocumentError) if a replaced document is no longer
        Approved, InfrastructureError on any other database error.
        """
        rows = plan_rows(plan)  # serialise before opening the transaction
        try:
            with self.engine.begin() as c:
                # Inserts first: on SQLite this takes the write lock before any read below.
                for name, table in _TABLES.items():
                    if rows[name]:
                        c.execute(insert(table), rows[name])
                self._deprecate(c, plan.replaced, plan.deprecated_children)
                if plan.updated_folders:
                    self._touch_folders(c, plan.updated_folders, plan.last_update_time or utc_dtm())
        except XdsFailure:
            raise
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                raise duplicate_failure(exc) from exc
            raise InfrastructureError(f"registry commit failed: {exc}") from exc
        except (SQLAlchemyError, DBAPIError) as exc:
            raise InfrastructureError(f"registry commit failed: {exc}") from exc

    @staticmethod
    def _deprecate(c: Connection, replaced: Sequence[str], children: Sequence[str]) -> None:
        ids = list(dict.fromkeys([*replaced, *children]))
        if not ids:
            return
        de = document_entry.c
        current = {
            r.id: r
            for r in c.execute(
                select(de.id, de.status, de.xml).where(de.id.in_(ids)).with_for_update()
            )
        }
        # ITI TF-2b §3.42.4.1.3.5: the replaced entry must (still) be Approved.
        gone = [i for i in replaced if i not in current or current[i].status != C.STATUS_APPROVED]
        if gone:
            raise XdsFailure(
                [
                    RegistryError(
                        XdsErrorCode.XDSRegistryDeprecatedDocumentError,
                        f"document {i} is no longer Approved (replaced concurrently)",
                        location=i,
                        rule="iti42.replace.approved",
                    )
                    for i in gone
                ]
            )
        params = [
            {"b_id": i, "b_xml": _replace_status(current[i].xml, C.STATUS_DEPRECATED)}
            for i in ids
            if i in current and current[i].status == C.STATUS_APPROVED
        ]
        if params:
            c.execute(
                update(document_entry)
                .where(document_entry.c.id == bindparam("b_id"))
                .values(status=C.STATUS_DEPRECATED, xml=bindparam("b_xml")),
                params,
            )

    @staticmethod
    def _touch_folders(c: Connection, folder_ids: Sequence[str], when: str) -> None:
        ids = list(dict.fromkeys(folder_ids))
        fo = folder.c
        current = c.execute(select(fo.id, fo.xml).where(fo.id.in_(ids)).with_for_update()).all()
        params = [
            {
                "b_id": r.id,
                "b_xml": set_slot_in_fragment(r.xml, SLOT_LAST_UPDATE_TIME, [when]),
                "b_time": dtm_key(when),
            }
            for r in current
        ]
        if params:
            c.execute(
                update(folder)
                .where(folder.c.id == bindparam("b_id"))
                .values(last_update_time=bindparam("b_time"), xml=bindparam("b_xml")),
                params,
            )

    # small helpers used by tests and tools ---------------------------------------------------

    def count_rows(self) -> dict[str, int]:
        """Row count of every registry table (tests check all-or-nothing with it)."""
        tables = {"patient": patient, **_TABLES}
        try:
            with self.engine.connect() as c:
                return {
                    name: c.execute(select(func.count()).select_from(t)).scalar_one()
                    for name, t in tables.items()
                }
        except SQLAlchemyError as exc:
            raise InfrastructureError(f"count failed: {exc}") from exc


__all__ = [
    "KIND_ASSOCIATION",
    "KIND_DOCUMENT",
    "KIND_FOLDER",
    "KIND_SUBMISSION_SET",
    "RegistrationPlan",
    "StoreWriter",
    "StoredDocument",
    "StoredObject",
    "dtm_key",
    "plan_rows",
    "set_slot_in_fragment",
    "utc_dtm",
]
