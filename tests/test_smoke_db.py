from sqlalchemy import insert, select

from registry.schema import patient


def test_patient_row_round_trips(engine):
    with engine.begin() as c:
        c.execute(insert(patient).values(patient_id="1^^^&1.2.3&ISO", created_at="20261122000000"))
    with engine.connect() as c:
        assert c.execute(select(patient.c.patient_id)).scalar_one() == "1^^^&1.2.3&ISO"
