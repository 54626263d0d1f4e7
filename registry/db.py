"""Engines for the registry store: SQLite (WAL, busy_timeout) by default, PostgreSQL by URL.

DESIGN.md §7: SQLite writers without busy_timeout fail with "database is locked"; more worker
threads than pooled connections gives pool timeouts, so the pool is sized from the thread count.

PostgreSQL connections are checked before use only when they sat idle in the pool for more than
`PING_AFTER_IDLE_S` (a restarted or restarting server, a firewall that dropped an idle
connection): pinging at every checkout (`pool_pre_ping`) costs one round trip per transaction,
a third of what an ITI-42 registration needs. A connection that fails while busy is still
detected: SQLAlchemy invalidates it and the whole pool on the first disconnect error.
"""

from __future__ import annotations

import time

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import Engine

from registry.schema import metadata
import pix.schema  # noqa: F401,E402 - the PIX tables live on the same metadata (create_schema, Alembic)
import atna.arr.schema  # noqa: F401,E402 - the ARR tables live on the same metadata (create_schema, Alembic)

PING_AFTER_IDLE_S = 1.0
_CHECKED_IN = "carnet_checked_in"


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
    engine = create_engine(url, pool_size=pool_size, max_overflow=0, connect_args=connect_args)
    _ping_when_idle(engine, PING_AFTER_IDLE_S)
    return engine


def _ping_when_idle(engine: Engine, idle_s: float) -> None:
    """Ping a pooled connection at checkout if it was checked in more than `idle_s` ago; a dead
    one is replaced (SQLAlchemy retries the checkout on DisconnectionError)."""

    @event.listens_for(engine.pool, "checkin")
    def _checked_in(_dbapi_conn, record) -> None:
        if record is not None:
            record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _checkout(dbapi_conn, record, _proxy) -> None:
        since = record.info.get(_CHECKED_IN)
        if since is None or time.monotonic() - since <= idle_s:
            return  # fresh from connect(), or in steady use
        try:
            if not engine.dialect.do_ping(dbapi_conn):
                raise exc.DisconnectionError("ping failed")
        except exc.DisconnectionError:
            raise
        except Exception as error:  # noqa: BLE001 - any driver error means "not usable"
            raise exc.DisconnectionError(f"ping failed: {error}") from error


def create_schema(engine: Engine) -> None:
    """Create every table (tests and first start); `carnet db upgrade` runs Alembic instead."""
    metadata.create_all(engine)
