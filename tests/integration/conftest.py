"""A real Carnet on 127.0.0.1, once on SQLite and once on PostgreSQL, for tests that speak the wire."""

from __future__ import annotations

import pytest

from carnet_support import SAMPLE_RELAXED_RULES, running_carnet


@pytest.fixture
def carnet(engine, tmp_path):
    """A running Carnet on a fresh registry (SQLite and PostgreSQL), stopped afterwards."""
    with running_carnet(engine, tmp_path) as c:
        yield c


@pytest.fixture
def relaxed_carnet(engine, tmp_path):
    """As `carnet`, with the three rules the official ITI-42 samples break relaxed to warnings."""
    with running_carnet(engine, tmp_path, relaxed_rules=SAMPLE_RELAXED_RULES) as c:
        yield c
