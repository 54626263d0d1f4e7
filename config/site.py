"""Assembles Carnet from its settings: engine, store, thread pool, actors, the Twisted site.

The only module that knows every actor; the reactor is passed in (`build`) or taken when serving.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import subprocess
import sys
from typing import Any

import attrs
from twisted.web.resource import Resource
from twisted.web.server import Site

from config.settings import Settings, repository_unique_id
from registry.db import make_engine
from registry.endpoint import DocumentRegistry, transaction_context
from registry.iti18_stored_query import StoredQueryConfig
from registry.ports import AccessPolicy, AllowAllPolicy, AuditSink, MemoryAuditSink
from registry.store import RegistryStore
from registry.validate import ValidationConfig
from soap.edge import SoapEndpoint, SoapSite
from soap.workers import WorkerPool
from soap.wsdl import registry_wsdl, repository_wsdl

log = logging.getLogger("carnet")

REGISTRY_PATH = "/xds/registry"
REPOSITORY_PATH = "/xds/repository"
PIX_V3_PATH = "/pix/v3"
# An ITI-41 MTOM request streams to the blob store, so it may be large (a 200 MB document).
MAX_PROVIDE_BYTES = 2 * 1024**3


@attrs.define
class Carnet:
    """A built (not yet listening) Carnet: the site plus what must be stopped."""

    settings: Settings
    site: Site
    registry: DocumentRegistry
    threadpool: WorkerPool
    engine: Any
    repository: Any = None  # repository.endpoint.DocumentRepository
    sweeper: Any = None  # repository.sweep.OrphanSweeper
    xref: Any = None  # pix.identities.SqlCrossReferences
    pix_v3: Any = None  # pix.v3_endpoint.PixV3Manager
    stoppers: list = attrs.field(factory=list)  # called at stop(), on the reactor thread

    def endpoints(self, base_url: str | None = None) -> dict[str, str]:
        base = (base_url or self.settings.base_url).rstrip("/")
        return {
            "ITI-42 / ITI-18 Document Registry": base + REGISTRY_PATH,
            "ITI-41 / ITI-43 Document Repository": base + REPOSITORY_PATH,
            "ITI-44 / ITI-45 PIX Manager (HL7v3)": base + PIX_V3_PATH,
        }

    def stop(self, *, dispose_engine: bool = True) -> None:
        for stop in reversed(self.stoppers):
            try:
                stop()
            except Exception:  # noqa: BLE001 - stopping the rest matters more
                log.exception("stopping %r failed", stop)
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
    # The registry keeps answering XDSUnknownPatientId from its own combined look-up of the
    # `patient` table (one statement per registration); the PIX feeds fill that table, so it is
    # the same answer as `xref.is_known` without a second round trip.
    xref = build_cross_references(settings, engine)
    repository, sweeper = build_repository(settings, engine, registry)
    repo_operations = repository.operations()
    repo_endpoint = SoapEndpoint(
        repo_operations,
        reactor=reactor,
        threadpool=threadpool,
        wsdl=lambda url: repository_wsdl(_public(settings, url, REPOSITORY_PATH)),
        context_factory=transaction_context({a: op.transaction for a, op in repo_operations.items()}),
    )
    root = Resource()
    xds = Resource()
    root.putChild(b"xds", xds)
    xds.putChild(b"registry", endpoint)
    xds.putChild(b"repository", repo_endpoint)
    stoppers: list = []
    pix_v3, pix_v3_endpoint = build_pix_v3(settings, reactor, threadpool, xref, stoppers)
    pix = Resource()
    root.putChild(b"pix", pix)
    pix.putChild(b"v3", pix_v3_endpoint)
    site = SoapSite(root)
    site.displayTracebacks = False
    return Carnet(settings, site, registry, threadpool, engine, repository, sweeper, xref, pix_v3, stoppers)


def build_cross_references(settings: Settings, engine: Any):
    """The PIX Manager's cross-reference store; also the registry's PatientIdentities (both read
    the registry's `patient` table, which the PIX feeds fill)."""
    from pix.identities import SqlCrossReferences
    from pix.ins import InsPolicy

    return SqlCrossReferences(engine, settings.pix_domains, InsPolicy(accepted_oids=frozenset(settings.ins_oids)))


def build_pix_v3(settings: Settings, reactor: Any, threadpool: Any, xref: Any, stoppers: list):
    """ITI-44 / ITI-45 at /pix/v3, and the ITI-46 sender when SOAP consumers are configured."""
    from pix.hl7v3 import Responder
    from pix.iti46_update import Consumer
    from pix.v3_edge import UpdateSender
    from pix.v3_endpoint import DEFAULT_DEVICE_ID, PixV3Manager
    from pix.v3_wsdl import pix_manager_wsdl

    device_id = settings.pix_device_id or None
    consumers = [Consumer.from_mapping(c) for c in settings.pix_consumers if c.get("protocol") == "soap"]
    notifier = None
    if consumers:
        notifier = UpdateSender(reactor, consumers, Responder(device_id or DEFAULT_DEVICE_ID))
        stoppers.append(lambda: _on_reactor(reactor, notifier.stop))
    manager = PixV3Manager(xref, notifier, device_id=device_id)
    operations = manager.operations()
    endpoint = SoapEndpoint(
        operations,
        reactor=reactor,
        threadpool=threadpool,
        wsdl=lambda url: pix_manager_wsdl(_public(settings, url, PIX_V3_PATH)),
        context_factory=transaction_context({a: op.transaction for a, op in operations.items()}),
    )
    return manager, endpoint


def _on_reactor(reactor: Any, fn: Any) -> None:
    """Run `fn` on the reactor thread: at once when called there, else through callFromThread."""
    from twisted.python import threadable

    if threadable.isInIOThread():
        fn()
    else:
        reactor.callFromThread(fn)


def build_blob_store(settings: Settings):
    """The BlobStore of the settings: the filesystem under the data dir, or S3 through minio."""
    if settings.blob_store == "s3":
        from repository.blobs.s3 import S3BlobStore

        if not settings.s3_endpoint:
            raise ValueError("blob_store = s3 needs s3_endpoint")
        return S3BlobStore(
            settings.s3_endpoint,
            settings.s3_access_key or "",
            settings.s3_secret_key or "",
            settings.s3_bucket,
            secure=settings.s3_secure,
            region=settings.s3_region or None,
            create_bucket=settings.s3_create_bucket,
        )
    from repository.blobs.fs import FilesystemBlobStore

    return FilesystemBlobStore(settings.blob_path)


def build_repository(settings: Settings, engine: Any, registry: DocumentRegistry):
    """The Document Repository actor and its orphan sweeper, from the settings."""
    from repository.endpoint import DocumentRepository
    from repository.keys import KeyVault, load_master_key
    from repository.pending import PendingJournal
    from repository.registry_client import InProcessRegistryClient, SoapRegistryClient
    from repository.signatures import SignaturePolicy
    from repository.sweep import OrphanSweeper

    blobs = build_blob_store(settings)
    vault = KeyVault(engine, load_master_key(settings.master_key_path))
    if settings.registry_url:
        client = SoapRegistryClient(settings.registry_url, audit=registry.audit)
    else:
        client = InProcessRegistryClient(registry, audit=registry.audit,
                                          registry_url=settings.base_url + REGISTRY_PATH)
    signatures = (
        SignaturePolicy.from_mapping(settings.signatures, base_dir=settings.config_dir)
        if settings.signatures else None
    )
    pending = PendingJournal(engine)
    repository = DocumentRepository(
        repository_unique_id=repository_unique_id(settings),
        blobs=blobs,
        vault=vault,
        registry=client,
        signatures=signatures,
        pending=pending,
        audit=registry.audit,
        home_community_id=settings.home_community_id,
        max_request_bytes=MAX_PROVIDE_BYTES,
    )
    sweeper = OrphanSweeper(blobs, client.known_document_unique_ids, pending)
    return repository, sweeper


def _public(settings: Settings, seen_url: str, path: str) -> str:
    """The address written in the WSDL: the configured public URL, else the one the client used."""
    if settings.public_url:
        return settings.public_url.rstrip("/") + path
    return seen_url


def serve(settings: Settings, *, inherited_fd: int | None = None) -> int:
    """`carnet serve`: migrate, build, listen, run until interrupted.

    With `workers` > 1, this process opens the listening socket and starts `workers - 1` more
    processes (the same command, plus `--inherited-fd`) that accept on the same socket: Carnet is
    bound to one core per process by the GIL, and the nodes share nothing but the database and the
    blob store (DESIGN.md §5). The first process alone runs the orphan sweep."""
    from twisted.internet import reactor

    from registry.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if inherited_fd is None:
        upgrade(settings.registry_database_url)
    carnet = build(settings, reactor)
    if inherited_fd is not None:
        port = reactor.adoptStreamPort(inherited_fd, socket.AF_INET, carnet.site)
        reactor.addSystemEventTrigger("before", "shutdown", carnet.stop)
        _stop_when_orphaned(reactor)
        tune_garbage_collector()
        reactor.run()
        return 0
    children: list[subprocess.Popen] = []
    if settings.workers > 1:
        listener = socket.create_server((settings.host, settings.http_port), backlog=1024)
        listener.setblocking(False)
        port = reactor.adoptStreamPort(listener.fileno(), socket.AF_INET, carnet.site)
        children = [_start_worker(listener.fileno()) for _ in range(settings.workers - 1)]
        listener.close()  # the reactor's port and the children hold their own descriptors
        reactor.addSystemEventTrigger("before", "shutdown", lambda: _stop_workers(children))
    else:
        port = reactor.listenTCP(settings.http_port, carnet.site, interface=settings.host)
    reactor.addSystemEventTrigger("before", "shutdown", carnet.stop)
    _schedule_sweep(reactor, carnet)
    actual = port.getHost().port
    base = settings.public_url or f"http://{settings.host}:{actual}"
    print(f"Carnet is listening on {settings.host}:{actual} with {max(1, settings.workers)} process(es) "
          f"(registry: {settings.registry_database_url})")
    for name, url in carnet.endpoints(base).items():
        print(f"  {name}: {url}   (WSDL: {url}?wsdl)")
    print("Stop with Ctrl-C.", flush=True)
    tune_garbage_collector()
    reactor.run()
    return 0


def _start_worker(fd: int) -> subprocess.Popen:
    """Another serving process on the listening socket `fd`: this process's own command line."""
    argv = [sys.executable, "-m", "config.cli", *sys.argv[1:], "--inherited-fd", str(fd)]
    env = dict(os.environ, CARNET_SERVE_PARENT=str(os.getpid()))
    return subprocess.Popen(argv, pass_fds=(fd,), env=env)


def _stop_workers(children: list[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()


def _stop_when_orphaned(reactor: Any) -> None:
    """A worker process stops when the process that started it is gone (even if it was killed)."""
    from twisted.internet.task import LoopingCall

    # The parent's pid comes from the parent itself: read here, os.getppid() could already be 1.
    parent = int(os.environ.get("CARNET_SERVE_PARENT") or os.getppid())

    def check() -> None:
        if os.getppid() != parent:
            reactor.stop()

    loop = LoopingCall(check)
    loop.clock = reactor
    loop.start(1.0, now=False)


def _schedule_sweep(reactor: Any, carnet: Carnet) -> None:
    """Run the orphan sweep (DESIGN.md §3 rule 6) every `interval` seconds on the worker pool."""
    from twisted.internet.task import LoopingCall
    from twisted.internet.threads import deferToThreadPool

    def sweep():
        d = deferToThreadPool(reactor, carnet.threadpool, carnet.sweeper.run_once)
        d.addErrback(lambda f: log.error("orphan sweep failed: %s", f.getErrorMessage()))
        return d

    loop = LoopingCall(sweep)
    loop.clock = reactor
    loop.start(carnet.sweeper.interval, now=True)
    reactor.addSystemEventTrigger("before", "shutdown", lambda: loop.running and loop.stop())


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
