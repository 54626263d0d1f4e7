"""Start a whole Carnet (Twisted site, thread pool, store) on 127.0.0.1 for wire-level tests."""

from __future__ import annotations

import contextlib
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
    app: object = None  # config.site.Carnet
    mllp_port: int | None = None  # with mllp=True: the PIX Manager's MLLP port

    @property
    def registry_url(self) -> str:
        return self.base_url + REGISTRY_PATH

    @property
    def repository_url(self) -> str:
        return self.base_url + REPOSITORY_PATH


@contextmanager
def running_carnet(engine, data_dir: Path, *, real_audit: bool = False, mllp: bool = False,
                   **settings) -> Iterator[RunningCarnet]:
    """A listening Carnet on `engine` (a registry schema already created); always stopped.
    `real_audit`: the configured audit pipeline (durable spool → built-in ARR) instead of a
    MemoryAuditSink; `mllp`: also listen for HL7v2 (ITI-8/9) on a free port."""
    from reactor_support import call_in_reactor, listen

    audit = None if real_audit else MemoryAuditSink()
    s = Settings(data_dir=data_dir, database_url="sqlite://", threads=4, **settings)
    app = build(s, reactor(), audit=audit, engine=engine)
    try:
        with serve(app.site) as base, contextlib.ExitStack() as more:
            mllp_port = None
            if mllp:
                mllp_port = more.enter_context(listen(app.mllp_factory)).getHost().port
            yield RunningCarnet(base, app.registry.store, app.audit, app.repository, app, mllp_port)
    finally:
        if real_audit:
            # the sender and spool stop on the reactor thread; wait for them before the engine goes
            call_in_reactor(lambda: app.audit_sender.stop() if app.audit_sender else None)
            app.audit.spool.close()
        app.stop(dispose_engine=False)
