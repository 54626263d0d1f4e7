"""Fixtures of the ITI-42 tests."""

from __future__ import annotations

import pytest

from registry.store import RegistryStore

from iti42.builders import OTHER_PATIENT, PATIENT


@pytest.fixture
def store(engine):
    """A registry store on `engine` (SQLite and PostgreSQL) that knows both test patients."""
    s = RegistryStore(engine)
    s.add_patient(PATIENT)
    s.add_patient(OTHER_PATIENT)
    return s
