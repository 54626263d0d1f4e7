"""The registry store's write side: patients, the look-ups ITI-42 needs, and the atomic commit.

Every look-up is one batched query (no N+1); `registration_lookups` answers everything a
submission needs to know (patient known, existing entryUUIDs, uniqueIds) in ONE statement.
`StoreWriter.commit` writes a whole `RegistrationPlan` in ONE database transaction
(DESIGN.md §3 rule 6): new rows with executemany-style inserts (on PostgreSQL one statement for
every table: one round trip), then status changes and folder lastUpdateTime changes.
`StoreWriter.registration()` gives a `RegistrationSession`: the same look-ups and commit on ONE
pooled connection, so a registration checks out one connection, not one per query.
Uniqueness (entryUUID, SubmissionSet/Folder uniqueId) is enforced by the database, so two
nodes racing the same submission cannot both win (DESIGN.md §5).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

import attrs
from lxml import etree
from sqlalchemy import (
    any_,
    BigInteger,
    LargeBinary,
    String,
    bindparam,
    cast,
    func,
    insert,
    literal_column,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from registry import constants as C
from registry.fragments import pack, unpack
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
    object_type: str | None = None  # a DocumentEntry's: stable or On-Demand (IsSnapshotOf's ends)


@attrs.frozen
class RegistrationLookups:
    """What one submission needs from the registry, answered by one query
    (`registration_lookups`). `patient_known` is None when no patient was asked about."""

    patient_known: bool | None = None
    objects: dict[str, StoredObject] = attrs.Factory(dict)  # existing objects by entryUUID
    documents: dict[str, list[StoredDocument]] = attrs.Factory(dict)  # by document uniqueId
    submission_set_unique_ids: frozenset[str] = frozenset()  # those already registered
    folder_unique_ids: frozenset[str] = frozenset()  # those already registered


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


# The `xml` columns hold the fragment packed (`registry.fragments`) in a binary column, as text otherwise.
_XML_IS_BINARY = isinstance(document_entry.c.xml.type, LargeBinary)


def _xml_param(xml: bytes) -> bytes | str:
    return pack(xml) if _XML_IS_BINARY else xml.decode("utf-8")


def _xml_bytes(value: bytes | str | memoryview) -> bytes:
    return unpack(value)


def _serialize(obj) -> bytes | str:
    return _xml_param(object_to_bytes(obj))


def _replace_status(xml, status: str) -> bytes | str:
    return _xml_param(replace_status_in_fragment(_xml_bytes(xml), status))


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
    obj = element_to_object(etree.fromstring(_xml_bytes(xml), _FRAGMENT_PARSER))
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


# --- look-ups (one statement each, on a given connection) ----------------------------------

_NULL_TEXT = cast(null(), String)
_NULL_INT = cast(null(), BigInteger)


def _tag(value: str):
    return literal_column(f"'{value}'", String)  # our own constants: no quoting issue


def _in(column, name: str, postgresql: bool):
    """`column IN (:name…)`; on PostgreSQL `column = ANY(:name)` with one array parameter, so the
    SQL text (and its prepared statement) is the same whatever the number of values."""
    if postgresql:
        return column == any_(bindparam(name, type_=ARRAY(String)))
    return column.in_(bindparam(name, expanding=True))


def _objects_selects(ids_param, *, tagged: bool = False):
    """Existing DocumentEntries, Folders, SubmissionSets and Associations whose id is in
    `ids_param` (a function of the id column giving the condition): (id, kind, patient_id,
    status, lid, object_type), or with `tagged` the columns of `_lookup_statement`."""
    de, fo, ss, asc = document_entry.c, folder.c, submission_set.c, association.c
    sources = (
        (document_entry, de.id, KIND_DOCUMENT, de.patient_id, de.status, de.lid, de.object_type),
        (folder, fo.id, KIND_FOLDER, fo.patient_id, fo.status, fo.lid, _NULL_TEXT),
        (submission_set, ss.id, KIND_SUBMISSION_SET, ss.patient_id, ss.status, ss.id, _NULL_TEXT),
        (association, asc.id, KIND_ASSOCIATION, _NULL_TEXT, asc.status, asc.id, _NULL_TEXT),
    )
    out = []
    for table, id_, kind, patient_id, status, lid, object_type in sources:
        cols = [id_, _tag(kind).label("kind")]
        if tagged:
            cols = [_tag("O").label("q"), *cols, _NULL_TEXT.label("unique_id")]
        cols += [patient_id.label("patient_id"), status, lid.label("lid")]
        if tagged:
            cols += [_NULL_TEXT.label("hash"), _NULL_INT.label("size")]
        cols.append(object_type.label("object_type"))
        out.append(select(*cols).select_from(table).where(ids_param(id_)))
    return tuple(out)


_OBJECTS_BY_ID = union_all(*_objects_selects(lambda col: _in(col, "ids", False)))


def _lookup_statement(
    postgresql: bool, patient_known: bool, ids: bool, doc_uids: bool, ss_uids: bool, folder_uids: bool
):
    """One UNION ALL answering every look-up asked for: rows (q, id, kind, unique_id,
    patient_id, status, lid, hash, size, object_type) where q says which question a row answers."""
    parts = []
    if patient_known:
        p = patient.c
        parts.append(
            select(_tag("P").label("q"), p.patient_id.label("id"), _NULL_TEXT.label("kind"),
                   _NULL_TEXT.label("unique_id"), _NULL_TEXT.label("patient_id"), _NULL_TEXT.label("status"),
                   _NULL_TEXT.label("lid"), _NULL_TEXT.label("hash"), _NULL_INT.label("size"),
                   _NULL_TEXT.label("object_type"))
            .where(p.patient_id == bindparam("pid"))
        )
    if ids:
        parts.extend(_objects_selects(lambda col: _in(col, "ids", postgresql), tagged=True))
    if doc_uids:
        de = document_entry.c
        parts.append(
            select(_tag("D").label("q"), de.id, _NULL_TEXT.label("kind"), de.unique_id, de.patient_id,
                   de.status, de.lid, de.hash, de.size, _NULL_TEXT.label("object_type"))
            .where(_in(de.unique_id, "doc_uids", postgresql))
        )
    if ss_uids:
        ss = submission_set.c
        parts.append(
            select(_tag("S").label("q"), ss.id, _NULL_TEXT.label("kind"), ss.unique_id,
                   _NULL_TEXT.label("patient_id"), _NULL_TEXT.label("status"), _NULL_TEXT.label("lid"),
                   _NULL_TEXT.label("hash"), _NULL_INT.label("size"), _NULL_TEXT.label("object_type"))
            .where(_in(ss.unique_id, "ss_uids", postgresql))
        )
    if folder_uids:
        fo = folder.c
        parts.append(
            select(_tag("F").label("q"), fo.id, _NULL_TEXT.label("kind"), fo.unique_id,
                   _NULL_TEXT.label("patient_id"), _NULL_TEXT.label("status"), _NULL_TEXT.label("lid"),
                   _NULL_TEXT.label("hash"), _NULL_INT.label("size"), _NULL_TEXT.label("object_type"))
            .where(_in(fo.unique_id, "folder_uids", postgresql))
        )
    return parts[0] if len(parts) == 1 else union_all(*parts)


_LOOKUP_STATEMENTS: dict[tuple[bool, ...], Any] = {}  # one statement per shape (and dialect)


def registration_lookups(
    c: Connection,
    *,
    patient_id: str | None = None,
    ids: Iterable[str] = (),
    document_unique_ids: Iterable[str] = (),
    submission_set_unique_ids: Iterable[str] = (),
    folder_unique_ids: Iterable[str] = (),
    driver: bool = False,
) -> RegistrationLookups:
    """Everything ITI-42 asks the registry before writing, in one statement (no statement at
    all when nothing is asked). `driver`: `c` is in autocommit, run it with `_driver_execute`."""
    wanted = {
        "ids": sorted(set(ids)),
        "doc_uids": sorted(set(document_unique_ids)),
        "ss_uids": sorted(set(submission_set_unique_ids)),
        "folder_uids": sorted(set(folder_unique_ids)),
    }
    asked = (patient_id is not None, *(bool(v) for v in wanted.values()))
    if not any(asked):
        return RegistrationLookups()
    postgresql = c.dialect.name == "postgresql"
    shape = (postgresql, *asked)
    stmt = _LOOKUP_STATEMENTS.get(shape)
    if stmt is None:
        stmt = _lookup_statement(*shape)
        if postgresql and c.dialect.paramstyle == "pyformat":
            # No expanding parameter: the SQL text is fixed, so compile it once and skip
            # SQLAlchemy's per-call compilation cache look-up.
            stmt = str(stmt.compile(dialect=c.dialect))
        _LOOKUP_STATEMENTS[shape] = stmt
    params: dict[str, Any] = {k: v for k, v in wanted.items() if v}
    if patient_id is not None:
        params["pid"] = patient_id
    if not isinstance(stmt, str):
        rows = c.execute(stmt, params).all()
    elif driver:
        rows = _driver_execute(c, stmt, params, fetch=True)
    else:
        rows = c.exec_driver_sql(stmt, params).all()
    known = False
    objects: dict[str, StoredObject] = {}
    documents: dict[str, list[StoredDocument]] = {}
    ss_taken: set[str] = set()
    folder_taken: set[str] = set()
    for q, id_, kind, unique_id, pid, status, lid, hash_, size, object_type in rows:
        if q == "P":
            known = True
        elif q == "O":
            objects[id_] = StoredObject(id_, kind, pid, status, lid, object_type)
        elif q == "D":
            documents.setdefault(unique_id, []).append(
                StoredDocument(id_, unique_id, pid, hash_, size, status)
            )
        elif q == "S":
            ss_taken.add(unique_id)
        else:
            folder_taken.add(unique_id)
    return RegistrationLookups(
        patient_known=known if patient_id is not None else None,
        objects=objects,
        documents=documents,
        submission_set_unique_ids=frozenset(ss_taken),
        folder_unique_ids=frozenset(folder_taken),
    )


def _driver_execute(
    c: Connection, sql: str, params: Any, *, fetch: bool, numbered: bool = False
) -> list | None:
    """Run one fixed statement straight on the DBAPI connection (psycopg), prepared on the
    server: for a connection in AUTOCOMMIT only (no SQLAlchemy transaction to keep in step).
    SQLAlchemy's per-call work (execution context, result metadata) is about as much CPU as the
    driver's own. Errors are raised as `c.execute` raises them (sqlalchemy.exc.DBAPIError
    subclasses); a lost connection is invalidated. `numbered`: the SQL has `$1…` parameters."""
    dbapi = c.dialect.loaded_dbapi
    driver = c.connection.driver_connection
    cursor = dbapi.RawCursor(driver) if numbered else driver.cursor()
    try:
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchall() if fetch else None
    except dbapi.Error as exc:
        lost = c.dialect.is_disconnect(exc, driver, cursor)
        if lost:
            c.invalidate(exc)
        raise DBAPIError.instance(
            sql, params, exc, dbapi.Error, connection_invalidated=lost, dialect=c.dialect
        ) from exc
    finally:
        cursor.close()


def _documents_by_unique_id(c: Connection, unique_ids: Iterable[str]) -> dict[str, list[StoredDocument]]:
    return registration_lookups(c, document_unique_ids=unique_ids).documents


def _objects_by_id(c: Connection, ids: Iterable[str]) -> dict[str, StoredObject]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    return {
        r.id: StoredObject(r.id, r.kind, r.patient_id, r.status, r.lid, r.object_type)
        for r in c.execute(_OBJECTS_BY_ID, {"ids": wanted})
    }


def _existing_submission_set_unique_ids(c: Connection, unique_ids: Iterable[str]) -> set[str]:
    return set(registration_lookups(c, submission_set_unique_ids=unique_ids).submission_set_unique_ids)


def _existing_folder_unique_ids(c: Connection, unique_ids: Iterable[str]) -> set[str]:
    return set(registration_lookups(c, folder_unique_ids=unique_ids).folder_unique_ids)


def _is_known_patient(c: Connection, cx: str) -> bool:
    return bool(registration_lookups(c, patient_id=cx).patient_known)


def _sources_by_target(rows) -> dict[str, list[str]]:
    """(target_id, source_id) rows as {target: [sources]}, each source once, in row order."""
    out: dict[str, list[str]] = {}
    for r in rows:
        lst = out.setdefault(r.target_id, [])
        if r.source_id not in lst:
            lst.append(r.source_id)
    return out


def _folders_containing(c: Connection, document_ids: Iterable[str]) -> dict[str, list[str]]:
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
    return _sources_by_target(c.execute(stmt))


def _approved_children(c: Connection, document_ids: Iterable[str]) -> dict[str, list[str]]:
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
    return _sources_by_target(c.execute(stmt))


# --- inserts -------------------------------------------------------------------------------


# PostgreSQL takes at most 65535 parameters per statement; past this, one executemany per table.
_MAX_PARAMS_IN_ONE_STATEMENT = 30_000
_INSERT_ALL_SQL: dict[tuple, str] = {}


def _insert_all_sql(c: Connection, shape: tuple[tuple[Any, tuple[str, ...], int], ...], numbered: bool) -> str:
    """One PostgreSQL statement inserting into every table of `shape` ((table, columns, rows)):
    data-modifying WITH queries, all executed, atomically, by the one statement. Parameters
    are `$1, $2…` when `numbered` (psycopg.RawCursor: no placeholder conversion at each call),
    else `%s`."""
    sql = _INSERT_ALL_SQL.get((shape, numbered))
    if sql is None:
        q = c.dialect.identifier_preparer
        inserts = []
        k = 0
        for table, keys, n in shape:
            rows = []
            for _ in range(n):
                if numbered:
                    rows.append("(" + ", ".join(f"${k + i + 1}" for i in range(len(keys))) + ")")
                    k += len(keys)
                else:
                    rows.append("(" + ", ".join(["%s"] * len(keys)) + ")")
            inserts.append(
                f"INSERT INTO {q.format_table(table)} ({', '.join(q.quote(k) for k in keys)}) "
                f"VALUES {', '.join(rows)}"
            )
        ctes = ", ".join(f"w{k} AS ({sql})" for k, sql in enumerate(inserts[:-1]))
        sql = _INSERT_ALL_SQL[(shape, numbered)] = f"WITH {ctes} {inserts[-1]}" if ctes else inserts[-1]
    return sql


def _one_insert_statement(
    c: Connection, rows: dict[str, list[dict]], numbered: bool = False
) -> tuple[str, tuple] | None:
    """On PostgreSQL, every row of a plan as ONE statement (SQL, parameters); None elsewhere
    or when it does not fit in one statement."""
    if c.dialect.name != "postgresql" or c.dialect.paramstyle not in ("format", "pyformat"):
        return None
    shape = []
    params: list[Any] = []
    for name, table in _TABLES.items():
        lst = rows[name]
        if not lst:
            continue
        keys = tuple(lst[0])
        if any(tuple(r) != keys for r in lst):
            return None  # rows of one table differ in columns: not one VALUES list
        shape.append((table, keys, len(lst)))
        for r in lst:
            params.extend(r.values())
    if not shape or len(params) > _MAX_PARAMS_IN_ONE_STATEMENT:
        return None
    return _insert_all_sql(c, tuple(shape), numbered), tuple(params)


def _insert_rows(c: Connection, rows: dict[str, list[dict]]) -> None:
    """Insert every row of a plan in the connection's transaction: on PostgreSQL one statement
    (one round trip), elsewhere one executemany per table."""
    one = _one_insert_statement(c, rows)
    if one is not None:
        c.exec_driver_sql(*one)
        return
    for name, table in _TABLES.items():
        if rows[name]:
            c.execute(insert(table), rows[name])


def _inserts_only(plan: RegistrationPlan) -> bool:
    return not (plan.replaced or plan.deprecated_children or plan.updated_folders)


def _write_plan(c: Connection, plan: RegistrationPlan, rows: dict[str, list[dict]]) -> None:
    """Every change of a plan, in `c`'s open transaction (the caller commits)."""
    # Inserts first: on SQLite this takes the write lock before any read below.
    _insert_rows(c, rows)
    _deprecate(c, plan.replaced, plan.deprecated_children)
    if plan.updated_folders:
        _touch_folders(c, plan.updated_folders, plan.last_update_time or now_dtm())


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


def _touch_folders(c: Connection, folder_ids: Sequence[str], when: str) -> None:
    ids = list(dict.fromkeys(folder_ids))
    fo = folder.c
    current = c.execute(select(fo.id, fo.xml).where(fo.id.in_(ids)).with_for_update()).all()
    params = [
        {
            "b_id": r.id,
            "b_xml": _xml_param(set_slot_in_fragment(_xml_bytes(r.xml), SLOT_LAST_UPDATE_TIME, [when])),
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


# --- the session ---------------------------------------------------------------------------


def _lookup_failed(exc: BaseException) -> InfrastructureError:
    return InfrastructureError(f"registry look-up failed: {exc}")


class RegistrationSession:
    """The store's ITI-42 interface on ONE connection (see `StoreWriter.registration`): the
    look-ups, then `commit(plan)` in one database transaction.

    With `autocommit` (PostgreSQL) the look-ups run outside any transaction (each SELECT sees
    what is committed, as on separate connections) and a plan that only inserts rows is written
    by ONE statement, which PostgreSQL runs as its own transaction and commits (durably:
    synchronous_commit applies) before it answers: one round trip instead of statement + COMMIT.
    Any other plan gets an explicit transaction."""

    def __init__(self, connection: Connection, *, autocommit: bool = False) -> None:
        self.connection = connection
        self.autocommit = autocommit

    def _run(self, fn, *args, **kw):
        try:
            return fn(self.connection, *args, **kw)
        except SQLAlchemyError as exc:
            raise _lookup_failed(exc) from exc

    def registration_lookups(self, **kw) -> RegistrationLookups:
        return self._run(registration_lookups, driver=self._driver, **kw)

    @property
    def _driver(self) -> bool:
        """Statements may go straight to psycopg (see `_driver_execute`)."""
        return self.autocommit and self.connection.dialect.driver == "psycopg"

    def is_known(self, patient_id: str) -> bool:
        return self._run(_is_known_patient, patient_id)

    def objects_by_id(self, ids: Iterable[str]) -> dict[str, StoredObject]:
        return self._run(_objects_by_id, ids)

    def documents_by_unique_id(self, unique_ids: Iterable[str]) -> dict[str, list[StoredDocument]]:
        return self._run(_documents_by_unique_id, unique_ids)

    def existing_submission_set_unique_ids(self, unique_ids: Iterable[str]) -> set[str]:
        return self._run(_existing_submission_set_unique_ids, unique_ids)

    def existing_folder_unique_ids(self, unique_ids: Iterable[str]) -> set[str]:
        return self._run(_existing_folder_unique_ids, unique_ids)

    def folders_containing(self, document_ids: Iterable[str]) -> dict[str, list[str]]:
        return self._run(_folders_containing, document_ids)

    def approved_children(self, document_ids: Iterable[str]) -> dict[str, list[str]]:
        return self._run(_approved_children, document_ids)

    def commit(self, plan: RegistrationPlan) -> None:
        """Write the plan and commit; nothing is stored if any part fails.

        Raises XdsFailure(XDSDuplicateUniqueIdInRegistry) on a unique-constraint race,
        XdsFailure(XDSRegistryDeprecatedDocumentError) if a replaced document is no longer
        Approved, InfrastructureError on any other database error.
        """
        c = self.connection
        rows = plan_rows(plan)  # serialise (pure) before writing
        try:
            try:
                if self.autocommit:
                    c.commit()  # closes SQLAlchemy's record of the look-ups: nothing is sent
                    direct = self._driver
                    one = _one_insert_statement(c, rows, direct) if _inserts_only(plan) else None
                    if one is not None:
                        # all or nothing, committed when it returns
                        if direct:
                            _driver_execute(c, *one, fetch=False, numbered=True)
                        else:
                            c.exec_driver_sql(*one)
                        c.commit()
                        return
                    c.execution_options(isolation_level=c.default_isolation_level)
                    self.autocommit = False
                _write_plan(c, plan, rows)
                c.commit()
            except BaseException:
                if not c.invalidated:
                    c.rollback()
                raise
        except XdsFailure:
            raise
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                raise duplicate_failure(exc) from exc
            raise InfrastructureError(f"registry commit failed: {exc}") from exc
        except (SQLAlchemyError, DBAPIError) as exc:
            raise InfrastructureError(f"registry commit failed: {exc}") from exc


# --- the writer ----------------------------------------------------------------------------


class StoreWriter:
    """Write side of the registry store over a SQLAlchemy Engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def registration(self) -> Iterator[RegistrationSession]:
        """One pooled connection for a whole registration (look-ups, then commit); what is not
        committed when the block ends is rolled back."""
        try:
            conn = self.engine.connect()
            autocommit = conn.dialect.name == "postgresql"
            if autocommit:
                conn.execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as exc:
            raise InfrastructureError(f"registry not available: {exc}") from exc
        try:
            yield RegistrationSession(conn, autocommit=autocommit)
        finally:
            try:
                conn.close()
            except SQLAlchemyError:  # pragma: no cover - the pool invalidates it
                pass

    def _session_call(self, method: str, *args):
        with self.registration() as s:
            return getattr(s, method)(*args)

    # patients (ITI TF-2a §3.8; fed by PIX later) ---------------------------------------------

    def add_patient(self, cx: str, *, now: str | None = None) -> bool:
        """Make a patient known; True if it was new. Idempotent (also under races)."""
        try:
            with self.engine.begin() as c:
                if c.execute(select(patient.c.patient_id).where(patient.c.patient_id == cx)).first():
                    return False
                c.execute(insert(patient).values(patient_id=cx, created_at=now or now_dtm()))
                return True
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                return False
            raise InfrastructureError(f"add_patient failed: {exc}") from exc
        except SQLAlchemyError as exc:
            raise InfrastructureError(f"add_patient failed: {exc}") from exc

    def is_known_patient(self, cx: str) -> bool:
        try:
            return self._session_call("is_known", cx)
        except InfrastructureError as exc:
            raise InfrastructureError(f"patient look-up failed: {exc}") from exc

    # The PatientIdentities port (registry/ports.py).
    def is_known(self, patient_id: str) -> bool:
        return self.is_known_patient(patient_id)

    def import_patients(self, cxs: Iterable[str], *, batch: int = 1000, now: str | None = None) -> int:
        """Add many patients (blank lines ignored); returns how many were new."""
        stamp = now or now_dtm()
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

    # look-ups for ITI-42 (one query each; `registration()` to share one connection) ----------

    def registration_lookups(self, **kw) -> RegistrationLookups:
        with self.registration() as s:
            return s.registration_lookups(**kw)

    def documents_by_unique_id(self, unique_ids: Iterable[str]) -> dict[str, list[StoredDocument]]:
        return self._session_call("documents_by_unique_id", unique_ids)

    def objects_by_id(self, ids: Iterable[str]) -> dict[str, StoredObject]:
        """Existing DocumentEntries, Folders, SubmissionSets and Associations by entryUUID."""
        return self._session_call("objects_by_id", ids)

    def existing_ids(self, ids: Iterable[str]) -> set[str]:
        return set(self.objects_by_id(ids))

    def existing_submission_set_unique_ids(self, unique_ids: Iterable[str]) -> set[str]:
        return self._session_call("existing_submission_set_unique_ids", unique_ids)

    def existing_folder_unique_ids(self, unique_ids: Iterable[str]) -> set[str]:
        return self._session_call("existing_folder_unique_ids", unique_ids)

    def folders_containing(self, document_ids: Iterable[str]) -> dict[str, list[str]]:
        """Approved folders holding each document (Folder→DocumentEntry HasMember)."""
        return self._session_call("folders_containing", document_ids)

    def approved_children(self, document_ids: Iterable[str]) -> dict[str, list[str]]:
        """Approved APND/XFRM children of each document (child --APND/XFRM--> original)."""
        return self._session_call("approved_children", document_ids)

    # the commit ------------------------------------------------------------------------------

    def commit(self, plan: RegistrationPlan) -> None:
        """Write the plan in ONE transaction; nothing is stored if any part fails (see
        `RegistrationSession.commit` for the errors)."""
        try:
            with self.registration() as s:
                s.commit(plan)
        except InfrastructureError as exc:
            if "commit failed" in str(exc):
                raise
            raise InfrastructureError(f"registry commit failed: {exc}") from exc

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
    "RegistrationLookups",
    "RegistrationSession",
    "registration_lookups",
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
]
