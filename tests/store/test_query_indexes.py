"""Issue 2: "an indexed column for every query parameter" (ITI TF-2a §3.18.4.1.2.3.7). Each
parameter's column leads an index, or follows the column every query fixes with an equality
before it: the patient id (all Find queries require one) or the code scheme (a code parameter
names its scheme). Checked on the declared schema and on a database migrated by Alembic, on SQLite
and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from registry import migrate
from registry import schema as S
from registry.db import make_engine
from registry.queries import params as Q

CODE = ("document_code", "code", "scheme")
# parameter → (table, column, the column fixed before it, if any)
INDEXED = {
    Q.DE_PATIENT_ID: ("document_entry", "patient_id", None),
    Q.DE_STATUS: ("document_entry", "status", "patient_id"),
    Q.DE_CREATION_TIME_FROM: ("document_entry", "creation_time", "patient_id"),
    Q.DE_SERVICE_START_TIME_FROM: ("document_entry", "service_start_time", "patient_id"),
    Q.DE_SERVICE_STOP_TIME_FROM: ("document_entry", "service_stop_time", "patient_id"),
    Q.DE_ENTRY_UUID: ("document_entry", "id", None),
    Q.DE_UNIQUE_ID: ("document_entry", "unique_id", None),
    Q.DE_LOGICAL_ID: ("document_entry", "lid", None),
    Q.DE_REFERENCE_ID_LIST: ("document_reference_id", "reference_id", None),
    **{name: CODE for name in Q.DE_CODE_PARAMS},
    Q.SS_PATIENT_ID: ("submission_set", "patient_id", None),
    Q.SS_STATUS: ("submission_set", "status", "patient_id"),
    Q.SS_SOURCE_ID: ("submission_set", "source_id", "patient_id"),
    Q.SS_SUBMISSION_TIME_FROM: ("submission_set", "submission_time", "patient_id"),
    Q.SS_CONTENT_TYPE: ("submission_set", "content_type_code", "patient_id"),
    Q.SS_ENTRY_UUID: ("submission_set", "id", None),
    Q.SS_UNIQUE_ID: ("submission_set", "unique_id", None),
    Q.FOL_PATIENT_ID: ("folder", "patient_id", None),
    Q.FOL_STATUS: ("folder", "status", "patient_id"),
    Q.FOL_LAST_UPDATE_TIME_FROM: ("folder", "last_update_time", "patient_id"),
    Q.FOL_CODE_LIST: ("folder_code", "code", "coding_scheme"),
    Q.FOL_ENTRY_UUID: ("folder", "id", None),
    Q.FOL_LOGICAL_ID: ("folder", "lid", None),
    Q.FOL_UNIQUE_ID: ("folder", "unique_id", None),
}
# Not indexed, on purpose (README, Architecture): filters applied to one patient's rows, which an
# index already selected.
NOT_INDEXED = {
    Q.DE_TYPE: "objectType: two values (stable, on-demand), always with a patient id",
    Q.DE_AUTHOR_PERSON: "LIKE patterns with leading wildcards, which a b-tree cannot serve; the authors "
                        "of the patient's entries are reached by entry id",
    Q.SS_AUTHOR_PERSON: "as $XDSDocumentEntryAuthorPerson",
}


def _served(indexes: list[list[str]], column: str, fixed: str | None) -> bool:
    return any(cols[0] == column or (fixed is not None and cols[:2] == [fixed, column]) for cols in indexes)


def _declared(table: str) -> list[list[str]]:
    t = S.metadata.tables[table]
    out = [[c.name for c in ix.columns] for ix in t.indexes]
    out += [[c.name for c in con.columns] for con in t.constraints if hasattr(con, "columns") and len(con.columns)]
    return out


def test_every_query_parameter_is_classified():
    names = {v for k, v in vars(Q).items() if isinstance(v, str) and v.startswith("$XDS") and k.isupper()}
    names -= {Q.DE, Q.SS, Q.FOL}
    ranges_to = {n for n in names if n.endswith("To")}
    assert names - ranges_to == set(INDEXED) | set(NOT_INDEXED)


@pytest.mark.parametrize("parameter", sorted(INDEXED))
def test_declared_schema_indexes_the_parameter(parameter):
    table, column, fixed = INDEXED[parameter]
    assert _served(_declared(table), column, fixed), (parameter, table, column)


def test_a_migrated_database_has_those_indexes(db_url):
    url, search_path = db_url
    migrate.upgrade(url, search_path=search_path)
    engine = make_engine(url, pool_size=1, pg_search_path=search_path)
    try:
        insp = inspect(engine)
        for parameter, (table, column, fixed) in INDEXED.items():
            found = [ix["column_names"] for ix in insp.get_indexes(table)]
            found += [u["column_names"] for u in insp.get_unique_constraints(table)]
            found.append(insp.get_pk_constraint(table)["constrained_columns"])
            assert _served(found, column, fixed), (parameter, table, column, found)
    finally:
        engine.dispose()
