"""ITI TF-3 Table 4.2.4.1-2: XDSRegistryBusy ("too much activity") and XDSRegistryOutOfResources
("resources are low") for what the database reports that way; other failures stay XDSRegistryError.
A registration that finds the registry's tables locked by another writer beyond the wait the
database allows is XDSRegistryBusy, then goes through once the lock is gone (SQLite: a writer of
another process; PostgreSQL: a LOCK TABLE, with the lock_timeout a DBA sets)."""

from __future__ import annotations

import errno
import sqlite3

import psycopg
import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

import registry.db
from iti42.builders import PATIENT, document, one_document
from registry.endpoint import DocumentRegistry
from registry.errors import InfrastructureError, infrastructure_code
from registry.errors import XdsErrorCode as E
from registry.store import RegistryStore


def _wrapped(orig: BaseException) -> InfrastructureError:
    try:
        try:
            raise OperationalError("INSERT ...", {}, orig)
        except OperationalError as db_error:
            raise InfrastructureError("registry commit failed") from db_error
    except InfrastructureError as exc:
        return exc


@pytest.mark.parametrize("orig, code", [
    (psycopg.errors.LockNotAvailable("lock timeout"), E.XDSRegistryBusy),
    (psycopg.errors.SerializationFailure("could not serialize"), E.XDSRegistryBusy),
    (psycopg.errors.DeadlockDetected("deadlock"), E.XDSRegistryBusy),
    (psycopg.errors.QueryCanceled("statement timeout"), E.XDSRegistryBusy),
    (psycopg.errors.TooManyConnections("too many clients"), E.XDSRegistryBusy),
    (psycopg.errors.DiskFull("could not extend file"), E.XDSRegistryOutOfResources),
    (psycopg.errors.OutOfMemory("out of memory"), E.XDSRegistryOutOfResources),
    (psycopg.errors.UndefinedTable("no such table"), E.XDSRegistryError),
    (OSError(errno.ENOSPC, "No space left on device"), E.XDSRegistryOutOfResources),
    (RuntimeError("a bug"), E.XDSRegistryError),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.value)
def test_what_the_database_reports_chooses_the_code(orig, code):
    assert infrastructure_code(_wrapped(orig)) is code


def test_sqlite_result_codes_choose_the_code(tmp_path):
    path = tmp_path / "x.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as locked:
        other.execute("BEGIN IMMEDIATE")
    assert infrastructure_code(_wrapped(locked.value)) is E.XDSRegistryBusy
    assert infrastructure_code(_wrapped(locked.value), registry=False) is E.XDSRepositoryBusy
    holder.rollback()


@pytest.fixture
def short_waits(engine, monkeypatch):
    """The registry's engine waits 0.3 s for a lock (SQLite: Carnet's busy wait; PostgreSQL: lock_timeout)."""
    if engine.dialect.name == "sqlite":
        monkeypatch.setattr(registry.db, "SQLITE_BUSY_TIMEOUT_S", 0.3)
        url = engine.url.render_as_string(hide_password=False)
        short = registry.db.make_engine(url)
    else:
        short = engine

        @event.listens_for(short, "connect")
        def _lock_timeout(dbapi_connection, _record):
            dbapi_connection.execute("SET lock_timeout = '300ms'")
            dbapi_connection.commit()

        short.dispose()
    yield short
    if short is not engine:
        short.dispose()


def test_a_registration_that_finds_the_registry_locked_is_busy_then_goes_through(engine, short_waits):
    store = RegistryStore(short_waits)
    store.add_patient(PATIENT)
    registry = DocumentRegistry(store=store)
    blocker = engine.connect()
    try:
        if engine.dialect.name == "sqlite":
            blocker.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            blocker.execute(text("LOCK TABLE document_entry IN ACCESS EXCLUSIVE MODE"))
        errors = registry.register_submission(one_document(document("Locked")), None)
        assert [e.code for e in errors] == [E.XDSRegistryBusy]
        assert "retry later" in errors[0].message
    finally:
        blocker.rollback()
        blocker.close()
    assert registry.register_submission(one_document(document("Later")), None) == []


def test_a_stored_query_that_finds_the_registry_locked_is_busy(engine, short_waits):
    """ITI-18 on PostgreSQL under an ACCESS EXCLUSIVE lock (e.g. a schema migration) beyond lock_timeout."""
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite in WAL mode never blocks a reader behind a writer")
    from iti18.sq import error_codes, q, ql, run

    blocker = engine.connect()
    try:
        blocker.execute(text("LOCK TABLE document_entry IN ACCESS EXCLUSIVE MODE"))
        resp = run(short_waits, "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d", [
            ("$XDSDocumentEntryPatientId", q(PATIENT)),
            ("$XDSDocumentEntryStatus", ql("urn:oasis:names:tc:ebxml-regrep:StatusType:Approved")),
        ])
        assert error_codes(resp) == ["XDSRegistryBusy"]
    finally:
        blocker.rollback()
        blocker.close()
