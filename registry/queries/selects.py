"""SQLAlchemy Core `select()` builders for the stored queries (no execution here).

Each builder returns a Select over one table with the columns `registry.store.read.ResultRow`
is made of; filters on coded values, authors and referenceIds are EXISTS subqueries on the side
tables (`document_code`, `document_author`, …) correlated by entry id, so the main predicate
(patient_id, status) runs on its composite index and the `xml` comes back in the same query.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from sqlalchemy import and_, exists, literal, or_, select
from sqlalchemy.sql import ColumnElement, Select

from registry import constants as C
from registry.queries.values import CodeValue
from registry.schema import (
    association,
    document_author,
    document_code,
    document_entry,
    document_reference_id,
    folder,
    folder_code,
    submission_set,
    submission_set_author,
)

KIND_DOCUMENT = "DocumentEntry"
KIND_SUBMISSION_SET = "SubmissionSet"
KIND_FOLDER = "Folder"
KIND_ASSOCIATION = "Association"

d = document_entry
ss = submission_set
fol = folder
a = association


# --- projections ----------------------------------------------------------------------------


def documents() -> Select:
    return select(
        d.c.id,
        d.c.patient_id,
        d.c.status,
        d.c.home,
        d.c.xml,
        d.c.object_type,
        d.c.unique_id,
        d.c.lid,
    )


def submission_sets() -> Select:
    return select(ss.c.id, ss.c.patient_id, ss.c.status, ss.c.home, ss.c.xml, ss.c.unique_id)


def folders() -> Select:
    return select(fol.c.id, fol.c.patient_id, fol.c.status, fol.c.home, fol.c.xml, fol.c.unique_id, fol.c.lid)


def associations() -> Select:
    return select(a.c.id, a.c.status, a.c.xml, a.c.source_id, a.c.target_id, a.c.association_type)


# --- predicates -----------------------------------------------------------------------------


def _code_match(code_col, scheme_col, codes: Sequence[CodeValue]) -> ColumnElement[bool]:
    return or_(*(and_(code_col == c.code, scheme_col == c.coding_scheme) for c in codes))


def document_has_code(scheme: str, codes: Sequence[CodeValue]) -> ColumnElement[bool]:
    """The entry has one of `codes` in the code list `scheme` (a DE_CODE_SCHEMES short name)."""
    dc = document_code
    return exists(
        select(literal(1)).where(
            dc.c.entry_id == d.c.id,
            dc.c.scheme == scheme,
            _code_match(dc.c.code, dc.c.coding_scheme, codes),
        )
    )


def document_codes(scheme: str, value) -> list[ColumnElement[bool]]:
    """Predicates for a code parameter: a flat tuple is one OR-group; a tuple of tuples is AND
    of OR-groups (ITI TF-2a §3.18.4.1.2.3.5)."""
    if not value:
        return []
    groups = value if isinstance(value[0], tuple) else (value,)
    return [document_has_code(scheme, group) for group in groups]


def like_pattern(value: str) -> str:
    """A stored query pattern for SQL LIKE: % and _ are the wildcards (ITI TF-2a
    §3.18.4.1.2.3.7.1); a backslash is doubled so it stays literal under ESCAPE '\\'."""
    return value.replace("\\", "\\\\")


def _person_like(col, patterns: Sequence[str]) -> ColumnElement[bool]:
    # Case-insensitive on both engines (SQLite's LIKE is, PostgreSQL's is not): ILIKE. A pattern
    # may be a bound parameter (`plans._fetch_shaped`): its value comes escaped already.
    return or_(*(col.ilike(like_pattern(p) if isinstance(p, str) else p, escape="\\") for p in patterns))


def document_author_like(patterns: Sequence[str]) -> ColumnElement[bool]:
    da = document_author
    return exists(select(literal(1)).where(da.c.entry_id == d.c.id, _person_like(da.c.person, patterns)))


def document_reference_ids(groups: Sequence[Sequence[str]]) -> list[ColumnElement[bool]]:
    """Exact referenceId match, OR within a slot, AND across slots (ITI TF-2a §3.18.4.1.2.3.7.14)."""
    dr = document_reference_id
    return [
        exists(select(literal(1)).where(dr.c.entry_id == d.c.id, dr.c.reference_id.in_(list(group))))
        for group in groups
    ]


def time_range(col, start: str | None, stop: str | None) -> list[ColumnElement[bool]]:
    """`From` inclusive, `To` exclusive, on 14-digit keys (ITI TF-2a §3.18.4.1.2.3.7.1)."""
    out = []
    if start is not None:
        out.append(col >= start)
    if stop is not None:
        out.append(col < stop)
    return out


def submission_set_author_like(patterns: Sequence[str]) -> ColumnElement[bool]:
    sa = submission_set_author
    return exists(select(literal(1)).where(sa.c.ss_id == ss.c.id, _person_like(sa.c.person, patterns)))


def folder_codes(groups: Sequence[Sequence[CodeValue]]) -> list[ColumnElement[bool]]:
    fc = folder_code
    return [
        exists(
            select(literal(1)).where(
                fc.c.folder_id == fol.c.id, _code_match(fc.c.code, fc.c.coding_scheme, group)
            )
        )
        for group in groups
    ]


# --- sub-selects used to walk associations -------------------------------------------------


def has_member_targets(source_ids: Iterable[str] | Select) -> Select:
    """Targets of HasMember associations from the given sources."""
    src = source_ids if isinstance(source_ids, Select) else list(source_ids)
    return select(a.c.target_id).where(a.c.association_type == C.ASSOC_HAS_MEMBER, a.c.source_id.in_(src))


def has_member_sources(target_ids: Iterable[str]) -> Select:
    return select(a.c.source_id).where(
        a.c.association_type == C.ASSOC_HAS_MEMBER, a.c.target_id.in_(list(target_ids))
    )
