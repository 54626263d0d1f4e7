"""Engines for the registry store: SQLite (WAL, busy_timeout) by default, PostgreSQL by URL.

DESIGN.md §7: SQLite writers without busy_timeout fail with "database is locked"; more worker
threads than pooled connections gives pool timeouts, so the pool is sized from the thread count.

SQLite has one writer at a time. A connection that finds the write lock taken is put to sleep by
SQLite's busy handler for 1, 2, 5, 10, 25 … ms, however soon the lock is released: with eight worker
threads writing (ITI-41 writes the pending journal, then registers), writers slept more than they
worked and the CPU stood idle (a third of the time, with ITI-41 p50 at 50 ms). So within a process the
writers of one database file queue on a `threading.Lock` (`_WriterLock`): a write statement takes
it before SQLite's lock, the commit or rollback that ends the transaction gives it back, and the next
writer runs at once.

Between processes (`carnet serve --workers N` on one SQLite file) the same busy handler made a writer
sleep 1, 2, 5, 10 … ms for a lock another process held for about one. So the connections have no
busy handler of SQLite's (busy_timeout 0): the statement that opens a write transaction, on finding
the lock taken, is retried in steps of 0.2 to 2 ms, up to `SQLITE_BUSY_TIMEOUT_S` in all, after
rolling back the empty transaction it opened (in WAL mode a retry inside it could never succeed once
the other writer committed: its read snapshot would be stale). Only that first statement is retried:
nothing has been done in the transaction yet (`registry.sqlite_wait`, as the audit spool's writes).

PostgreSQL connections are checked before use only when they sat idle in the pool for more than
`PING_AFTER_IDLE_S` (a restarted or restarting server, a firewall that dropped an idle
connection): pinging at every checkout (`pool_pre_ping`) costs one round trip per transaction,
a third of what an ITI-42 registration needs. A connection that fails while busy is still
detected: SQLAlchemy invalidates it and the whole pool on the first disconnect error.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import Engine

from registry.schema import metadata
from registry.sqlite_wait import retry_while_locked
import pix.schema  # noqa: F401,E402 - the PIX tables live on the same metadata (create_schema, Alembic)
import atna.arr.schema  # noqa: F401,E402 - the ARR tables live on the same metadata (create_schema, Alembic)

PING_AFTER_IDLE_S = 1.0
_CHECKED_IN = "carnet_checked_in"


SQLITE_BUSY_TIMEOUT_S = 30.0
_WRITE_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER", "BEGIN")
_writer_locks: dict[str, threading.Lock] = {}
_writer_locks_guard = threading.Lock()


def _writer_lock_for(database: str) -> threading.Lock | None:
    """The in-process writer lock of a database file; None for in-memory databases (one
    connection each: nothing to queue behind)."""
    if database in ("", ":memory:") or "mode=memory" in database:
        return None
    key = os.path.realpath(database.removeprefix("file:").split("?", 1)[0])
    with _writer_locks_guard:
        return _writer_locks.setdefault(key, threading.Lock())


class _WriterLockCursor(sqlite3.Cursor):
    def execute(self, sql, parameters=()):  # noqa: D102 - sqlite3.Cursor's
        return self._run(super().execute, sql, parameters)

    def executemany(self, sql, seq_of_parameters):  # noqa: D102
        return self._run(super().executemany, sql, seq_of_parameters)

    def _run(self, run, sql, parameters):
        conn = self.connection
        opens = conn._before(sql)  # this statement opens a write transaction
        try:
            if not opens:
                return run(sql, parameters)

            def roll_back() -> None:  # the transaction it opened: empty, and its snapshot stale
                if conn.in_transaction:
                    sqlite3.Connection.rollback(conn)

            return retry_while_locked(lambda: run(sql, parameters), conn._busy_timeout, after_failure=roll_back)
        finally:
            conn._after()


class _WriterLockConnection(sqlite3.Connection):
    """A sqlite3 connection whose write transactions hold the file's in-process writer lock (see
    the module docstring), from their first write statement to their commit or rollback."""

    def __init__(self, database, *args, timeout: float = SQLITE_BUSY_TIMEOUT_S, **kwargs) -> None:
        # no busy handler of SQLite's: a write transaction's first statement waits in `_run`
        super().__init__(database, *args, timeout=0, **kwargs)
        self._busy_timeout = timeout
        self._writer_lock = _writer_lock_for(str(database))
        self._holds = False

    def cursor(self, factory=_WriterLockCursor):  # noqa: D102
        return super().cursor(factory)

    # sqlite3.Connection.execute runs its cursor's statement in C, past the cursor's execute
    def execute(self, sql, parameters=()):  # noqa: D102
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql, seq_of_parameters):  # noqa: D102
        return self.cursor().executemany(sql, seq_of_parameters)

    def _before(self, sql: str) -> bool:
        """Take the writer queue before a statement that writes; True if it opens a write transaction."""
        if self._holds or not sql.lstrip()[:7].upper().startswith(_WRITE_VERBS):
            return False
        if self._writer_lock is not None:
            if not self._writer_lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_S):
                raise sqlite3.OperationalError("database is locked (in-process writer queue)")
            self._holds = True
        return not self.in_transaction

    def _after(self) -> None:
        if self._holds and not self.in_transaction:  # autocommit: the statement was its own transaction
            self._release()

    def _release(self) -> None:
        if self._holds:
            self._holds = False
            self._writer_lock.release()

    def _ending(self, end) -> None:
        """Run `end` (commit or rollback); the queue is released once no transaction is open."""
        try:
            end()
        finally:
            if not self.in_transaction:
                self._release()

    def commit(self) -> None:  # noqa: D102
        self._ending(super().commit)

    def rollback(self) -> None:  # noqa: D102
        self._ending(super().rollback)

    def close(self) -> None:  # noqa: D102
        try:
            super().close()
        finally:
            self._release()


def make_engine(url: str, *, pool_size: int = 8, pg_search_path: str | None = None) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S,
                          "factory": _WriterLockConnection},
            pool_size=pool_size,
            max_overflow=0,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - exercised by every sqlite test
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=0")  # waits for another process's lock: _WriterLockCursor._run
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
