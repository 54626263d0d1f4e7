"""Shared fixtures.

Registry tests take `engine` (or `db_url`): each runs once on SQLite and once on PostgreSQL
(127.0.0.1:5432, database `test`, or CARNET_TEST_PG_URL). PostgreSQL tests use a schema of their
own, dropped afterwards, so runs do not see each other. A missing PostgreSQL skips those tests,
except in CI (CI=true) where it fails them.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from registry.db import create_schema, make_engine

from support import IN_CI, PG_URL


def _pg_available() -> str | None:
    try:
        eng = make_engine(PG_URL, pool_size=1)
        with eng.connect() as c:
            c.execute(text("select 1"))
        eng.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any connection failure means "not available"
        return str(exc)


_PG_PROBLEM: list[str | None] = []


def pg_problem() -> str | None:
    if not _PG_PROBLEM:
        _PG_PROBLEM.append(_pg_available())
    return _PG_PROBLEM[0]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A database URL with an empty schema-less database; yields (url, search_path)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}", None
        return
    problem = pg_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI: {problem}")
        pytest.skip(f"PostgreSQL not available: {problem}")
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = make_engine(PG_URL, pool_size=1)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield PG_URL, schema
    finally:
        with admin.begin() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def engine(db_url):
    """An engine on a fresh registry schema, SQLite and PostgreSQL."""
    url, search_path = db_url
    eng = make_engine(url, pg_search_path=search_path)
    create_schema(eng)
    yield eng
    eng.dispose()
