"""The store's write side: patients, look-ups and the all-or-nothing commit (SQLite and PostgreSQL)."""

from __future__ import annotations

import attrs
import pytest
from lxml import etree
from sqlalchemy import event, select

from registry.fragments import unpack
from registry import constants as C
from registry import schema as S
from registry.errors import InfrastructureError, XdsErrorCode, XdsFailure
from registry.model import Association, Slot
from registry.store import RegistrationPlan, RegistryStore
from registry.ebrim import object_to_bytes
from registry.store.write import set_slot_in_fragment

from iti42.builders import PATIENT, document, folder, submission_set

U = "urn:uuid:"


def uid(n: int) -> str:
    return f"{U}00000000-0000-4000-8000-{n:012d}"


def approved(obj):
    return attrs.evolve(obj, id=obj.id, lid=obj.id, status=C.STATUS_APPROVED, version_name="1")


def doc(n: int, **kw):
    return approved(document(uid(n), **kw))


def member(n: int, source: str, target: str, ss_status: str | None = None) -> Association:
    slots = (Slot(C.SLOT_SUBMISSION_SET_STATUS, (ss_status,)),) if ss_status else ()
    return Association(id=uid(n), association_type=C.ASSOC_HAS_MEMBER, source_object=source,
                       target_object=target, status=C.STATUS_APPROVED, slots=slots)


def rel(n: int, type_: str, source: str, target: str) -> Association:
    return Association(id=uid(n), association_type=type_, source_object=source, target_object=target,
                       status=C.STATUS_APPROVED)


@pytest.fixture
def store(engine):
    return RegistryStore(engine)


def base_plan(ss_n=100, doc_n=1, fol_n=200, **doc_kw) -> RegistrationPlan:
    ss = approved(submission_set(uid(ss_n)))
    d = doc(doc_n, **doc_kw)
    f = approved(folder(uid(fol_n), last_update_time="20260101000000"))
    return RegistrationPlan(
        submission_set=ss,
        documents=(d,),
        folders=(f,),
        associations=(
            member(ss_n + 1, ss.id, d.id, "Original"),
            member(ss_n + 2, ss.id, f.id),
            member(ss_n + 3, f.id, d.id),
            member(ss_n + 4, ss.id, uid(ss_n + 3)),
        ),
        last_update_time="20260101000000",
    )


# --- patients ------------------------------------------------------------------------------


def test_patients_add_is_idempotent(store):
    assert not store.is_known_patient(PATIENT)
    assert store.add_patient(PATIENT) is True
    assert store.add_patient(PATIENT) is False
    assert store.is_known_patient(PATIENT) and store.is_known(PATIENT)
    assert store.count_rows()["patient"] == 1


def test_patients_import_counts_new_ones(store):
    store.add_patient("A^^^&1.2.3&ISO")
    lines = ["A^^^&1.2.3&ISO\n", "B^^^&1.2.3&ISO\n", "\n", "  C^^^&1.2.3&ISO  ", "B^^^&1.2.3&ISO"]
    assert store.import_patients(lines, batch=2) == 2
    assert store.import_patients(lines) == 0
    with store.engine.connect() as c:
        assert sorted(c.execute(select(S.patient.c.patient_id)).scalars()) == [
            "A^^^&1.2.3&ISO", "B^^^&1.2.3&ISO", "C^^^&1.2.3&ISO"]


# --- commit and look-ups -------------------------------------------------------------------


def test_commit_stores_every_row_and_lookups_find_them(store):
    plan = base_plan(doc_n=1, reference_ids=("R1^^^&1.2.3&ISO^urn:ihe:iti:xds:2013:order",),
                     event_codes=("E1", "E2"))
    store.commit(plan)
    counts = store.count_rows()
    assert counts["document_entry"] == counts["submission_set"] == counts["folder"] == 1
    assert counts["association"] == 4
    assert counts["document_code"] == 8  # class, conf, 2 events, format, hcft, pract, type
    assert counts["document_author"] == counts["submission_set_author"] == 1
    assert counts["document_reference_id"] == counts["folder_code"] == 1

    d = plan.documents[0]
    (found,) = store.documents_by_unique_id([d.unique_id, "1.2.3.unknown"])[d.unique_id]
    assert (found.id, found.patient_id, found.hash, found.size, found.status) == (
        d.id, PATIENT, d.slot1("hash"), int(d.slot1("size")), C.STATUS_APPROVED)

    objs = store.objects_by_id([d.id, uid(100), uid(200), uid(101), uid(999)])
    assert {k: v.kind for k, v in objs.items()} == {
        d.id: "DocumentEntry", uid(100): "SubmissionSet", uid(200): "Folder", uid(101): "Association"}
    assert objs[d.id].patient_id == PATIENT and objs[uid(101)].patient_id is None
    assert store.existing_ids([d.id, uid(999)]) == {d.id}
    assert store.existing_submission_set_unique_ids([plan.submission_set.unique_id, "1.9"]) == {
        plan.submission_set.unique_id}
    assert store.existing_folder_unique_ids([plan.folders[0].unique_id, "1.9"]) == {
        plan.folders[0].unique_id}
    assert store.folders_containing([d.id, uid(999)]) == {d.id: [uid(200)]}


def test_lookups_use_one_query_each(store, engine):
    store.commit(base_plan())
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    ids = [uid(n) for n in range(1, 60)]
    store.objects_by_id(ids)
    store.documents_by_unique_id(f"1.2.{n}" for n in range(60))
    store.folders_containing(ids)
    store.approved_children(ids)
    store.existing_folder_unique_ids(f"1.2.{n}" for n in range(60))
    selects = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "(SELECT"))]
    assert len(selects) == 5


def test_deprecation_updates_column_xml_and_children(store):
    store.commit(base_plan(ss_n=100, doc_n=1, fol_n=200))
    ss2 = approved(submission_set(uid(300)))
    child = doc(2)
    store.commit(RegistrationPlan(submission_set=ss2, documents=(child,), associations=(
        member(301, ss2.id, child.id, "Original"), rel(302, C.ASSOC_APND, child.id, uid(1)))))
    assert store.approved_children([uid(1)]) == {uid(1): [uid(2)]}

    ss3 = approved(submission_set(uid(400)))
    repl = doc(3)
    store.commit(RegistrationPlan(
        submission_set=ss3, documents=(repl,),
        associations=(member(401, ss3.id, repl.id, "Original"), rel(402, C.ASSOC_RPLC, repl.id, uid(1))),
        replaced=(uid(1),), deprecated_children=(uid(2),),
        updated_folders=(uid(200),), last_update_time="20270101120000",
    ))
    with store.engine.connect() as c:
        got = {r.id: r for r in c.execute(select(S.document_entry))}
        (f,) = c.execute(select(S.folder)).all()
    for i in (uid(1), uid(2)):
        assert got[i].status == C.STATUS_DEPRECATED
        assert etree.fromstring(unpack(got[i].xml)).get("status") == C.STATUS_DEPRECATED
    assert got[uid(3)].status == C.STATUS_APPROVED
    assert store.approved_children([uid(1)]) == {}
    assert f.last_update_time == "20270101120000"
    ns = {"rim": C.NS_RIM}
    assert etree.fromstring(unpack(f.xml)).xpath(
        "rim:Slot[@name='lastUpdateTime']//rim:Value/text()", namespaces=ns) == ["20270101120000"]


# --- all or nothing ------------------------------------------------------------------------


def test_duplicate_entry_uuid_in_the_last_row_stores_nothing(store):
    store.commit(base_plan(ss_n=100, doc_n=1, fol_n=200))
    before = store.count_rows()
    plan = base_plan(ss_n=500, doc_n=2, fol_n=600)
    # the last association reuses an existing entryUUID: everything before it must roll back
    bad = attrs.evolve(plan.associations[-1], id=uid(101))
    plan = attrs.evolve(plan, associations=(*plan.associations[:-1], bad))
    with pytest.raises(XdsFailure) as info:
        store.commit(plan)
    assert [e.code for e in info.value.errors] == [XdsErrorCode.XDSDuplicateUniqueIdInRegistry]
    assert store.count_rows() == before


def test_racing_submission_set_unique_id_is_a_duplicate(store):
    first = base_plan(ss_n=100, doc_n=1, fol_n=200)
    store.commit(first)
    before = store.count_rows()
    second = base_plan(ss_n=500, doc_n=2, fol_n=600)
    ss = attrs.evolve(second.submission_set, external_identifiers=tuple(
        attrs.evolve(e, value=first.submission_set.unique_id) if e.identification_scheme == C.SS_UNIQUE_ID
        else e for e in second.submission_set.external_identifiers))
    with pytest.raises(XdsFailure) as info:
        store.commit(attrs.evolve(second, submission_set=ss))
    assert info.value.errors[0].code == XdsErrorCode.XDSDuplicateUniqueIdInRegistry
    assert store.count_rows() == before


def test_other_database_error_is_infrastructure_and_stores_nothing(store):
    plan = base_plan()
    # a DocumentEntry without uniqueId violates NOT NULL: not the peer's fault, ours
    broken = attrs.evolve(plan.documents[0], external_identifiers=tuple(
        e for e in plan.documents[0].external_identifiers if e.identification_scheme != C.DE_UNIQUE_ID))
    with pytest.raises(InfrastructureError):
        store.commit(attrs.evolve(plan, documents=(broken,)))
    assert set(store.count_rows().values()) == {0}


def test_replacing_a_document_deprecated_meanwhile_stores_nothing(store):
    store.commit(base_plan(ss_n=100, doc_n=1, fol_n=200))
    ss2 = approved(submission_set(uid(300)))
    r1 = doc(2)
    store.commit(RegistrationPlan(submission_set=ss2, documents=(r1,), replaced=(uid(1),)))
    before = store.count_rows()
    ss3 = approved(submission_set(uid(400)))
    with pytest.raises(XdsFailure) as info:
        store.commit(RegistrationPlan(submission_set=ss3, documents=(doc(3),), replaced=(uid(1),)))
    assert info.value.errors[0].code == XdsErrorCode.XDSRegistryDeprecatedDocumentError
    assert store.count_rows() == before


def test_database_down_is_infrastructure_error(tmp_path):
    from registry.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    with pytest.raises(InfrastructureError):
        RegistryStore(engine).is_known_patient(PATIENT)
    with pytest.raises(InfrastructureError):
        RegistryStore(engine).commit(base_plan())


# --- fragments -----------------------------------------------------------------------------


def test_set_slot_in_fragment_replaces_or_adds_and_keeps_the_rest():
    f = approved(folder(uid(7), last_update_time="20200101"))
    xml = object_to_bytes(f)
    out = etree.fromstring(set_slot_in_fragment(xml, "lastUpdateTime", ["20260101000000"]))
    ns = {"rim": C.NS_RIM}
    assert out.xpath("rim:Slot[@name='lastUpdateTime']//rim:Value/text()", namespaces=ns) == ["20260101000000"]
    assert out.get("id") == uid(7) and out.get("status") == C.STATUS_APPROVED
    assert len(out.xpath("rim:Classification", namespaces=ns)) == 2
    bare = object_to_bytes(approved(folder(uid(8))))
    added = etree.fromstring(set_slot_in_fragment(bare, "lastUpdateTime", ["20260101000000"]))
    assert added.xpath("rim:Slot[@name='lastUpdateTime']//rim:Value/text()", namespaces=ns) == ["20260101000000"]


# --- one connection, few statements (issue: ITI-42 speed) ------------------------------------


def count_statements(engine, monkeypatch) -> list[str]:
    """Every statement sent: through SQLAlchemy, and straight to the driver."""
    from registry.store import write

    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    direct = write._driver_execute

    def counted(c, sql, params, **kw):
        statements.append(sql)
        return direct(c, sql, params, **kw)

    monkeypatch.setattr(write, "_driver_execute", counted)
    return statements


def test_registration_lookups_answer_everything_in_one_statement(store, engine, monkeypatch):
    plan = base_plan()
    store.commit(plan)
    d, ss, f = plan.documents[0], plan.submission_set, plan.folders[0]
    statements = count_statements(engine, monkeypatch)
    with store.registration() as s:
        found = s.registration_lookups(
            patient_id=PATIENT,
            ids=[d.id, uid(101), uid(999)],
            document_unique_ids=[d.unique_id, "1.2.3.unknown"],
            submission_set_unique_ids=[ss.unique_id, "1.9"],
            folder_unique_ids=[f.unique_id, "1.9"],
        )
    assert len(statements) == 1
    assert found.patient_known is False
    assert {k: v.kind for k, v in found.objects.items()} == {d.id: "DocumentEntry", uid(101): "Association"}
    assert [x.id for x in found.documents[d.unique_id]] == [d.id]
    assert found.documents[d.unique_id][0].size == int(d.slot1("size"))
    assert found.submission_set_unique_ids == {ss.unique_id}
    assert found.folder_unique_ids == {f.unique_id}

    store.add_patient(PATIENT)
    statements.clear()
    assert store.registration_lookups(patient_id=PATIENT).patient_known is True
    assert store.registration_lookups().patient_known is None  # nothing asked: no statement
    assert len(statements) == 1


def test_commit_of_new_rows_is_one_insert_statement_on_postgresql(store, engine, monkeypatch):
    statements = count_statements(engine, monkeypatch)
    store.commit(base_plan())
    inserts = [s for s in statements if "INSERT" in s.upper()]
    if engine.dialect.name == "postgresql":
        assert len(inserts) == 1  # every table in one statement, committed by the server
    else:
        assert len(inserts) == len([n for n, c in store.count_rows().items() if c and n != "patient"])
    assert store.count_rows()["association"] == 4


def test_a_plan_too_big_for_one_statement_is_still_all_or_nothing(store, engine, monkeypatch):
    from registry.store import write

    monkeypatch.setattr(write, "_MAX_PARAMS_IN_ONE_STATEMENT", 10)
    store.commit(base_plan(ss_n=100, doc_n=1, fol_n=200))
    assert store.count_rows()["document_code"] == 7
    before = store.count_rows()
    plan = base_plan(ss_n=500, doc_n=2, fol_n=600)
    bad = attrs.evolve(plan.associations[-1], id=uid(101))  # taken: fails in the last table
    with pytest.raises(XdsFailure):
        store.commit(attrs.evolve(plan, associations=(*plan.associations[:-1], bad)))
    assert store.count_rows() == before


def test_a_pooled_connection_idle_long_enough_is_checked_before_use(engine, db_url, monkeypatch):
    import time

    from sqlalchemy import text

    from registry import db

    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite connections do not go stale")
    url, search_path = db_url
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)
    pooled = db.make_engine(url, pool_size=1, pg_search_path=search_path)
    try:
        with pooled.connect() as c:
            first = c.execute(text("select pg_backend_pid()")).scalar_one()
        with engine.connect() as admin:
            admin.execute(text("select pg_terminate_backend(:p)"), {"p": first})
        time.sleep(0.05)
        with pooled.connect() as c:  # the dead connection is found at checkout and replaced
            assert c.execute(text("select pg_backend_pid()")).scalar_one() != first
    finally:
        pooled.dispose()
