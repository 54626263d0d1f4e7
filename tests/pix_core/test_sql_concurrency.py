"""Concurrent feeds on the SQL adapter (several nodes or worker threads, DESIGN.md §5): feeds
naming the same new INS at once all succeed and end in one group, the INS registered once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from pix import ins
from pix.identities import SqlCrossReferences
from pix.ins import InsPolicy, with_key
from pix.xref import Identifier, PatientRecord
from registry.schema import patient

HOSP = "1.2.250.1.999.1.1"
INS_1 = Identifier(with_key("1850275123001"), ins.INS_NIR_TEST)


def test_concurrent_feeds_of_one_new_ins(engine):
    xref = SqlCrossReferences(engine, [HOSP], InsPolicy(ins.TEST_OIDS))
    ipps = [Identifier(f"IPP-{n}", HOSP) for n in range(12)]

    def feed(ipp):
        return xref.feed(PatientRecord((ipp, INS_1), identity_reliability=("VALI",)))

    with ThreadPoolExecutor(max_workers=4) as pool:
        changes = list(pool.map(feed, ipps))

    assert set(xref.query(INS_1)) == set(ipps)
    assert sum(len(c.registered) for c in changes) == 1  # made known once
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(patient)).scalar_one() == 1
