"""The ARR store without sockets: ingest (the in-process `local` destination), dedupe under a
race, the FHIR mapping of a sample field by field, the history entry, migration 0004."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import func, inspect, select

from atna.arr.fhir import audit_event_resource
from atna.arr.history import history_entry
from atna.arr.local import LocalArrDestination
from atna.arr.query import parse_search
from atna.arr.records import read_audit
from atna.arr.schema import TABLES, audit_record, audit_record_patient
from atna.arr.store import ArrStore
from atna.dicom import ActiveParticipant, AuditEvent, AuditSource, Code, ParticipantObject, audit_message
from atna_arr.arr_support import sample_files, sample_xml, syslog_message
from reactor_support import call_in_reactor, reactor, thread_pool

pytestmark = pytest.mark.pg


def _sample(name: str) -> bytes:
    return next(f for f in sample_files() if f.name == name)


def test_local_destination_stores_a_batch_and_reports_what_it_did(engine):
    store = ArrStore(engine, clock=lambda: 1_700_000_000.0)
    messages = [syslog_message(sample_xml(f), f"local-{f.name}") for f in sample_files()]
    with thread_pool() as pool:
        local = LocalArrDestination(store, reactor=reactor(), threadpool=pool)
        first = call_in_reactor(local.deliver, messages + [b"<13>1 - - - - - - <Nope/>"])
        again = call_in_reactor(local.deliver, messages)
    assert (first.stored, first.duplicates, first.malformed) == (len(messages), 0, 1)
    assert first.problems == ("audit message: the root element is 'Nope', not AuditMessage",)
    assert (again.stored, again.duplicates) == (0, len(messages))
    with engine.connect() as c:
        rows = c.execute(select(audit_record.c.peer_address, audit_record.c.received_at)).all()
        ids = c.execute(select(audit_record.c.id)).scalars().all()
    assert set(rows) == {("local", "2023-11-14T22:13:20.000000Z")}
    # record ids are time-ordered UUIDs (registry.uuid7), 32 hex digits
    assert len(ids) == len(messages) and all(uuid.UUID(hex=i).version == 7 and len(i) == 32 for i in ids)


def test_two_writers_racing_the_same_events_store_each_once(engine):
    store = ArrStore(engine)
    messages = [syslog_message(sample_xml(f), f"race-{f.name}") for f in sample_files()]
    results, errors = [], []

    def run():
        try:
            results.append(store.ingest(messages))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.stored for r in results) == len(messages)
    assert sum(r.duplicates for r in results) == 2 * len(messages)
    assert store.count() == len(messages)


def test_a_duplicate_inside_one_batch_is_stored_once(engine):
    store = ArrStore(engine)
    m = syslog_message(sample_xml(sample_files()[0]))
    result = store.ingest([m, m, syslog_message(sample_xml(sample_files()[0]), hostname="elsewhere")])
    assert (result.stored, result.duplicates) == (1, 2)


def test_fhir_audit_event_of_the_wustl_iti18_sample_field_by_field():
    raw = syslog_message(sample_xml(_sample("wustl__ITI-18_110112.dcm.xml"), "2024-05-01T10:00:00.123Z"))
    _, event = read_audit(raw)
    r = audit_event_resource("abc", event)
    assert r["resourceType"] == "AuditEvent" and r["id"] == "abc"
    assert r["type"] == {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110112", "display": "Query"}
    assert r["subtype"] == [{"system": "urn:ihe:event-type-code", "code": "ITI-18", "display": "Registry Stored Query"}]
    assert (r["action"], r["recorded"], r["outcome"]) == ("E", "2024-05-01T10:00:00.123000Z", "8")
    source, human, destination = r["agent"]
    assert source == {
        "type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110153", "display": "Source"}]},
        "who": {"identifier": {"value": "http://www.w3.org/2005/08/addressing/anonymous"}},
        "altId": "8884",
        "requestor": True,
        "network": {"address": "10.242.8.71", "type": "2"},
    }
    assert human == {"who": {"identifier": {"value": "Pishtosh Kibosh"}}, "requestor": True}
    assert destination["requestor"] is False and destination["network"] == {"address": "moss1.ihe.net", "type": "1"}
    assert r["source"] == {
        "observer": {"display": "PatientKeeper"},
        "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "1"}],
    }
    (query,) = r["entity"]
    assert query["what"]["identifier"]["value"] == "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
    assert query["type"] == {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"}
    assert query["role"] == {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24"}
    assert query["query"].startswith("PHF1ZXJ5OkFkaG9jUXVlcnlSZXF1ZXN0")  # the base64 sent, unchanged
    assert query["detail"] == [{"type": "QueryEncoding", "valueBase64Binary": "VVRGLTg="}]


def _event(purpose: Code | None) -> AuditEvent:
    import datetime as dt

    return AuditEvent(
        event_id=Code("110106", "DCM", "Export"),
        date_time=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
        outcome=0,
        action="R",
        source=AuditSource("carnet", "FINESS-123"),
        event_type_codes=(Code("ITI-43", "IHE Transactions", "Retrieve Document Set"),),
        purposes_of_use=(purpose,) if purpose else (),
        participants=(
            ActiveParticipant("consumer-app", True, "1234", None, "10.0.0.9", "2", (Code("110153", "DCM", "Source"),)),
            ActiveParticipant("899700012345", True, None, "Dr Alice Martin"),
            ActiveParticipant("https://carnet/xds/repository", False, role_id_codes=(Code("110152", "DCM"),)),
        ),
        objects=(
            ParticipantObject(Code("2", "RFC-3881"), "2800175310042^^^&1.2.250.1.213.1.4.10&ISO", "1", "1"),
            ParticipantObject(Code("9", "RFC-3881"), "1.2.3.4.5", "2", "3"),
        ),
    )


def test_history_entry_names_who_when_from_where_how_and_what(engine):
    emergency = Code("bris_de_glace", "1.2.250.1.213.1.1.4.248", "Accès en urgence")
    store = ArrStore(engine)
    store.ingest([syslog_message(audit_message(_event(emergency)), "h-1"), syslog_message(audit_message(_event(None)), "h-2")])
    rows, more = store.history(parse_search({"patient": ["urn:oid:1.2.250.1.213.1.4.10|2800175310042"]}).patients[0][0], count=10)
    assert len(rows) == 2 and not more
    entries = [history_entry(r.id, read_audit(r.raw)[1]) for r in rows]
    assert sorted(e["access_mode"] for e in entries if e["access_mode"]) == ["bris_de_glace"]
    assert [e["access_mode"] for e in entries].count(None) == 1
    e = entries[0]
    assert e["time"] == "2026-01-02T03:04:05Z"
    assert e["who"] == [{"id": "899700012345", "name": "Dr Alice Martin", "alternative_id": None}]
    assert e["structure"] == {
        "system": "consumer-app", "system_alternative_id": "1234", "address": "10.0.0.9",
        "audit_source": "carnet", "audit_site": "FINESS-123",
    }
    assert e["transaction"] == [{"code": "ITI-43", "text": "Retrieve Document Set"}]
    assert (e["action"], e["outcome"], e["documents"]) == ("read", "success", ["1.2.3.4.5"])


def test_migration_0004_adds_and_removes_the_audit_tables(db_url):
    from registry import migrate
    from registry.db import make_engine

    url, search_path = db_url
    migrate.upgrade(url, search_path=search_path, revision="0003")
    eng = make_engine(url, pg_search_path=search_path)
    try:
        assert not {t.name for t in TABLES} & set(inspect(eng).get_table_names())
        migrate.upgrade(url, search_path=search_path)
        assert {t.name for t in TABLES} <= set(inspect(eng).get_table_names())
        store = ArrStore(eng)
        assert store.ingest([syslog_message(sample_xml(sample_files()[0]))]).stored == 1
        with eng.connect() as c:
            assert c.execute(select(func.count()).select_from(audit_record_patient)).scalar_one() == 1  # ipf__pixfeed
        from alembic import command

        cfg = migrate.alembic_config(url, search_path=search_path)
        command.downgrade(cfg, "0003")
        eng.dispose()
        assert not {t.name for t in TABLES} & set(inspect(eng).get_table_names())
    finally:
        eng.dispose()
