"""`feed_many`: several feeds in one call (one database transaction on the SQL adapter), each
record all or nothing on its own. A record that fails validation, or whose statements fail in
the database, is not stored at all; the records around it are; a later record sees the earlier
ones. On the fake and on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from pix.identities import MemoryCrossReferences, SqlCrossReferences
from pix.xref import Identifier, InvalidIdentifier, UnknownDomain, UnknownIdentifier, XrefChange
from registry.errors import InfrastructureError
from registry.schema import patient

from support import fresh_engine

from pix_core.backends import HOSP_A, HOSP_B, POLICY, refuse_identifier
from pix_core.test_contract import INS_1, INS_2, UNKNOWN, ipp, rec

BAD_INS = Identifier(INS_2.value[:-2] + "00", INS_2.authority)  # wrong control key


def test_a_bad_record_in_the_middle_is_refused_alone(xref):
    results = xref.feed_many([
        rec(ipp("IPP1"), INS_1),
        rec(ipp("IPP2"), BAD_INS),  # INS with a wrong key: nothing of this record is stored
        rec(ipp("IPP3"), ipp("X-3", UNKNOWN)),  # unknown domain: nor of this one
        rec(ipp("B-1", HOSP_B), INS_1),  # meets IPP1 on the INS fed two records earlier
    ])
    assert isinstance(results[0], XrefChange) and isinstance(results[3], XrefChange)
    assert isinstance(results[1], InvalidIdentifier) and results[1].hl7_code == "102"
    assert isinstance(results[2], UnknownDomain) and results[2].hl7_code == "204"
    assert results[0].registered == (INS_1.xds_cx(),) and results[3].registered == ()
    assert [set(g) for g in results[3].groups] == [{ipp("IPP1"), ipp("B-1", HOSP_B), INS_1}]
    assert set(xref.query(INS_1)) == {ipp("IPP1"), ipp("B-1", HOSP_B)}
    for gone in (ipp("IPP2"), ipp("IPP3")):
        with pytest.raises(UnknownIdentifier):
            xref.query(gone)
        assert xref.status(gone) is None
    assert xref.is_known(INS_1.xds_cx())


def test_results_are_what_feed_would_have_answered(xref, tmp_path):
    records = [rec(ipp("IPP1")), rec(ipp("B-1", HOSP_B)), rec(ipp("IPP1"), ipp("B-1", HOSP_B), INS_1),
               rec(ipp("IPP1"), INS_2)]
    batch = xref.feed_many(records)
    one_by_one = MemoryCrossReferences([HOSP_A, HOSP_B], POLICY)
    expected = [one_by_one.feed(r) for r in records]
    assert [[set(g) for g in c.groups] for c in batch] == [[set(g) for g in c.groups] for c in expected]
    assert [c.registered for c in batch] == [c.registered for c in expected]
    assert set(xref.query(ipp("IPP1"))) == {INS_2}
    assert set(xref.query(ipp("B-1", HOSP_B))) == {INS_1}


def test_an_empty_batch_and_a_batch_of_only_bad_records(xref):
    assert xref.feed_many([]) == []
    results = xref.feed_many([rec(ipp("IPP9"), BAD_INS)])
    assert isinstance(results[0], InvalidIdentifier)
    assert xref.status(ipp("IPP9")) is None


# --- a failure inside the database: only that record is rolled back ---------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def refusing(request, tmp_path):
    """A SQL store whose database refuses (by a trigger) to insert an identifier 'REFUSED'."""
    with fresh_engine(request.param, tmp_path, "pix.db") as engine:
        refuse_identifier(engine, "REFUSED")
        yield SqlCrossReferences(engine, [HOSP_A, HOSP_B], POLICY), engine


def test_a_database_failure_rolls_back_that_record_only(refusing):
    xref, engine = refusing
    results = xref.feed_many([
        rec(ipp("IPP1"), INS_1),
        rec(INS_2, ipp("REFUSED")),  # INS_2 is written, then the insert of REFUSED fails
        rec(ipp("IPP3")),
    ])
    assert isinstance(results[0], XrefChange) and isinstance(results[2], XrefChange)
    assert isinstance(results[1], InfrastructureError)
    assert set(xref.query(ipp("IPP1"))) == {INS_1}
    assert xref.status(ipp("IPP3")) == "active"
    # nothing of the failed record: neither its identifiers nor its INS in the registry
    assert xref.status(ipp("REFUSED")) is None and xref.status(INS_2) is None
    with engine.connect() as c:
        known = set(c.execute(select(patient.c.patient_id)).scalars())
    assert known == {INS_1.xds_cx()}
    # the store still works afterwards
    assert isinstance(xref.feed_many([rec(ipp("IPP4"), INS_2)])[0], XrefChange)
    assert set(xref.query(INS_2)) == {ipp("IPP4")}


def test_a_lone_record_failing_in_the_database_raises_from_feed(refusing):
    xref, _engine = refusing
    with pytest.raises(InfrastructureError):
        xref.feed(rec(ipp("REFUSED")))
    assert xref.status(ipp("REFUSED")) is None


def test_a_batch_links_to_what_earlier_batches_stored(xref):
    xref.feed_many([rec(ipp("IPP1"), INS_1), rec(ipp("IPP2"))])
    results = xref.feed_many([rec(ipp("IPP3")), rec(ipp("B-1", HOSP_B), INS_1), rec(ipp("IPP2"), INS_2)])
    assert [[set(g) for g in r.groups] for r in results] == [
        [{ipp("IPP3")}],
        [{ipp("IPP1"), INS_1, ipp("B-1", HOSP_B)}],
        [{ipp("IPP2"), INS_2}],
    ]
    assert [r.registered for r in results] == [(), (), (INS_2.xds_cx(),)]
    assert set(xref.query(ipp("B-1", HOSP_B))) == {ipp("IPP1"), INS_1}
