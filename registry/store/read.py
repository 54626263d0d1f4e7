"""The read side of the registry store: runs stored query plans (ITI-18).

The only place SQL runs for queries. `StoreReader` is a mixin expecting `self.engine`;
`registry.store.RegistryStore` combines it with the write side. A plan
(`registry.queries.plans`) yields selects; this module executes them on one connection and
turns the rows into `ResultRow`s, the shape the AccessPolicy port filters.

Speed (issue 2: FindDocuments of 200 entries, p50 ≤ 5 ms): on PostgreSQL through psycopg the
rows come back in the binary result format, streamed (`fragment_results`). In the text format PostgreSQL
hex-encodes every `bytea` fragment (12.6 kB of text for a 6.3 kB fragment) and psycopg decodes
it again: half of the query time. In binary the fragment travels as its own bytes. The other
half was TOAST look-ups, removed by keeping rows whole (`registry.schema.xml_storage_sql`).
"""

from __future__ import annotations

import functools
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
    from psycopg.adapt import Loader
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


@functools.lru_cache(maxsize=64)
def _maker(columns: tuple[str, ...], unpacked: bool) -> Callable[[str, Any], "ResultRow"]:
    """`make(kind, row)`: the ResultRow of a row with `columns` (a projection of
    `registry.queries.selects`), its fields taken by position, None where the projection has
    none, the fragment unpacked unless `unpacked`. Written out as one expression per layout (as
    `collections.namedtuple` writes its `__new__`): one tuple a row, where picking the fields
    with an itemgetter and rebuilding the tuple made four (200 rows: 0.42 → 0.30 ms, measured
    alone on a slow VM). The column names are the projections' own, never input."""
    fields = []
    for f in _FIELDS:
        if f not in columns:
            fields.append("None")
        elif f == "xml" and not unpacked:
            fields.append(f"unpack(r[{columns.index(f)}])")
        else:
            fields.append(f"r[{columns.index(f)}]")
    source = f"lambda kind, r: new(ResultRow, (kind, {', '.join(fields)}))"
    return eval(source, {"new": tuple.__new__, "ResultRow": ResultRow, "unpack": unpack})  # noqa: S307


def to_result_rows(found: Sequence[tuple[str, Any]], *, unpacked: bool = False) -> list[ResultRow]:
    """ResultRows from `(kind, row)` pairs, rows of the `registry.queries.selects` projections
    (their column names are ResultRow fields). On the path of every FindDocuments (`_maker`).
    `unpacked`: the fragments were unpacked as the rows were loaded (`fragment_results`); else
    they are here."""
    out = []
    parent = make = None
    for kind, row in found:
        meta = getattr(row, "_parent", None)  # shared by the rows of one result
        if meta is None or meta is not parent:  # `_fields` costs ~1 µs a row: once a result
            parent, make = meta, _maker(tuple(row._fields), unpacked)
        out.append(make(kind, row))
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
def _swap_cursor_factory(conn: Connection, make: Callable[[Any], Any]) -> Iterator[bool]:
    """Within the block, the driver connection under `conn` makes its cursors with
    `make(default factory)`, when the driver is psycopg with its default (server-side binding)
    cursor; yields whether it does."""
    if psycopg is None or conn.dialect.driver != "psycopg":
        yield False
        return
    raw = conn.connection.driver_connection
    factory = getattr(raw, "cursor_factory", None)
    if factory is not psycopg.Cursor:  # e.g. ClientCursor, which has no binary results
        yield False
        return
    raw.cursor_factory = make(factory)
    try:
        yield True
    finally:
        raw.cursor_factory = factory


@contextmanager
def binary_results(conn: Connection) -> Iterator[None]:
    """Within the block, statements on `conn` return rows in PostgreSQL's binary format when
    the driver is psycopg with its default (server-side binding) cursor; otherwise a no-op.
    Loaders give the same Python values for our column types (text, integers, bytea)."""
    with _swap_cursor_factory(conn, _binary_cursor_factory):
        yield


if psycopg is not None:

    class _FragmentLoader(Loader):
        """A binary `bytea` value read as a stored fragment: unpacked (`registry.fragments`)."""

        format = pq.Format.BINARY

        def load(self, data: Any) -> bytes:
            return unpack(data)

    class _StreamedFragmentCursor(psycopg.Cursor):
        """A psycopg cursor for the stored-query selects: binary results, `bytea` columns (the
        `xml` fragments, the only ones the projections select) unpacked as they are loaded, and
        the rows taken in as PostgreSQL sends them (`Cursor.stream`, in chunks of `CHUNK_ROWS`)
        rather than once the whole result has arrived.

        Why (issue 2, FindDocuments of 200 entries): PostgreSQL produces the rows on one core
        while this process turns those already received into Python values and unpacks their
        fragments on the other. With `fetchall` the two ran one after the other: measured on the
        same 200-row selects, fetch and unpack took 4.8 ms at p50 that way, 3.6 ms streamed.
        `execute` reads the whole result before it returns, so the connection is free again as
        with any other cursor; `fetch*` then hand out the rows kept. An empty result is asked
        again the ordinary way (psycopg keeps no description of an empty stream). Streamed
        statements are not prepared on the server (psycopg cannot): planning this select costs
        PostgreSQL less than the overlap gives back."""

        CHUNK_ROWS = 32

        def __init__(self, connection: Any, **kwargs: Any) -> None:
            super().__init__(connection, **kwargs)
            self.format = pq.Format.BINARY
            self.adapters.register_loader("bytea", _FragmentLoader)
            self._kept: list | None = None
            self._kept_description: Any = None

        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            if kwargs:  # prepare= or binary=: not for a streamed select
                self._kept = None
                return super().execute(query, params, **kwargs)
            rows: list = []
            description = None
            for row in self.stream(query, params, size=self.CHUNK_ROWS):
                if description is None:
                    description = super().description
                rows.append(row)
            if description is None:
                # No row: psycopg keeps no description of an empty streamed result, and SQLAlchemy
                # needs one. Asked again, as an ordinary select (its own snapshot, as any statement
                # outside a transaction: rows committed since then are simply found).
                self._kept = None
                return super().execute(query, params)
            self._kept, self._kept_description, self._kept_pos = rows, description, 0
            return self

        @property
        def description(self) -> Any:
            return self._kept_description if self._kept is not None else super().description

        @property
        def rowcount(self) -> int:
            return len(self._kept) if self._kept is not None else super().rowcount

        def fetchone(self) -> Any:
            if self._kept is None:
                return super().fetchone()
            if self._kept_pos >= len(self._kept):
                return None
            self._kept_pos += 1
            return self._kept[self._kept_pos - 1]

        def fetchmany(self, size: int = 0) -> list:
            if self._kept is None:
                return super().fetchmany(size)
            size = size or self.arraysize
            out = self._kept[self._kept_pos : self._kept_pos + size]
            self._kept_pos += len(out)
            return out

        def fetchall(self) -> list:
            if self._kept is None:
                return super().fetchall()
            out = self._kept[self._kept_pos :] if self._kept_pos else self._kept
            self._kept_pos = len(self._kept)
            return out

        def __iter__(self) -> Iterator[Any]:
            if self._kept is None:
                yield from super().__iter__()
                return
            while (row := self.fetchone()) is not None:
                yield row


@contextmanager
def fragment_results(conn: Connection) -> Iterator[bool]:
    """Within the block, selects on `conn` (psycopg with its default cursor) run on a
    `_StreamedFragmentCursor`: binary rows, streamed, fragments unpacked as loaded; yields
    whether they do (else rows come as usual and `to_result_rows` unpacks)."""
    with _swap_cursor_factory(conn, lambda _factory: _StreamedFragmentCursor) as streamed:
        yield streamed


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
            with self.engine.connect() as conn, fragment_results(conn) as unpacked:
                _without_transaction(conn)
                try:
                    step = next(plan)
                    while True:
                        rows: Sequence[Any] = conn.execute(step.statement, step.parameters).all()
                        step = plan.send(rows)
                except StopIteration as stop:
                    found = stop.value or []
        except SQLAlchemyError as exc:
            raise InfrastructureError(f"stored query failed in the database: {exc}") from exc
        return to_result_rows(found, unpacked=unpacked)

    def stored_query(self, query: StoredQuery, *, limit: int | None = None) -> list[ResultRow]:
        """Run a parsed stored query; at most `limit` objects, else XDSTooManyResults."""
        return self.run_plan(plan_for(query, limit))
