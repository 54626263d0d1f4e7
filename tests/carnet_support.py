"""Start a whole Carnet (Twisted site, thread pool, store) on 127.0.0.1 for wire-level tests."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import attrs

from config.settings import Settings
from config.site import REGISTRY_PATH, REPOSITORY_PATH, build
from reactor_support import reactor, serve
from registry.ports import MemoryAuditSink
from registry.store import RegistryStore

# The rules the official ITI-42 examples break: IHE's and IPF's RegisterDocumentSet-b samples carry
# no repositoryUniqueId, hash or size, which ITI TF-3 Table 4.3.1-3 requires on ITI-42.
SAMPLE_RELAXED_RULES = ("DE.repositoryUniqueId.required", "DE.hash.required", "DE.size.required")


@attrs.define
class RunningCarnet:
    base_url: str
    store: RegistryStore
    audit: MemoryAuditSink
    repository: object = None  # repository.endpoint.DocumentRepository

    @property
    def registry_url(self) -> str:
        return self.base_url + REGISTRY_PATH

    @property
    def repository_url(self) -> str:
        return self.base_url + REPOSITORY_PATH


@contextmanager
def running_carnet(engine, data_dir: Path, **settings) -> Iterator[RunningCarnet]:
    """A listening Carnet on `engine` (a registry schema already created); always stopped."""
    audit = MemoryAuditSink()
    s = Settings(data_dir=data_dir, database_url="sqlite://", threads=4, **settings)
    app = build(s, reactor(), audit=audit, engine=engine)
    try:
        with serve(app.site) as base:
            yield RunningCarnet(base, app.registry.store, audit, app.repository)
    finally:
        app.stop(dispose_engine=False)
