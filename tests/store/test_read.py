"""The read side of the store: rows of every projection become ResultRows with the stored bytes
unchanged, PostgreSQL rows come back in the binary format, and the stored fragments are kept
compressed inside the row (registry.schema.xml_storage_sql), by create_all and migration alike."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select, text

from registry import constants as C
from registry import migrate
from registry.db import make_engine
from registry.model import Slot
from registry.queries.params import parse_parameters
from registry.schema import XML_TABLES, association, document_entry, patient
from registry.store import RegistryStore
from registry.fragments import unpack
from registry.store.read import ResultRow, binary_results

from iti18.fixtures import PATIENTS, load_nist_fixture
from support import fresh_engine
from iti18.sq import q, ql

# Bytes a text round trip could damage: NUL, invalid UTF-8, a backslash, CR.
ODD = b"<rim:ExtrinsicObject id='x'>\x00\xff\xfe\\x00\r\n</rim:ExtrinsicObject>"


def _entry(i: int, xml: bytes, pid: str = "P1^^^&1.2.3&ISO") -> dict:
    return dict(
        id=f"urn:uuid:00000000-0000-4000-8000-{i:012d}", lid=f"urn:uuid:00000000-0000-4000-8000-{i:012d}",
        version=1, unique_id=f"1.2.3.{i}", patient_id=pid, status=C.STATUS_APPROVED,
        object_type=C.DOC_ENTRY_STABLE,
        home="urn:oid:1.2.3" if i % 2 else None, xml=xml,
    )


def _find_documents(store: RegistryStore, pid: str) -> list[ResultRow]:
    query = parse_parameters(
        C.SQ_FIND_DOCUMENTS,
        [Slot("$XDSDocumentEntryPatientId", (q(pid),)), Slot("$XDSDocumentEntryStatus", (ql(C.STATUS_APPROVED),))],
    )
    return store.stored_query(query, limit=1000)


def test_fragments_come_back_byte_for_byte(engine):
    """Odd bytes, a compressible 60 kB fragment and an incompressible one (larger than a page:
    stored out of line even with STORAGE MAIN) are returned unchanged, with their columns."""
    big = b"<rim:ExtrinsicObject>" + b"<rim:Slot name='a'/>" * 3000 + b"</rim:ExtrinsicObject>"
    noise = bytes((i * 7919 + (i >> 8) * 104729) % 256 for i in range(20_000))
    fragments = {1: ODD, 2: big, 3: noise}
    with engine.begin() as c:
        c.execute(insert(document_entry), [_entry(i, xml) for i, xml in fragments.items()])
    rows = _find_documents(RegistryStore(engine), "P1^^^&1.2.3&ISO")
    by_uid = {r.unique_id: r for r in rows}
    assert sorted(by_uid) == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
    for i, xml in fragments.items():
        r = by_uid[f"1.2.3.{i}"]
        assert type(r.xml) is bytes and r.xml == xml
        assert (r.kind, r.patient_id, r.status, r.lid) == ("DocumentEntry", "P1^^^&1.2.3&ISO", C.STATUS_APPROVED, r.id)
        assert r.home == ("urn:oid:1.2.3" if i % 2 else None)
        assert (r.source_id, r.target_id, r.association_type) == (None, None, None)


def test_every_projection_maps_to_its_fields(engine):
    """GetAll over the NIST fixture: each ResultRow equals its table row read independently."""
    load_nist_fixture(engine, "A")
    query = parse_parameters(
        C.SQ_GET_ALL,
        [
            Slot("$patientId", (q(PATIENTS["A"]),)),
            Slot("$XDSDocumentEntryStatus", (ql(C.STATUS_APPROVED, C.STATUS_DEPRECATED),)),
            Slot("$XDSSubmissionSetStatus", (ql(C.STATUS_APPROVED),)),
            Slot("$XDSFolderStatus", (ql(C.STATUS_APPROVED),)),
        ],
    )
    rows = RegistryStore(engine).stored_query(query, limit=1000)
    kinds = {r.kind for r in rows}
    assert kinds == {"DocumentEntry", "SubmissionSet", "Folder", "Association"}
    with engine.connect() as c:
        docs = {r.id: r for r in c.execute(select(document_entry))}
        assocs = {r.id: r for r in c.execute(select(association))}
    for r in rows:
        if r.kind == "DocumentEntry":
            d = docs[r.id]
            assert (r.xml, r.patient_id, r.status, r.object_type, r.unique_id, r.lid, r.home) == (
                unpack(d.xml), d.patient_id, d.status, d.object_type, d.unique_id, d.lid, d.home
            )
        elif r.kind == "Association":
            a = assocs[r.id]
            assert r.patient_id is None and r.object_type is None
            assert (r.xml, r.source_id, r.target_id, r.association_type, r.status) == (
                unpack(a.xml), a.source_id, a.target_id, a.association_type, a.status
            )
        else:
            assert r.patient_id == PATIENTS["A"] and r.xml.startswith(b"<") and r.unique_id


def test_binary_results_on_psycopg_only_inside_the_block(engine):
    with engine.connect() as conn:
        with binary_results(conn):
            cursor = conn.connection.driver_connection.cursor()
            inside = getattr(cursor, "format", None)
            cursor.close()
            value = conn.execute(select(text("'\\x00ff'::bytea" if conn.dialect.name == "postgresql" else "x'00ff'"))).scalar()
        cursor = conn.connection.driver_connection.cursor()
        after = getattr(cursor, "format", None)
        cursor.close()
    assert value == b"\x00\xff"
    if engine.dialect.name == "postgresql":
        from psycopg import pq

        assert (inside, after) == (pq.Format.BINARY, pq.Format.TEXT)
    else:
        assert inside is None and after is None


# --- PostgreSQL storage of the fragments ------------------------------------------------------


def _pg_only(db_url):
    if not db_url[0].startswith("postgresql"):
        pytest.skip("PostgreSQL storage settings")


def _storage(engine) -> tuple[dict[tuple[str, str], tuple[str, str]], str]:
    """{(table, column): (attstorage, attcompression)} of the variable-length columns, and the
    compression expected of `xml` ('l' for lz4 when the server has it, '' for the default)."""
    with engine.connect() as c:
        rows = c.execute(
            text(
                """SELECT t.relname::text, a.attname::text, a.attstorage::text, a.attcompression::text
                     FROM pg_attribute a JOIN pg_class t ON t.oid = a.attrelid
                    WHERE t.relnamespace = current_schema()::regnamespace AND t.relkind = 'r'
                      AND a.attnum > 0 AND a.attlen = -1"""
            )
        ).all()
        try:
            with c.begin_nested():
                c.execute(text("SET LOCAL default_toast_compression = lz4"))
            lz4 = "l"
        except Exception:  # noqa: BLE001 - a server without lz4
            lz4 = ""
    return {(t, col): (storage, compression) for t, col, storage, compression in rows}, lz4


def _expected(got: dict, lz4: str) -> dict:
    """Every variable-length column of the XML tables in the row (MAIN), `xml` lz4; the other
    tables keep PostgreSQL's defaults (EXTENDED)."""
    return {
        (t, col): ("m" if t in XML_TABLES else "x", lz4 if col == "xml" and t in XML_TABLES else "")
        for t, col in got
    }


def test_xml_stored_compressed_in_the_row_by_create_all(db_url, engine):
    _pg_only(db_url)
    storage, lz4 = _storage(engine)
    assert ("document_entry", "xml") in storage and storage == _expected(storage, lz4)
    # A 6 kB fragment (the size of a real DocumentEntry) stays in the heap, compressed, and
    # nothing of the row goes to TOAST.
    fragment = b"<rim:ExtrinsicObject>" + b"<rim:Slot name='creationTime'><rim:ValueList/></rim:Slot>" * 100 + b"</rim:ExtrinsicObject>"
    with engine.begin() as c:
        c.execute(insert(patient).values(patient_id="P1^^^&1.2.3&ISO", created_at="20260101000000"))
        c.execute(insert(document_entry), [_entry(i, fragment) for i in range(20)])
    with engine.connect() as c:
        stored = c.execute(text("SELECT max(pg_column_size(xml)) FROM document_entry")).scalar()
        toast = c.execute(
            text("SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'document_entry'::regclass")
        ).scalar()
        toast = c.execute(text(f"SELECT count(*) FROM {toast}")).scalar()
    assert stored < len(fragment) / 2 and toast == 0


def test_xml_stored_compressed_in_the_row_by_migration(db_url):
    _pg_only(db_url)
    url, search_path = db_url
    migrate.upgrade(url, search_path=search_path)
    engine = make_engine(url, pg_search_path=search_path)
    try:
        storage, lz4 = _storage(engine)
    finally:
        engine.dispose()
    assert ("document_entry", "xml") in storage and storage == _expected(storage, lz4)


# --- PostgreSQL: stored-query rows streamed, fragments unpacked as loaded ---------------------


def test_stored_query_rows_stream_in_chunks_with_fragments_unpacked(engine):
    """More rows than one chunk, packed and plain fragments mixed: every row arrives, in order,
    with its fragment as stored before packing; an empty result still has its columns."""
    from registry.fragments import pack
    from registry.store.read import _StreamedFragmentCursor, fragment_results

    n = 3 * _StreamedFragmentCursor.CHUNK_ROWS + 5
    xml = {i: b"<rim:ExtrinsicObject id='%d'>" % i + b"<rim:Slot name='s'/>" * (i % 7) + b"</rim:ExtrinsicObject>"
           for i in range(n)}
    with engine.begin() as c:
        c.execute(insert(document_entry), [_entry(i, pack(x) if i % 3 else x) for i, x in xml.items()])
    stmt = select(document_entry.c.unique_id, document_entry.c.xml).order_by(document_entry.c.version, document_entry.c.unique_id)
    with engine.connect() as conn, fragment_results(conn) as unpacked:
        cursor = conn.connection.driver_connection.cursor()
        streamed = isinstance(cursor, _StreamedFragmentCursor)
        cursor.close()
        rows = conn.execute(stmt).all()
        empty = conn.execute(stmt.where(document_entry.c.patient_id == "nobody")).all()
        keys = list(conn.execute(stmt.where(document_entry.c.patient_id == "nobody")).keys())
    assert unpacked is streamed is (engine.dialect.name == "postgresql")
    expected = sorted((f"1.2.3.{i}", x) for i, x in xml.items())
    got = [(u, x if unpacked else unpack(x)) for u, x in rows]
    assert got == expected
    assert empty == [] and keys == ["unique_id", "xml"]
    # and through the store, whichever way the rows came
    found = _find_documents(RegistryStore(engine), "P1^^^&1.2.3&ISO")
    assert sorted((r.unique_id, r.xml) for r in found) == expected


def test_a_select_failing_mid_stream_leaves_the_connection_usable(tmp_path):
    """PostgreSQL (the selects streamed there): an error after the first chunks (division by zero
    at row 40) is raised as the store's InfrastructureError, and the pooled connection answers the
    next query."""
    with fresh_engine("postgresql", tmp_path) as engine:
        _failing_mid_stream(engine)


def _failing_mid_stream(engine) -> None:
    from sqlalchemy.exc import DBAPIError

    from registry.errors import InfrastructureError
    from registry.queries.plans import Step
    from registry.store.read import fragment_results

    failing = text("SELECT 1 / (n - 40) AS x FROM generate_series(1, 100) AS n")
    with engine.connect() as conn:
        with fragment_results(conn):
            with pytest.raises(DBAPIError, match="division by zero"):
                conn.execute(failing).all()
            conn.rollback()
            assert conn.execute(text("SELECT 7")).scalar() == 7
    store = RegistryStore(engine)

    def plan():
        yield Step("DocumentEntry", failing)

    with pytest.raises(InfrastructureError):
        store.run_plan(plan())
    with engine.begin() as c:
        c.execute(insert(document_entry), [_entry(1, ODD)])
    assert [r.xml for r in _find_documents(store, "P1^^^&1.2.3&ISO")] == [ODD]
