"""The read side of the registry store: runs stored query plans (ITI-18).

The only place SQL runs for queries. `StoreReader` is a mixin expecting `self.engine`;
`registry.store.RegistryStore` combines it with the write side. A plan
(`registry.queries.plans`) yields selects; this module executes them on one connection and
turns the rows into `ResultRow`s, the shape the AccessPolicy port filters.

Speed (issue 2: FindDocuments of 200 entries, p50 ≤ 5 ms): on PostgreSQL through psycopg the
rows come back in the binary result format (`binary_results`). In the text format PostgreSQL
hex-encodes every `bytea` fragment (12.6 kB of text for a 6.3 kB fragment) and psycopg decodes
it again: half of the query time. In binary the fragment travels as its own bytes. The other
half was TOAST look-ups, removed by keeping rows whole (`registry.schema.xml_storage_sql`).
"""

from __future__ import annotations

import functools
import operator
from contextlib import contextmanager
from typing import Any, Callable, Iterator, NamedTuple, Sequence

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from registry.fragments import unpack
from registry.errors import InfrastructureError
from registry.queries.params import StoredQuery
from registry.queries.plans import Plan, plan_for

try:  # psycopg is only needed for PostgreSQL; SQLite works without it
    import psycopg
    from psycopg import pq
except ImportError:  # pragma: no cover - psycopg is a dependency of Carnet
    psycopg = None


class ResultRow(NamedTuple):
    """One registry object found by a stored query.

    kind: "DocumentEntry" | "SubmissionSet" | "Folder" | "Association"; `xml` is the stored,
    self-contained ebRIM fragment. patient_id is None for associations.

    A named tuple: a FindDocuments makes 200 of them, and a frozen attrs class cost 1 µs each
    to build (one object.__setattr__ per field), a tuple a fifth of that."""

    kind: str
    id: str
    patient_id: str | None
    status: str
    xml: bytes
    home: str | None = None
    object_type: str | None = None
    unique_id: str | None = None
    lid: str | None = None
    source_id: str | None = None
    target_id: str | None = None
    association_type: str | None = None


_FIELDS = ResultRow._fields[1:]  # all but kind, in order
_XML = _FIELDS.index("xml")


@functools.lru_cache(maxsize=64)
def _picker(columns: tuple[str, ...]) -> Callable[[tuple], tuple]:
    """Picks ResultRow's fields, in order, from a row with `columns` and None appended (the
    value of a field the projection lacks)."""
    missing = len(columns)
    return operator.itemgetter(*(columns.index(f) if f in columns else missing for f in _FIELDS))


_new_row = tuple.__new__  # every field given, in order: the generated __new__'s argument handling skipped


def to_result_rows(found: Sequence[tuple[str, Any]]) -> list[ResultRow]:
    """ResultRows from `(kind, row)` pairs, rows of the `registry.queries.selects` projections
    (their column names are ResultRow fields). On the path of every FindDocuments: 200 rows
    take 0.3 ms this way, 1.1 ms through `row._mapping`."""
    out = []
    parent = pick = None
    for kind, row in found:
        meta = getattr(row, "_parent", None)  # shared by the rows of one result
        if meta is None or meta is not parent:  # `_fields` costs ~1 µs a row: once a result
            parent, pick = meta, _picker(row._fields)
        values = pick((*row, None))
        values = (*values[:_XML], unpack(values[_XML]), *values[_XML + 1 :])  # registry.fragments
        out.append(_new_row(ResultRow, (kind, *values)))
    return out


def to_result_row(kind: str, row: Any) -> ResultRow:
    return to_result_rows([(kind, row)])[0]


def _binary_cursor_factory(factory: Any) -> Any:
    def make(connection: Any, **kwargs: Any) -> Any:
        cursor = factory(connection, **kwargs)
        cursor.format = pq.Format.BINARY
        return cursor

    return make


@contextmanager
def binary_results(conn: Connection) -> Iterator[None]:
    """Within the block, statements on `conn` return rows in PostgreSQL's binary format when
    the driver is psycopg with its default (server-side binding) cursor; otherwise a no-op.
    Loaders give the same Python values for our column types (text, integers, bytea)."""
    if psycopg is None or conn.dialect.driver != "psycopg":
        yield
        return
    raw = conn.connection.driver_connection
    factory = getattr(raw, "cursor_factory", None)
    if factory is not psycopg.Cursor:  # e.g. ClientCursor, which has no binary results
        yield
        return
    raw.cursor_factory = _binary_cursor_factory(factory)
    try:
        yield
    finally:
        raw.cursor_factory = factory


def _without_transaction(conn: Connection) -> None:
    """On PostgreSQL at READ COMMITTED, run the selects in autocommit: every statement takes
    its own snapshot either way, and BEGIN and ROLLBACK are two more round trips a query (~0.1
    ms of a FindDocuments). SQLite keeps its transaction (one snapshot for a whole plan)."""
    if conn.dialect.name == "postgresql" and conn.default_isolation_level == "READ COMMITTED":
        conn.execution_options(isolation_level="AUTOCOMMIT")


class StoreReader:
    """Executes stored queries; mixed into `RegistryStore` (expects `self.engine`)."""

    engine: Engine

    def run_plan(self, plan: Plan) -> list[ResultRow]:
        """Drive a plan on one connection. XdsFailure raised by the plan (XDSTooManyResults)
        passes through; a database failure becomes InfrastructureError (DESIGN.md §3 rule 3)."""
        try:
            with self.engine.connect() as conn, binary_results(conn):
                _without_transaction(conn)
                try:
                    step = next(plan)
                    while True:
                        rows: Sequence[Any] = conn.execute(step.statement).all()
                        step = plan.send(rows)
                except StopIteration as stop:
                    found = stop.value or []
        except SQLAlchemyError as exc:
            raise InfrastructureError(f"stored query failed in the database: {exc}") from exc
        return to_result_rows(found)

    def stored_query(self, query: StoredQuery, *, limit: int | None = None) -> list[ResultRow]:
        """Run a parsed stored query; at most `limit` objects, else XDSTooManyResults."""
        return self.run_plan(plan_for(query, limit))
