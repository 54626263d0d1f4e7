"""Assembles Carnet from its settings: engine, store, thread pool, actors, the Twisted site.

The only module that knows every actor; the reactor is passed in (`build`) or taken when serving.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import attrs
from twisted.web.resource import Resource
from twisted.web.server import Site

from config.settings import Settings
from registry.db import make_engine
from registry.endpoint import DocumentRegistry, transaction_context
from registry.iti18_stored_query import StoredQueryConfig
from registry.ports import AccessPolicy, AllowAllPolicy, AuditSink, MemoryAuditSink
from registry.store import RegistryStore
from registry.validate import ValidationConfig
from soap.edge import SoapEndpoint, SoapSite
from soap.workers import WorkerPool
from soap.wsdl import registry_wsdl

log = logging.getLogger("carnet")

REGISTRY_PATH = "/xds/registry"


@attrs.define
class Carnet:
    """A built (not yet listening) Carnet: the site plus what must be stopped."""

    settings: Settings
    site: Site
    registry: DocumentRegistry
    threadpool: WorkerPool
    engine: Any

    def endpoints(self, base_url: str | None = None) -> dict[str, str]:
        base = (base_url or self.settings.base_url).rstrip("/")
        return {"ITI-42 / ITI-18 Document Registry": base + REGISTRY_PATH}

    def stop(self, *, dispose_engine: bool = True) -> None:
        self.threadpool.stop()
        if dispose_engine:
            self.engine.dispose()


def build(
    settings: Settings,
    reactor: Any,
    *,
    audit: AuditSink | None = None,
    policy: AccessPolicy | None = None,
    engine: Any = None,
) -> Carnet:
    """Wire every actor; the caller listens on `site` and calls `stop()` at shutdown.
    `engine`: an existing registry engine (tests), else one is made from the settings."""
    engine = engine or make_engine(settings.registry_database_url, pool_size=settings.threads)
    store = RegistryStore(engine)
    registry = DocumentRegistry(
        store=store,
        audit=audit or MemoryAuditSink(keep=10_000),
        policy=policy or AllowAllPolicy(),
        validation=ValidationConfig(relaxed=frozenset(settings.relaxed_rules)),
        query_config=StoredQueryConfig(
            max_results=settings.max_query_results, home_community_id=settings.home_community_id
        ),
    )
    # One worker thread per pooled connection (DESIGN.md §7: more threads than connections
    # gives pool timeouts).
    threadpool = WorkerPool(settings.threads, name="carnet-blocking")
    threadpool.start()
    operations = registry.operations()
    endpoint = SoapEndpoint(
        operations,
        reactor=reactor,
        threadpool=threadpool,
        wsdl=lambda url: registry_wsdl(_public(settings, url, REGISTRY_PATH)),
        context_factory=transaction_context({a: op.transaction for a, op in operations.items()}),
    )
    root = Resource()
    xds = Resource()
    root.putChild(b"xds", xds)
    xds.putChild(b"registry", endpoint)
    site = SoapSite(root)
    site.displayTracebacks = False
    return Carnet(settings, site, registry, threadpool, engine)


def _public(settings: Settings, seen_url: str, path: str) -> str:
    """The address written in the WSDL: the configured public URL, else the one the client used."""
    if settings.public_url:
        return settings.public_url.rstrip("/") + path
    return seen_url


def serve(settings: Settings) -> int:
    """`carnet serve`: migrate, build, listen, run until interrupted."""
    from twisted.internet import reactor

    from registry.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.registry_database_url)
    carnet = build(settings, reactor)
    port = reactor.listenTCP(settings.http_port, carnet.site, interface=settings.host)
    reactor.addSystemEventTrigger("before", "shutdown", carnet.stop)
    actual = port.getHost().port
    base = settings.public_url or f"http://{settings.host}:{actual}"
    print(f"Carnet is listening on {settings.host}:{actual} (registry: {settings.registry_database_url})")
    for name, url in carnet.endpoints(base).items():
        print(f"  {name}: {url}   (WSDL: {url}?wsdl)")
    print("Stop with Ctrl-C.", flush=True)
    tune_garbage_collector()
    reactor.run()
    return 0


# Young-generation threshold of the cyclic garbage collector while serving. A registration
# allocates thousands of short-lived objects (lxml proxies, model objects); with CPython's
# default (700) the collector runs several times per request.
GC_YOUNG_THRESHOLD = 10_000


def tune_garbage_collector() -> None:
    """Before serving: everything built so far (modules, SQLAlchemy metadata, Twisted) is
    frozen out of the collector's scans (`gc.freeze`), and young collections are made rarer.
    Reference counting still frees almost everything at once; only cycles wait a little."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
