"""A real Carnet (Twisted site, thread pool, store) on 127.0.0.1, once on SQLite and once on
PostgreSQL, for tests that speak the wire."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from config.settings import Settings
from config.site import REGISTRY_PATH, build
from reactor_support import reactor, serve
from registry.ports import MemoryAuditSink
from registry.store import RegistryStore


@attrs.define
class RunningCarnet:
    base_url: str
    store: RegistryStore
    audit: MemoryAuditSink

    @property
    def registry_url(self) -> str:
        return self.base_url + REGISTRY_PATH


@pytest.fixture
def carnet(engine, tmp_path):
    """A running Carnet on a fresh registry (SQLite and PostgreSQL), stopped afterwards."""
    yield from _carnet(engine, tmp_path, {})


# The rules the official ITI-42 examples break: IHE's and IPF's RegisterDocumentSet-b samples carry
# no repositoryUniqueId, hash or size, which ITI TF-3 Table 4.3.1-3 requires on ITI-42.
SAMPLE_RELAXED_RULES = ("DE.repositoryUniqueId.required", "DE.hash.required", "DE.size.required")


@pytest.fixture
def relaxed_carnet(engine, tmp_path):
    """As `carnet`, with the three rules the official ITI-42 samples break relaxed to warnings."""
    yield from _carnet(engine, tmp_path, {"relaxed_rules": SAMPLE_RELAXED_RULES})


def _carnet(engine, tmp_path, settings):
    audit = MemoryAuditSink()
    s = Settings(data_dir=tmp_path, database_url="sqlite://", threads=4, **settings)
    app = build(s, reactor(), audit=audit, engine=engine)
    try:
        with serve(app.site) as base:
            yield RunningCarnet(base, app.registry.store, audit)
    finally:
        app.stop(dispose_engine=False)
