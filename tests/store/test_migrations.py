"""Alembic migration 0001 makes exactly `registry.schema.metadata`, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, insert, select

from registry import migrate
from registry.db import create_schema, make_engine
from registry.schema import metadata, patient

HEAD = "0005"  # the newest revision


def _engine(db_url):
    url, search_path = db_url
    return make_engine(url, pg_search_path=search_path)


def _shape(engine) -> dict:
    """Tables, columns (name, nullability, type class), PK, indexes and unique constraints."""
    insp = inspect(engine)
    out = {}
    for name in sorted(insp.get_table_names()):
        if name == "alembic_version":
            continue
        out[name] = {
            "columns": {
                c["name"]: (c["nullable"], type(c["type"]).__name__.upper()) for c in insp.get_columns(name)
            },
            "pk": tuple(insp.get_pk_constraint(name)["constrained_columns"]),
            "indexes": {
                i["name"]: (tuple(i["column_names"]), bool(i["unique"]))
                for i in insp.get_indexes(name)
                if not i.get("duplicates_constraint")
            },
            "unique": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(name)),
        }
    return out


def _metadata_shape() -> dict:
    out = {}
    for t in metadata.sorted_tables:
        out[t.name] = {
            "columns": sorted(c.name for c in t.columns),
            "nullable": {c.name: c.nullable for c in t.columns},
            "pk": tuple(c.name for c in t.primary_key.columns),
            "indexes": {i.name: (tuple(c.name for c in i.columns), bool(i.unique)) for i in t.indexes},
        }
    return out


def test_migration_matches_metadata(db_url):
    url, search_path = db_url
    migrate.upgrade(url, search_path=search_path)
    engine = _engine(db_url)
    try:
        shape = _shape(engine)
        expected = _metadata_shape()
        assert sorted(shape) == sorted(expected)
        for name, want in expected.items():
            got = shape[name]
            assert sorted(got["columns"]) == want["columns"], name
            assert {c: n for c, (n, _) in got["columns"].items()} == want["nullable"], name
            assert got["pk"] == want["pk"], name
            assert got["indexes"] == want["indexes"], name
        assert ("unique_id",) in shape["submission_set"]["unique"]
        assert ("unique_id", "version") in shape["folder"]["unique"]
        # Alembic's own comparison (types included) finds nothing to change.
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, metadata) == []
    finally:
        engine.dispose()


def test_migration_and_create_all_give_the_same_schema(db_url, tmp_path):
    """The migrated schema equals what `metadata.create_all` makes on the same engine type."""
    url, search_path = db_url
    migrate.upgrade(url, search_path=search_path)
    engine = _engine(db_url)
    try:
        migrated = _shape(engine)
    finally:
        engine.dispose()
    if url.startswith("sqlite"):
        other = make_engine(f"sqlite:///{tmp_path / 'create_all.db'}")
    else:
        other = _engine(db_url)
        with other.begin() as c:  # same schema: drop what the migration made first
            metadata.drop_all(c)
    try:
        create_schema(other)
        made = _shape(other)
    finally:
        other.dispose()

    assert migrated == made


def test_upgrade_is_idempotent_and_keeps_data(db_url):
    url, search_path = db_url
    migrate.upgrade(url, search_path=search_path)
    engine = _engine(db_url)
    try:
        with engine.begin() as c:
            c.execute(insert(patient).values(patient_id="P1^^^&1.2.3&ISO", created_at="20260101000000"))
        migrate.upgrade(url, search_path=search_path)
        migrate.upgrade(url, search_path=search_path)
        with engine.connect() as c:
            assert c.execute(select(patient.c.patient_id)).scalars().all() == ["P1^^^&1.2.3&ISO"]
        assert migrate.current_revision(url, search_path) == HEAD
    finally:
        engine.dispose()


def test_upgrade_adopts_a_schema_made_by_create_all(db_url):
    engine = _engine(db_url)
    try:
        create_schema(engine)
        url, search_path = db_url
        assert migrate.current_revision(url, search_path) is None
        migrate.upgrade(url, search_path=search_path)
        assert migrate.current_revision(url, search_path) == HEAD
    finally:
        engine.dispose()


def test_a_0001_database_upgrades_to_head_with_the_key_vault(db_url):
    url, search_path = db_url
    migrate.upgrade(url, search_path=search_path, revision="0001")
    engine = _engine(db_url)
    try:
        assert "dossier_key" not in inspect(engine).get_table_names()
        migrate.upgrade(url, search_path=search_path)
        assert "dossier_key" in inspect(engine).get_table_names()
        assert migrate.current_revision(url, search_path) == HEAD
    finally:
        engine.dispose()
