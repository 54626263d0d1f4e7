"""The `xref` fixture of the PIX core tests: the CrossReferences port on the in-memory fake and on the
SQL adapter over SQLite and PostgreSQL (a fresh schema per test, `support.fresh_engine`)."""

from __future__ import annotations

import pytest

from pix.identities import MemoryCrossReferences, SqlCrossReferences
from support import fresh_engine

from pix_core.backends import HOSP_A, HOSP_B, POLICY


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def xref(request, tmp_path):
    if request.param == "memory":
        yield MemoryCrossReferences([HOSP_A, HOSP_B], POLICY)
        return
    with fresh_engine(request.param, tmp_path, "pix.db") as engine:
        yield SqlCrossReferences(engine, [HOSP_A, HOSP_B], POLICY)
