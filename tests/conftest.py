"""Shared fixtures.

Registry tests take `engine` (or `db_url`): each runs once on SQLite and once on PostgreSQL
(127.0.0.1:5432, database `test`, or CARNET_TEST_PG_URL). PostgreSQL tests use a schema of their
own, dropped afterwards, so runs do not see each other (`support.database`). A missing PostgreSQL
skips those tests, except in CI (CI=true) where it fails them.

Hypothesis runs under the profile `carnet` (HYPOTHESIS_PROFILE names another): no per-example
deadline and no `too_slow` health check. Those two are timings, and speed is measured in
`make bench`, never in tests: on these 2-core VMs, whose speed varies two- to threefold within
minutes, a 200 ms deadline failed property tests whose code was right.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from registry.db import create_schema, make_engine

from support import database

settings.register_profile("carnet", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "carnet"))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A database URL with an empty schema-less database; yields (url, search_path)."""
    with database(request.param, tmp_path) as url_and_search_path:
        yield url_and_search_path


@pytest.fixture
def engine(db_url):
    """An engine on a fresh registry schema, SQLite and PostgreSQL."""
    url, search_path = db_url
    eng = make_engine(url, pg_search_path=search_path)
    create_schema(eng)
    yield eng
    eng.dispose()
