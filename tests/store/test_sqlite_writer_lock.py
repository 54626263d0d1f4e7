"""SQLite writers of one database file queue in-process (registry.db), instead of meeting SQLite's
busy handler and its 1–100 ms sleeps.

Connections are opened with SQLite's own busy timeout at 0: a write that reached SQLite while
another connection held its write lock would fail at once with "database is locked". They never
do, because each write transaction holds the file's in-process lock from its first write statement
to its commit or rollback.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from sqlalchemy import text

from registry.db import _WriterLockConnection, make_engine


def connect(path, timeout: float = 0, **kw) -> sqlite3.Connection:
    """A connection that waits `timeout` seconds for another process's write lock, 0 by default (the
    file is in WAL mode already: see `db`)."""
    return sqlite3.connect(str(path), timeout=timeout, check_same_thread=False, factory=_WriterLockConnection, **kw)


@pytest.fixture
def db(tmp_path):
    """A WAL database with table t. Its connection stays open for the whole test, as a pool's do:
    closing the last one removes the WAL and shared-memory files, and the connections opened next
    (several threads at once, busy timeout 0) would then race to recreate them."""
    path = tmp_path / "registry.db"
    conn = connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)")
    yield path
    conn.close()


def _rows(path) -> int:
    with sqlite3.connect(str(path)) as conn:
        return conn.execute("SELECT count(*) FROM t").fetchone()[0]


def test_concurrent_write_transactions_never_meet_sqlites_lock(db):
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        conn = None
        try:
            conn = connect(db)
            for i in range(20):
                conn.execute("INSERT INTO t VALUES (?, ?)", (f"{w}-{i}", i))
                time.sleep(0.001)  # the transaction stays open a while: others must wait for it
                conn.execute("UPDATE t SET v = v + 1 WHERE k = ?", (f"{w}-{i}",))
                conn.commit()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            if conn is not None:
                conn.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert _rows(db) == 160


def test_without_the_queue_the_same_writers_do_collide(db):
    """The test above can fail: plain sqlite3 connections with the same busy timeout collide."""
    first = sqlite3.connect(str(db), timeout=0)
    second = sqlite3.connect(str(db), timeout=0)
    first.execute("INSERT INTO t VALUES ('a', 1)")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        second.execute("INSERT INTO t VALUES ('b', 1)")
    first.rollback()
    first.close()
    second.close()


def _writes_within(conn: sqlite3.Connection, seconds: float) -> bool:
    """Whether `conn` (another thread) gets to write and commit within `seconds`."""
    done = threading.Event()

    def write() -> None:
        try:
            conn.execute("INSERT INTO t VALUES (?, 0)", (f"w{time.monotonic_ns()}",))
            conn.commit()
            done.set()
        except sqlite3.Error:
            pass

    t = threading.Thread(target=write, daemon=True)
    t.start()
    return done.wait(seconds)


@pytest.mark.parametrize("end", ["commit", "rollback", "close"])
def test_the_end_of_a_transaction_lets_the_next_writer_in(db, end):
    holder, other = connect(db), connect(db)
    holder.execute("INSERT INTO t VALUES ('held', 1)")
    assert not _writes_within(connect(db), 0.2)  # queued behind the open transaction
    getattr(holder, end)()
    assert _writes_within(other, 30)
    assert _writes_within(connect(db), 30)
    other.close()


def test_a_statement_in_autocommit_mode_does_not_keep_the_queue(db):
    auto = connect(db, isolation_level=None)
    auto.execute("INSERT INTO t VALUES ('auto', 1)")  # its own transaction, committed at once
    assert _writes_within(connect(db), 30)
    auto.close()


def test_reads_never_queue_behind_a_writer(db):
    holder = connect(db)
    holder.execute("INSERT INTO t VALUES ('held', 1)")
    reader = connect(db)
    assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == 0  # WAL: the last committed state
    holder.rollback()


def test_each_file_has_its_own_queue(tmp_path, db):
    holder = connect(db)
    holder.execute("INSERT INTO t VALUES ('held', 1)")
    elsewhere = connect(tmp_path / "audit.db")
    elsewhere.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)")
    assert _writes_within(elsewhere, 30)
    holder.rollback()


def test_registry_engines_queue_their_writers(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}", pool_size=2)
    with engine.begin() as c:
        c.execute(text("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)"))
    a, b = engine.connect(), engine.connect()
    a.execute(text("INSERT INTO t VALUES ('a', 1)"))
    assert isinstance(a.connection.driver_connection, _WriterLockConnection)
    finished = threading.Event()

    def second() -> None:
        b.execute(text("INSERT INTO t VALUES ('b', 1)"))
        b.commit()
        finished.set()

    t = threading.Thread(target=second, daemon=True)
    t.start()
    assert not finished.wait(0.2)  # waits in the queue, not in SQLite's busy handler
    a.commit()
    assert finished.wait(30)
    a.close()
    b.close()
    engine.dispose()


def _hold_lock_elsewhere(path, seconds: float, started: threading.Event, *, commit_row: str | None = None):
    """Another process's writer, as SQLite sees it: a plain connection holding the write lock."""

    def run() -> None:
        other = sqlite3.connect(str(path), timeout=0, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        if commit_row:
            other.execute("INSERT INTO t VALUES (?, 0)", (commit_row,))
        started.set()
        time.sleep(seconds)
        other.commit()
        other.close()

    t = threading.Thread(target=run)
    t.start()
    return t


def test_a_write_waits_for_another_processs_transaction_then_commits(db):
    """No busy handler of SQLite's: the write that opens a transaction is retried in short steps,
    its stale empty transaction rolled back in between (the other writer committed meanwhile)."""
    started = threading.Event()
    holder = _hold_lock_elsewhere(db, 0.2, started, commit_row="theirs")
    assert started.wait(10)
    conn = connect(db, timeout=10)
    try:
        conn.execute("INSERT INTO t VALUES ('ours', 1)")
        conn.execute("UPDATE t SET v = v + 1 WHERE k = 'theirs'")
        conn.commit()
    finally:
        conn.close()
    holder.join()
    with sqlite3.connect(str(db)) as check:
        assert dict(check.execute("SELECT k, v FROM t").fetchall()) == {"theirs": 1, "ours": 1}


def test_a_write_gives_up_after_its_timeout_and_leaves_nothing(db):
    started = threading.Event()
    holder = _hold_lock_elsewhere(db, 1.5, started)
    assert started.wait(10)
    conn = connect(db, timeout=0.3)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            conn.execute("INSERT INTO t VALUES ('ours', 1)")
        assert not conn._holds  # the in-process queue is free for the next writer
    finally:
        conn.close()
    holder.join()
    assert _rows(db) == 0


def test_engine_connections_have_no_busy_handler_of_sqlites(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'e.db'}")
    try:
        with engine.connect() as c:
            assert c.execute(text("PRAGMA busy_timeout")).scalar() == 0
    finally:
        engine.dispose()
