"""The 14 stored queries as sans-I/O plans (ITI TF-2a §3.18.4.1.2.3.7).

A plan is a generator: it yields `Step(kind, select)`, receives the rows of that select, and
finally returns the list of `(kind, row)` it found. `registry.store.read.StoreReader` drives
it on one connection; nothing here executes SQL. Multi-step queries (GetSubmissionSetAndContents,
GetRelatedDocuments, …) read a first result before building the next select.

Every select is capped at `limit + 1` rows, so a result over the limit is detected without
reading it all: the plan then raises XdsFailure(XDSTooManyResults) (ITI TF-2a §3.18.4.1.3).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Generator, Iterable, Mapping, Sequence

import attrs
from sqlalchemy import Integer, String, bindparam, select
from sqlalchemy.sql import Select

from registry import constants as C
from registry.errors import RegistryError, XdsErrorCode, XdsFailure
from registry.queries import params as P
from registry.queries import selects as S
from registry.queries.params import Kind, StoredQuery
from registry.queries.values import CodeValue

CHUNK = 500  # ids per IN list (SQLite's bound-parameter limit, PostgreSQL plan size)


@attrs.frozen
class Step:
    kind: str
    statement: Select
    parameters: Mapping[str, Any] | None = None  # values of the statement's named bound parameters


Found = list[tuple[str, Any]]
Plan = Generator[Step, Sequence[Any], Found]


def too_many(limit: int) -> XdsFailure:
    return XdsFailure(
        RegistryError(
            XdsErrorCode.XDSTooManyResults,
            f"the query matches more than {limit} objects; narrow it",
            rule="ITI18-limit",
        )
    )


def _fetch(kind: str, stmt: Select, limit: int | None) -> Generator[Step, Sequence[Any], list[Any]]:
    if limit is not None:
        stmt = stmt.limit(limit + 1)
    return (yield from _run(Step(kind, stmt), limit))


def _run(step: Step, limit: int | None) -> Generator[Step, Sequence[Any], list[Any]]:
    """The rows of `step` (its select capped at `limit + 1` already), or XDSTooManyResults."""
    rows = list((yield step))
    if limit is not None and len(rows) > limit:
        raise too_many(limit)
    return rows


def _fetch_in(
    kind: str, build: Callable[[list[str]], Select], ids: Iterable[str], limit: int | None
) -> Generator[Step, Sequence[Any], list[Any]]:
    """Run `build(chunk)` for each chunk of `ids`, de-duplicating rows by id."""
    wanted = list(dict.fromkeys(ids))
    out: dict[str, Any] = {}
    for i in range(0, len(wanted), CHUNK):
        rows = yield from _fetch(kind, build(wanted[i : i + CHUNK]), limit)
        for r in rows:
            out.setdefault(r.id, r)
        if limit is not None and len(out) > limit:
            raise too_many(limit)
    return list(out.values())


def _tag(kind: str, rows: Iterable[Any]) -> Found:
    return [(kind, r) for r in rows]


def _check_total(found: Found, limit: int | None) -> Found:
    if limit is not None and len(found) > limit:
        raise too_many(limit)
    return found


# --- selects built once per shape of the parameters -------------------------------------------
#
# The Find queries' select depends on which parameters a request gives and how many values each
# holds (its shape), not on the values themselves. Built from the values, a FindDocuments select
# cost about 0.45 ms of CPU on every request, and SQLAlchemy's cache key of it 0.1 ms more
# (measured on a slow VM: 0.93 ms per execution in all, 0.34 ms for a select built once and
# executed with new values). `_fetch_shaped` builds the select once per shape, from the query with
# every value replaced by a named bound parameter, and binds the values at execution
# (`Step.parameters`). The builder is the same function either way, so the two cannot disagree
# (tests/iti18/test_shaped_selects.py compares the SQL of both).

SHAPED_CACHE_SIZE = 256  # shapes kept; the cache starts again when full (each entry: one select)
_shaped: dict[tuple, Select] = {}


def _rebuild(q: StoredQuery, leaf: Callable[[Any, Kind | None], Any]) -> dict[str, Any]:
    """q's parameters with each value (str or int, or a CodeValue's two strings) replaced by
    `leaf(value, kind of its parameter)`, walked in one fixed order."""
    specs = q.spec.params

    def walk(value: Any, kind: Kind | None) -> Any:
        if isinstance(value, tuple):
            return tuple(walk(v, kind) for v in value)
        if isinstance(value, CodeValue):
            return CodeValue(walk(value.code, kind), walk(value.coding_scheme, kind))
        return leaf(value, kind)

    return {
        name: walk(value, spec.kind if (spec := specs.get(name)) is not None else None)
        for name, value in sorted(q.params.items())
    }


def _skeleton(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_skeleton(v) for v in value)
    return value.__class__.__name__


def _placeholders(q: StoredQuery) -> StoredQuery:
    n = itertools.count()

    def leaf(value: Any, _kind: Kind | None) -> Any:
        # typed as its value (text or a number), as a literal of that value would be
        return bindparam(f"sq_{next(n)}", type_=Integer() if isinstance(value, int) else String())

    return attrs.evolve(q, params=_rebuild(q, leaf))


def _bound_values(q: StoredQuery) -> dict[str, Any]:
    values: dict[str, Any] = {}

    def leaf(value: Any, kind: Kind | None) -> Any:
        # a pattern goes to LIKE escaped, as `selects._person_like` escapes a plain string
        values[f"sq_{len(values)}"] = S.like_pattern(value) if kind is Kind.PATTERNS else value
        return value

    _rebuild(q, leaf)
    return values


def _fetch_shaped(
    kind: str, build: Callable[[StoredQuery], Select], q: StoredQuery, limit: int | None
) -> Generator[Step, Sequence[Any], list[Any]]:
    """`_fetch(kind, build(q), limit)`, with the select built once per shape of q's parameters."""
    shape = (build, q.query_id, limit, tuple((name, _skeleton(v)) for name, v in sorted(q.params.items())))
    stmt = _shaped.get(shape)
    if stmt is None:
        stmt = build(_placeholders(q))
        if limit is not None:
            stmt = stmt.limit(limit + 1)
        if len(_shaped) >= SHAPED_CACHE_SIZE:
            _shaped.clear()
        _shaped[shape] = stmt
    return (yield from _run(Step(kind, stmt, _bound_values(q)), limit))


# --- shared document filters -----------------------------------------------------------------


def _content_filters(q: StoredQuery) -> list:
    """$XDSDocumentEntryFormatCode / ConfidentialityCode / Type, shared by GetAll,
    GetSubmissionSetAndContents and GetFolderAndContents."""
    where = []
    where += S.document_codes("formatCode", q.get(P.DE_FORMAT_CODE))
    where += S.document_codes("confidentialityCode", q.get(P.DE_CONFIDENTIALITY_CODE))
    types = q.get(P.DE_TYPE)
    if types:
        where.append(S.d.c.object_type.in_(list(types)))
    return where


def find_documents_select(q: StoredQuery) -> Select:
    """FindDocuments / FindDocumentsByReferenceId (ITI TF-2a §3.18.4.1.2.3.7.1, .14)."""
    d = S.d
    where = [d.c.patient_id == q.get(P.DE_PATIENT_ID), d.c.status.in_(list(q.get(P.DE_STATUS)))]
    types = q.get(P.DE_TYPE)
    if types:
        where.append(d.c.object_type.in_(list(types)))
    where += S.time_range(d.c.creation_time, q.get(P.DE_CREATION_TIME_FROM), q.get(P.DE_CREATION_TIME_TO))
    where += S.time_range(
        d.c.service_start_time, q.get(P.DE_SERVICE_START_TIME_FROM), q.get(P.DE_SERVICE_START_TIME_TO)
    )
    where += S.time_range(
        d.c.service_stop_time, q.get(P.DE_SERVICE_STOP_TIME_FROM), q.get(P.DE_SERVICE_STOP_TIME_TO)
    )
    for param, scheme in P.DE_CODE_PARAMS.items():
        where += S.document_codes(scheme, q.get(param))
    authors = q.get(P.DE_AUTHOR_PERSON)
    if authors:
        where.append(S.document_author_like(authors))
    refs = q.get(P.DE_REFERENCE_ID_LIST)
    if refs:
        where += S.document_reference_ids(refs)
    return S.documents().where(*where)


def find_documents(q: StoredQuery, limit: int | None) -> Plan:
    rows = yield from _fetch_shaped(S.KIND_DOCUMENT, find_documents_select, q, limit)
    return _tag(S.KIND_DOCUMENT, rows)


def find_submission_sets_select(q: StoredQuery) -> Select:
    """ITI TF-2a §3.18.4.1.2.3.7.2"""
    ss = S.ss
    where = [ss.c.patient_id == q.get(P.SS_PATIENT_ID), ss.c.status.in_(list(q.get(P.SS_STATUS)))]
    sources = q.get(P.SS_SOURCE_ID)
    if sources:
        where.append(ss.c.source_id.in_(list(sources)))
    where += S.time_range(ss.c.submission_time, q.get(P.SS_SUBMISSION_TIME_FROM), q.get(P.SS_SUBMISSION_TIME_TO))
    authors = q.get(P.SS_AUTHOR_PERSON)
    if authors:
        where.append(S.submission_set_author_like(authors))
    content = q.get(P.SS_CONTENT_TYPE)
    if content:
        where.append(S._code_match(ss.c.content_type_code, ss.c.content_type_coding_scheme, content))
    return S.submission_sets().where(*where)


def find_submission_sets(q: StoredQuery, limit: int | None) -> Plan:
    rows = yield from _fetch_shaped(S.KIND_SUBMISSION_SET, find_submission_sets_select, q, limit)
    return _tag(S.KIND_SUBMISSION_SET, rows)


def find_folders_select(q: StoredQuery) -> Select:
    """ITI TF-2a §3.18.4.1.2.3.7.3"""
    f = S.fol
    where = [f.c.patient_id == q.get(P.FOL_PATIENT_ID), f.c.status.in_(list(q.get(P.FOL_STATUS)))]
    where += S.time_range(
        f.c.last_update_time, q.get(P.FOL_LAST_UPDATE_TIME_FROM), q.get(P.FOL_LAST_UPDATE_TIME_TO)
    )
    codes = q.get(P.FOL_CODE_LIST)
    if codes:
        where += S.folder_codes(codes)
    return S.folders().where(*where)


def find_folders(q: StoredQuery, limit: int | None) -> Plan:
    rows = yield from _fetch_shaped(S.KIND_FOLDER, find_folders_select, q, limit)
    return _tag(S.KIND_FOLDER, rows)


# --- associations among a set of objects ---------------------------------------------------


def _associations_among(ids: set[str], limit: int | None) -> Generator[Step, Sequence[Any], list[Any]]:
    """Associations whose source and target are both in `ids`, plus those (SubmissionSet →
    Association HasMember) whose target is one of the former."""
    candidates = yield from _fetch_in(
        S.KIND_ASSOCIATION, lambda chunk: S.associations().where(S.a.c.source_id.in_(chunk)), ids, limit
    )
    direct = [r for r in candidates if r.target_id in ids]
    direct_ids = {r.id for r in direct}
    nested = [r for r in candidates if r.target_id in direct_ids]
    return direct + nested


def get_all(q: StoredQuery, limit: int | None) -> Plan:
    """ITI TF-2a §3.18.4.1.2.3.7.4: every SubmissionSet, DocumentEntry, Folder of the patient
    (each filtered by its status parameter) and the Associations between them."""
    pid = q.get(P.PATIENT_ID)
    docs = yield from _fetch(
        S.KIND_DOCUMENT,
        S.documents().where(S.d.c.patient_id == pid, S.d.c.status.in_(list(q.get(P.DE_STATUS))), *_content_filters(q)),
        limit,
    )
    sets = yield from _fetch(
        S.KIND_SUBMISSION_SET,
        S.submission_sets().where(S.ss.c.patient_id == pid, S.ss.c.status.in_(list(q.get(P.SS_STATUS)))),
        limit,
    )
    fols = yield from _fetch(
        S.KIND_FOLDER,
        S.folders().where(S.fol.c.patient_id == pid, S.fol.c.status.in_(list(q.get(P.FOL_STATUS)))),
        limit,
    )
    ids = {r.id for r in (*docs, *sets, *fols)}
    assocs = yield from _associations_among(ids, limit)
    found = (
        _tag(S.KIND_SUBMISSION_SET, sets)
        + _tag(S.KIND_DOCUMENT, docs)
        + _tag(S.KIND_FOLDER, fols)
        + _tag(S.KIND_ASSOCIATION, assocs)
    )
    return _check_total(found, limit)


# --- Get* by identifier --------------------------------------------------------------------


def _documents_by(q: StoredQuery, limit: int | None) -> Generator[Step, Sequence[Any], list[Any]]:
    """DocumentEntries named by $XDSDocumentEntryEntryUUID, UniqueId or LogicalID (one list or
    one value, whichever the query takes)."""
    for param, col in (
        (P.DE_ENTRY_UUID, S.d.c.id),
        (P.DE_UNIQUE_ID, S.d.c.unique_id),
        (P.DE_LOGICAL_ID, S.d.c.lid),
    ):
        value = q.get(param)
        if value is not None:
            values = [value] if isinstance(value, str) else list(value)
            return (
                yield from _fetch_in(
                    S.KIND_DOCUMENT, lambda chunk, col=col: S.documents().where(col.in_(chunk)), values, limit
                )
            )
    return []


def _folders_by(q: StoredQuery, limit: int | None) -> Generator[Step, Sequence[Any], list[Any]]:
    for param, col in (
        (P.FOL_ENTRY_UUID, S.fol.c.id),
        (P.FOL_UNIQUE_ID, S.fol.c.unique_id),
        (P.FOL_LOGICAL_ID, S.fol.c.lid),
    ):
        value = q.get(param)
        if value is not None:
            values = [value] if isinstance(value, str) else list(value)
            return (
                yield from _fetch_in(
                    S.KIND_FOLDER, lambda chunk, col=col: S.folders().where(col.in_(chunk)), values, limit
                )
            )
    return []


def get_documents(q: StoredQuery, limit: int | None) -> Plan:
    """ITI TF-2a §3.18.4.1.2.3.7.5 (no status filter: the entries named are returned)."""
    docs = yield from _documents_by(q, limit)
    return _tag(S.KIND_DOCUMENT, docs)


def get_folders(q: StoredQuery, limit: int | None) -> Plan:
    """ITI TF-2a §3.18.4.1.2.3.7.6"""
    fols = yield from _folders_by(q, limit)
    return _tag(S.KIND_FOLDER, fols)


def _associations_touching(ids: Iterable[str], limit: int | None) -> Generator[Step, Sequence[Any], list[Any]]:
    """Associations whose source or target is one of `ids`."""
    return (
        yield from _fetch_in(
            S.KIND_ASSOCIATION,
            lambda chunk: S.associations().where(S.a.c.source_id.in_(chunk) | S.a.c.target_id.in_(chunk)),
            ids,
            limit,
        )
    )


def get_associations(q: StoredQuery, limit: int | None) -> Plan:
    """ITI TF-2a §3.18.4.1.2.3.7.7: associations with a $uuid object as source or target."""
    assocs = yield from _associations_touching(q.get(P.UUID), limit)
    return _tag(S.KIND_ASSOCIATION, assocs)


def get_documents_and_associations(q: StoredQuery, limit: int | None) -> Plan:
    """ITI TF-2a §3.18.4.1.2.3.7.8: the entries and every association that has one of them as
    source or target (HasMember from SubmissionSets and Folders, relationships)."""
    docs = yield from _documents_by(q, limit)
    assocs = yield from _associations_touching([r.id for r in docs], limit) if docs else _none()
    return _check_total(_tag(S.KIND_DOCUMENT, docs) + _tag(S.KIND_ASSOCIATION, assocs), limit)


def _none() -> Generator[Step, Sequence[Any], list[Any]]:
    return []
    yield  # pragma: no cover - makes this a generator


def get_submission_sets(q: StoredQuery, limit: int | None) -> Plan:
    """ITI TF-2a §3.18.4.1.2.3.7.9: the SubmissionSets that have one of the $uuid objects as
    member, and those HasMember associations."""
    uuids = list(q.get(P.UUID))
    hm = yield from _fetch_in(
        S.KIND_ASSOCIATION,
        lambda chunk: S.associations().where(
            S.a.c.association_type == C.ASSOC_HAS_MEMBER,
            S.a.c.target_id.in_(chunk),
            S.a.c.source_id.in_(select(S.ss.c.id)),
        ),
        uuids,
        limit,
    )
    sets = yield from _fetch_in(
        S.KIND_SUBMISSION_SET,
        lambda chunk: S.submission_sets().where(S.ss.c.id.in_(chunk)),
        {r.source_id for r in hm},
        limit,
    )
    return _check_total(_tag(S.KIND_SUBMISSION_SET, sets) + _tag(S.KIND_ASSOCIATION, hm), limit)


def _package_contents(
    q: StoredQuery, package_id: str, with_folders: bool, limit: int | None
) -> Generator[Step, Sequence[Any], Found]:
    """Members of a SubmissionSet or Folder: its HasMember associations, the member entries
    (after the content filters), folders and inner associations (ITI TF-2a §3.18.4.1.2.3.7.10/11).
    An association that points at an entry the filters removed is left out with it."""
    hm = yield from _fetch(
        S.KIND_ASSOCIATION,
        S.associations().where(S.a.c.association_type == C.ASSOC_HAS_MEMBER, S.a.c.source_id == package_id),
        limit,
    )
    member_ids = [r.target_id for r in hm]
    docs = yield from _fetch_in(
        S.KIND_DOCUMENT,
        lambda chunk: S.documents().where(S.d.c.id.in_(chunk), *_content_filters(q)),
        member_ids,
        limit,
    )
    fols: list[Any] = []
    inner: list[Any] = []
    if with_folders and member_ids:
        fols = yield from _fetch_in(
            S.KIND_FOLDER, lambda chunk: S.folders().where(S.fol.c.id.in_(chunk)), member_ids, limit
        )
        inner = yield from _fetch_in(
            S.KIND_ASSOCIATION, lambda chunk: S.associations().where(S.a.c.id.in_(chunk)), member_ids, limit
        )
    kept_objects = {r.id for r in (*docs, *fols)}
    # Members that are neither returned entries, folders nor associations were filtered out.
    excluded = set(member_ids) - kept_objects - {r.id for r in inner}
    inner = [r for r in inner if r.source_id not in excluded and r.target_id not in excluded]
    kept = kept_objects | {r.id for r in inner}
    hm = [r for r in hm if r.target_id in kept]
    return (
        _tag(S.KIND_DOCUMENT, docs)
        + _tag(S.KIND_FOLDER, fols)
        + _tag(S.KIND_ASSOCIATION, hm)
        + _tag(S.KIND_ASSOCIATION, inner)
    )


def get_submission_set_and_contents(q: StoredQuery, limit: int | None) -> Plan:
    """ITI TF-2a §3.18.4.1.2.3.7.10"""
    ss = S.ss
    if q.get(P.SS_ENTRY_UUID) is not None:
        stmt = S.submission_sets().where(ss.c.id == q.get(P.SS_ENTRY_UUID))
    else:
        stmt = S.submission_sets().where(ss.c.unique_id == q.get(P.SS_UNIQUE_ID))
    sets = yield from _fetch(S.KIND_SUBMISSION_SET, stmt, limit)
    if not sets:
        return []
    contents = yield from _package_contents(q, sets[0].id, True, limit)
    return _check_total(_tag(S.KIND_SUBMISSION_SET, sets[:1]) + contents, limit)


def get_folder_and_contents(q: StoredQuery, limit: int | None) -> Plan:
    """ITI TF-2a §3.18.4.1.2.3.7.11 (by uniqueId, the latest version of the folder)."""
    f = S.fol
    if q.get(P.FOL_ENTRY_UUID) is not None:
        stmt = S.folders().where(f.c.id == q.get(P.FOL_ENTRY_UUID))
    else:
        stmt = S.folders().where(f.c.unique_id == q.get(P.FOL_UNIQUE_ID)).order_by(f.c.version.desc())
    fols = yield from _fetch(S.KIND_FOLDER, stmt, limit)
    if not fols:
        return []
    contents = yield from _package_contents(q, fols[0].id, False, limit)
    return _check_total(_tag(S.KIND_FOLDER, fols[:1]) + contents, limit)


def get_folders_for_document(q: StoredQuery, limit: int | None) -> Plan:
    """ITI TF-2a §3.18.4.1.2.3.7.12: the folders that have the entry as member."""
    docs = yield from _documents_by(q, limit)
    if not docs:
        return []
    doc_ids = [r.id for r in docs]
    fols = yield from _fetch(
        S.KIND_FOLDER, S.folders().where(S.fol.c.id.in_(S.has_member_sources(doc_ids))), limit
    )
    return _tag(S.KIND_FOLDER, fols)


def get_related_documents(q: StoredQuery, limit: int | None) -> Plan:
    """ITI TF-2a §3.18.4.1.2.3.7.13: the entry, the associations of the $AssociationTypes that
    have it as source or target, and the entries at their other end. Nothing when it has no
    such association (NIST 11909). $XDSDocumentEntryType (Stable only by default,
    ITI TF-2a §3.18.4.1.2.3.6.2, `params.DEFAULT_STABLE_ONLY`) selects the entries at the other
    end; an association to one it leaves out goes with it."""
    docs = yield from _documents_by(q, limit)
    if not docs:
        return []
    origin = docs[0]
    types = list(q.get(P.ASSOCIATION_TYPES))
    assocs = yield from _fetch(
        S.KIND_ASSOCIATION,
        S.associations().where(
            S.a.c.association_type.in_(types),
            (S.a.c.source_id == origin.id) | (S.a.c.target_id == origin.id),
        ),
        limit,
    )
    others = {r.target_id if r.source_id == origin.id else r.source_id for r in assocs} - {origin.id}
    where = []
    if q.get(P.DE_TYPE):
        where.append(S.d.c.object_type.in_(list(q.get(P.DE_TYPE))))
    related = yield from _fetch_in(
        S.KIND_DOCUMENT, lambda chunk: S.documents().where(S.d.c.id.in_(chunk), *where), others, limit
    )
    related_ids = {r.id for r in related}
    assocs = [r for r in assocs if (r.target_id if r.source_id == origin.id else r.source_id) in related_ids]
    if not assocs:
        return []
    return _check_total(
        _tag(S.KIND_DOCUMENT, [origin, *related]) + _tag(S.KIND_ASSOCIATION, assocs), limit
    )


PLANS: dict[str, Callable[[StoredQuery, int | None], Plan]] = {
    C.SQ_FIND_DOCUMENTS: find_documents,
    C.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID: find_documents,
    C.SQ_FIND_SUBMISSION_SETS: find_submission_sets,
    C.SQ_FIND_FOLDERS: find_folders,
    C.SQ_GET_ALL: get_all,
    C.SQ_GET_DOCUMENTS: get_documents,
    C.SQ_GET_FOLDERS: get_folders,
    C.SQ_GET_ASSOCIATIONS: get_associations,
    C.SQ_GET_DOCUMENTS_AND_ASSOCIATIONS: get_documents_and_associations,
    C.SQ_GET_SUBMISSION_SETS: get_submission_sets,
    C.SQ_GET_SUBMISSION_SET_AND_CONTENTS: get_submission_set_and_contents,
    C.SQ_GET_FOLDER_AND_CONTENTS: get_folder_and_contents,
    C.SQ_GET_FOLDERS_FOR_DOCUMENT: get_folders_for_document,
    C.SQ_GET_RELATED_DOCUMENTS: get_related_documents,
}


def plan_for(q: StoredQuery, limit: int | None) -> Plan:
    """The plan of a parsed stored query; `limit` caps the objects returned (None: no cap)."""
    return PLANS[q.query_id](q, limit)
