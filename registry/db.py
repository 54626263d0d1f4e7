"""Engines for the registry store: SQLite (WAL, busy_timeout) by default, PostgreSQL by URL.

DESIGN.md §7: SQLite writers without busy_timeout fail with "database is locked"; more worker
threads than pooled connections gives pool timeouts, so the pool is sized from the thread count.
"""

from __future__ import annotations

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from registry.schema import metadata


def make_engine(url: str, *, pool_size: int = 8, pg_search_path: str | None = None) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=0,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - exercised by every sqlite test
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if url.startswith("postgresql") and "+psycopg" not in url.split("://", 1)[0]:
        url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    connect_args = {}
    if pg_search_path:
        connect_args["options"] = f"-csearch_path={pg_search_path}"
    return create_engine(
        url, pool_size=pool_size, max_overflow=0, pool_pre_ping=True, connect_args=connect_args
    )


def create_schema(engine: Engine) -> None:
    """Create every table (tests and first start); `carnet db upgrade` runs Alembic instead."""
    metadata.create_all(engine)
