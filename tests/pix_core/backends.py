"""The backends the PIX cross-reference contract runs on: the in-memory fake, SQLite and
PostgreSQL (a fresh schema per test, as tests/conftest.py's `db_url` makes)."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Iterator

import pytest
from sqlalchemy import text

from registry.db import create_schema, make_engine
from support import IN_CI, PG_URL

_PG: list[str | None] = []


def _pg_problem() -> str | None:
    if not _PG:
        try:
            eng = make_engine(PG_URL, pool_size=1)
            with eng.connect() as c:
                c.execute(text("select 1"))
            eng.dispose()
            _PG.append(None)
        except Exception as exc:  # noqa: BLE001 - any failure means "not available"
            _PG.append(str(exc))
    return _PG[0]


@contextmanager
def engine_for(kind: str, tmp_path) -> Iterator:
    """A fresh engine with the whole schema (registry + PIX) on `kind` (sqlite, postgresql)."""
    if kind == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'pix.db'}")
        create_schema(eng)
        try:
            yield eng
        finally:
            eng.dispose()
        return
    problem = _pg_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI: {problem}")
        pytest.skip(f"PostgreSQL not available: {problem}")
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = make_engine(PG_URL, pool_size=1)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    eng = make_engine(PG_URL, pg_search_path=schema)
    try:
        create_schema(eng)
        yield eng
    finally:
        eng.dispose()
        with admin.begin() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def refuse_identifier(engine, value: str) -> None:
    """Make the database itself refuse (a trigger raising an error) to insert a pix_identity
    row of this value: a failure inside the database, after validation, for the tests of
    per-message rollback."""
    literal = value.replace("'", "''")
    with engine.begin() as c:
        if engine.dialect.name == "sqlite":
            c.execute(text(
                f"CREATE TRIGGER pix_test_refuse BEFORE INSERT ON pix_identity WHEN NEW.value = '{literal}' "
                "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
            ))
            return
        c.execute(text(
            "CREATE FUNCTION pix_test_refuse() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.value = '{literal}' THEN RAISE EXCEPTION 'refused by a test trigger'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql"
        ))
        c.execute(text(
            "CREATE TRIGGER pix_test_refuse BEFORE INSERT ON pix_identity "
            "FOR EACH ROW EXECUTE FUNCTION pix_test_refuse()"
        ))
