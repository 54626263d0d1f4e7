"""What the PIX cross-reference contract runs on: the configured domains and INS policy, and a
database that refuses one identifier. The backends themselves (the in-memory fake, SQLite and
PostgreSQL with a fresh schema per test) are the `xref` fixture of conftest.py."""

from __future__ import annotations

from sqlalchemy import text

from pix import ins
from pix.ins import InsPolicy

HOSP_A = "1.2.250.1.999.1.1"  # two hospitals' IPP domains
HOSP_B = "1.2.250.1.999.2.1"
POLICY = InsPolicy(frozenset({ins.INS_NIR_TEST, ins.INS_NIA}))


def refuse_identifier(engine, value: str) -> None:
    """Make the database itself refuse (a trigger raising an error) to insert a pix_identity
    row of this value: a failure inside the database, after validation, for the tests of
    per-message rollback."""
    literal = value.replace("'", "''")
    with engine.begin() as c:
        if engine.dialect.name == "sqlite":
            c.execute(text(
                f"CREATE TRIGGER pix_test_refuse BEFORE INSERT ON pix_identity WHEN NEW.value = '{literal}' "
                "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
            ))
            return
        c.execute(text(
            "CREATE FUNCTION pix_test_refuse() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.value = '{literal}' THEN RAISE EXCEPTION 'refused by a test trigger'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql"
        ))
        c.execute(text(
            "CREATE TRIGGER pix_test_refuse BEFORE INSERT ON pix_identity "
            "FOR EACH ROW EXECUTE FUNCTION pix_test_refuse()"
        ))
