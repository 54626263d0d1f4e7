"""The Audit Record Repository's store (SQLAlchemy Core, blocking: call it on a thread pool).

`ArrStore.ingest(raw_messages)` is the one entry point for every way audit messages arrive (the
syslog receivers in batches, and Carnet's own sender for a `local` destination): parse each
RFC 5424 message and its DICOM audit message (`atna.arr.records.stored_audit`), then store the
batch in one transaction. A malformed message is counted in the result, never raised: the others
of its batch are stored. A message already stored (same `dedupe_key`) is counted as a duplicate
and not stored again, so a sender that resends after a lost acknowledgement causes no double
(at-least-once delivery + dedupe here = each event stored once; DESIGN.md §3 rule 9).

Concurrency: two nodes (or two batches) racing the same new key cannot both insert it (unique
index); the loser's transaction fails, and the batch is retried (a few times), seeing the winner's row.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Sequence

import attrs
from sqlalchemy import Boolean, LargeBinary, and_, exists, insert, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from atna.arr.query import AuditQuery, PatientRef
from atna.arr.records import MalformedAudit, StoredAudit, received_time, stored_audit
from atna.arr.schema import audit_record, audit_record_participant, audit_record_patient, audit_record_type
from registry.uuid7 import uuid7_hex

log = logging.getLogger("carnet.atna.arr")

# SQLite binds at most 32 766 variables per statement (SQLITE_MAX_VARIABLE_NUMBER, 3.32+);
# the dedupe look-up binds one per key.
_KEY_CHUNK = 500
_RACE_RETRIES = 5


def _copies(conn) -> bool:
    """PostgreSQL through psycopg: rows go in with COPY (see `_copy`)."""
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"


def _copy_type(column) -> str:
    if isinstance(column.type, LargeBinary):
        return "bytea"
    if isinstance(column.type, Boolean):
        return "bool"
    return "text"  # String columns: varchar and text share the binary COPY format


def _copy(conn, table, rows: list[dict]) -> None:
    """`rows` into `table` by one binary COPY on `conn`'s connection, in its transaction. An event is
    about five rows in four tables with twelve indexes between them: as INSERTs (even pipelined) each
    row was a statement for PostgreSQL to bind and run, which made the built-in ARR the largest cost
    of auditing on PostgreSQL. Constraint violations fail the COPY as they failed the INSERT
    (IntegrityError, so that `store` retries)."""
    columns = [c for c in table.columns]
    names = ", ".join(c.name for c in columns)
    cursor = conn.connection.driver_connection.cursor()
    try:
        with cursor.copy(f"COPY {table.name} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([_copy_type(c) for c in columns])
            keys = [c.name for c in columns]
            for row in rows:
                copy.write_row([row.get(k) for k in keys])
    except Exception as exc:  # psycopg's errors, as SQLAlchemy would have wrapped them
        import psycopg

        if isinstance(exc, psycopg.Error):
            raise DBAPIError.instance(f"COPY {table.name}", None, exc, psycopg.Error) from exc
        raise
    finally:
        cursor.close()


@attrs.frozen
class IngestResult:
    """What one batch gave: stored (new), duplicates (already there), malformed (refused)."""

    stored: int = 0
    duplicates: int = 0
    malformed: int = 0
    problems: tuple[str, ...] = ()  # one line per malformed message (for the log, never echoed)

    def __add__(self, other: "IngestResult") -> "IngestResult":
        return IngestResult(
            self.stored + other.stored,
            self.duplicates + other.duplicates,
            self.malformed + other.malformed,
            self.problems + other.problems,
        )


@attrs.frozen
class AuditRow:
    """A stored audit message as the readers (ITI-81, history) need it."""

    id: str
    raw: bytes
    received_at: str
    sender_host: str | None
    peer_address: str | None


class ArrStore:
    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock

    # --- writing ----------------------------------------------------------------------------

    def ingest(
        self,
        raw_messages: Sequence[bytes],
        *,
        peer_address: str | None = None,
        peers: Sequence[str | None] | None = None,
    ) -> IngestResult:
        """Parse and store RFC 5424 syslog messages carrying DICOM audit messages (blocking).
        `peer_address`: the sender of every message, or `peers`: one per message."""
        received = received_time(self.clock())
        records: list[StoredAudit] = []
        problems: list[str] = []
        for i, raw in enumerate(raw_messages):
            peer = peers[i] if peers is not None else peer_address
            try:
                records.append(stored_audit(raw, received_at=received, peer_address=peer))
            except MalformedAudit as exc:
                problems.append(str(exc))
        stored, duplicates = self.store(records) if records else (0, 0)
        return IngestResult(stored, duplicates, len(problems), tuple(problems))

    def store(self, records: Sequence[StoredAudit]) -> tuple[int, int]:
        """Store parsed records in one transaction; returns (stored, duplicates)."""
        for attempt in range(_RACE_RETRIES):
            try:
                return self._store_once(records)
            except (IntegrityError, OperationalError) as exc:
                # Another writer committed one of our keys between our look-up and our insert
                # (IntegrityError), or, on SQLite, committed while our read transaction waited to
                # become a write one (SQLITE_BUSY_SNAPSHOT): look again.
                if attempt == _RACE_RETRIES - 1 or (
                    isinstance(exc, OperationalError) and self.engine.dialect.name != "sqlite"
                ):
                    raise
                log.info("audit batch raced another writer; retrying (%s)", type(exc).__name__)
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _store_once(self, records: Sequence[StoredAudit]) -> tuple[int, int]:
        with self.engine.begin() as conn:
            keys = list(dict.fromkeys(r.dedupe_key for r in records))
            seen: set[str] = set()
            for i in range(0, len(keys), _KEY_CHUNK):
                chunk = keys[i : i + _KEY_CHUNK]
                seen.update(
                    conn.execute(select(audit_record.c.dedupe_key).where(audit_record.c.dedupe_key.in_(chunk)))
                    .scalars()
                    .all()
                )
            fresh: list[StoredAudit] = []
            for r in records:
                if r.dedupe_key in seen:
                    continue
                seen.add(r.dedupe_key)  # a duplicate inside the batch too
                fresh.append(r)
            if not fresh:
                return 0, len(records)
            rows, types, participants, patients = [], [], [], []
            for r in fresh:
                record_id = uuid7_hex()  # time-ordered: new rows share index pages (registry.uuid7)
                rows.append(
                    {
                        "id": record_id,
                        "dedupe_key": r.dedupe_key,
                        "event_id_code": r.event_id_code,
                        "event_action": r.event_action,
                        "event_time": r.event_time,
                        "outcome": r.outcome,
                        "purpose_of_use": r.purpose_of_use,
                        "source_id": r.source_id,
                        "source_site": r.source_site,
                        "sender_host": r.sender_host,
                        "peer_address": r.peer_address,
                        "received_at": r.received_at,
                        "raw": r.raw,
                    }
                )
                types += [{"record_id": record_id, "code": c, "system": s} for c, s in r.types]
                participants += [
                    {
                        "record_id": record_id,
                        "user_id": p.user_id,
                        "alt_user_id": p.alt_user_id,
                        "user_name": p.user_name,
                        "requestor": p.requestor,
                        "network_address": p.network_address,
                        "role_code": p.role_code,
                    }
                    for p in r.participants
                ]
                patients += [
                    {"record_id": record_id, "patient_id": p.patient_id, "id_value": p.value, "id_system": p.system}
                    for p in r.patients
                ]
            for table, table_rows in ((audit_record, rows), (audit_record_type, types),
                                      (audit_record_participant, participants), (audit_record_patient, patients)):
                if not table_rows:
                    continue
                if _copies(conn):
                    _copy(conn, table, table_rows)
                else:
                    conn.execute(insert(table), table_rows)
            return len(fresh), len(records) - len(fresh)

    # --- reading ----------------------------------------------------------------------------

    def search(self, query: AuditQuery) -> tuple[list[AuditRow], bool]:
        """The page of `query` (newest EventDateTime first) and whether more follow."""
        t = audit_record.c
        conditions = []
        for bound in query.dates:
            if bound.low is not None:
                conditions.append(t.event_time >= bound.low)
            if bound.high is not None:
                conditions.append(t.event_time < bound.high)
        for alts in query.patients:
            conditions.append(_patient_match(alts))
        for alts in query.types:
            conditions.append(t.event_id_code.in_(alts))
        for alts in query.subtypes:
            ty = audit_record_type.c
            conditions.append(exists().where(and_(ty.record_id == t.id, ty.code.in_(alts))))
        for alts in query.outcomes:
            conditions.append(t.outcome.in_(alts))
        for alts in query.actions:
            conditions.append(t.event_action.in_(alts))
        for alts in query.sources:
            conditions.append(t.source_id.in_(alts))
        pa = audit_record_participant.c
        for alts in query.agents:
            conditions.append(
                exists().where(and_(pa.record_id == t.id, or_(pa.user_id.in_(alts), pa.alt_user_id.in_(alts))))
            )
        for alts in query.addresses:
            conditions.append(exists().where(and_(pa.record_id == t.id, pa.network_address.in_(alts))))
        stmt = (
            select(t.id, t.raw, t.received_at, t.sender_host, t.peer_address)
            .where(*conditions)
            .order_by(t.event_time.desc().nulls_last(), t.id.desc())
            .limit(query.count + 1)
            .offset(query.offset)
        )
        with self.engine.connect() as conn:
            rows = [AuditRow(*r) for r in conn.execute(stmt)]
        return rows[: query.count], len(rows) > query.count

    def history(self, patient: PatientRef, *, count: int, offset: int = 0) -> tuple[list[AuditRow], bool]:
        """The events naming `patient`, newest first (DESIGN.md §4 "History")."""
        return self.search(AuditQuery(patients=((patient,),), count=count, offset=offset))

    def get(self, record_id: str) -> AuditRow | None:
        t = audit_record.c
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.id, t.raw, t.received_at, t.sender_host, t.peer_address).where(t.id == record_id)
            ).first()
        return AuditRow(*row) if row else None

    def count(self) -> int:
        from sqlalchemy import func

        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(audit_record)).scalar_one()


def _patient_match(alternatives: Iterable[PatientRef]):
    pt = audit_record_patient.c
    ors = []
    for ref in alternatives:
        cond = pt.id_value == ref.value
        if ref.system is not None:
            cond = and_(cond, pt.id_system == ref.system)
        ors.append(cond)
    return exists().where(and_(pt.record_id == audit_record.c.id, or_(*ors)))
