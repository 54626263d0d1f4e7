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
import threading
import time
from typing import Any

import attrs
from twisted.web.resource import Resource
from twisted.web.server import Site

from config.balance import AcceptBalancer, ConnectionTable
from config.settings import Settings, repository_unique_id
from registry.db import make_engine
from registry.endpoint import DocumentRegistry, transaction_context
from registry.iti18_stored_query import StoredQueryConfig
from registry.ports import AccessPolicy, AllowAllPolicy, AuditSink, NullAuditSink
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
    mllp_factory: Any = None  # pix.mllp_edge.MllpFactory: serve() listens on it
    audit: Any = None  # the AuditSink every actor records to
    audit_sender: Any = None  # atna.sender.AuditSender (None with audit = false or an injected sink)
    arr_store: Any = None  # atna.arr.store.ArrStore (None with arr = false)
    metrics: dict = attrs.field(factory=dict)  # GET /metrics sources: prefix -> () -> {name: number}

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
        if self.arr_store is not None and self.arr_store.engine is not self.engine:
            self.arr_store.engine.dispose()  # the ARR's own SQLite file (see _arr_store)


def build(
    settings: Settings,
    reactor: Any,
    *,
    audit: AuditSink | None = None,
    policy: AccessPolicy | None = None,
    engine: Any = None,
    deliver_audit: bool = True,
) -> Carnet:
    """Wire every actor; the caller listens on `site` and calls `stop()` at shutdown.
    `engine`: an existing registry engine (tests), else one is made from the settings.
    `deliver_audit`: this process also delivers the audit spool (to the built-in ARR and the
    destinations); False when another process does (`carnet serve`, see `run_audit_sender`)."""
    engine = engine or make_engine(settings.registry_database_url, pool_size=settings.threads)
    store = RegistryStore(engine)
    stoppers: list = []
    # One worker thread per pooled connection (DESIGN.md §7: more threads than connections
    # gives pool timeouts).
    threadpool = WorkerPool(settings.threads, name="carnet-blocking")
    threadpool.start()
    arr_store = _arr_store(settings, engine)
    audit_sender = None
    if audit is None:
        audit, audit_sender = build_audit(settings, reactor, threadpool, arr_store, stoppers, deliver=deliver_audit)
    registry = DocumentRegistry(
        store=store,
        audit=audit,
        policy=policy or AllowAllPolicy(),
        validation=ValidationConfig(relaxed=frozenset(settings.relaxed_rules)),
        query_config=StoredQueryConfig(
            max_results=settings.max_query_results, home_community_id=settings.home_community_id
        ),
    )
    operations = registry.operations()
    endpoint = _soap_endpoint(operations, settings, reactor, threadpool, registry_wsdl, REGISTRY_PATH)
    # The registry keeps answering XDSUnknownPatientId from its own combined look-up of the
    # `patient` table (one statement per registration); the PIX feeds fill that table, so it is
    # the same answer as `xref.is_known` without a second round trip.
    xref = build_cross_references(settings, engine)
    repository, sweeper = build_repository(settings, engine, registry)
    repo_operations = repository.operations()
    repo_endpoint = _soap_endpoint(repo_operations, settings, reactor, threadpool, repository_wsdl, REPOSITORY_PATH)
    root = Resource()
    xds = Resource()
    root.putChild(b"xds", xds)
    xds.putChild(b"registry", endpoint)
    xds.putChild(b"repository", repo_endpoint)
    pix_v3, pix_v3_endpoint = build_pix_v3(settings, reactor, threadpool, xref, audit, stoppers)
    pix = Resource()
    root.putChild(b"pix", pix)
    pix.putChild(b"v3", pix_v3_endpoint)
    mllp_factory = build_pix_v2(settings, reactor, threadpool, xref, audit, stoppers)
    # A PIX Manager notifies every consumer of a change, whichever feed made it (ITI TF-2a
    # §3.10.4.1.1, ITI TF-2b §3.46.4.1.1): an ITI-8 feed reaches the ITI-46 consumers too, and an
    # ITI-44 feed the ITI-10 consumers.
    notifiers = [n for n in (mllp_factory.handler.notifier, pix_v3.notifier) if n is not None]
    if len(notifiers) > 1:
        both = _Notifiers(notifiers)
        mllp_factory.handler.notifier = pix_v3.notifier = both
    if arr_store is not None:
        from atna.arr.http import atna_resource

        root.putChild(b"atna", atna_resource(
            arr_store, reactor=reactor, threadpool=threadpool,
            base_url=settings.public_url.rstrip("/") + "/atna" if settings.public_url else None,
        ))
    metrics: dict = {}
    if getattr(audit, "spool", None) is not None:
        metrics["audit_spool"] = audit.spool.metrics
    metrics["mllp"] = lambda: {"answered": mllp_factory.answered, "connections": mllp_factory.connections}
    from config.metrics import MetricsResource

    root.putChild(b"metrics", MetricsResource(metrics, reactor=reactor, threadpool=threadpool))
    site = SoapSite(root)
    site.displayTracebacks = False
    return Carnet(settings, site, registry, threadpool, engine, repository, sweeper, xref, pix_v3, stoppers,
                  mllp_factory=mllp_factory, audit=audit, audit_sender=audit_sender, arr_store=arr_store,
                  metrics=metrics)


def _arr_store(settings: Settings, engine: Any):
    """The built-in ARR's store. On PostgreSQL it shares the registry's database (its tables are
    in the registry's migrations). On SQLite, where one writer at a time holds the whole file, it
    gets its own file (data_dir/audit.db) so that storing audit events never makes a registration
    wait for the write lock (and the reverse)."""
    if not settings.arr:
        return None
    from atna.arr import schema as arr_schema
    from atna.arr.store import ArrStore

    if engine.dialect.name != "sqlite":
        return ArrStore(engine)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    arr_engine = make_engine(f"sqlite:///{(settings.data_dir / 'audit.db').resolve()}",
                             pool_size=max(2, settings.threads))
    arr_tables = [t for t in arr_schema.metadata.sorted_tables if t.name.startswith("audit_record")]
    arr_schema.metadata.create_all(arr_engine, tables=arr_tables)
    return ArrStore(arr_engine)


def _soap_endpoint(operations: dict, settings: Settings, reactor: Any, threadpool: Any,
                   wsdl: Any, path: str) -> SoapEndpoint:
    """A SOAP endpoint at `path` for `operations`, its WSDL built by `wsdl(public URL)`."""
    return SoapEndpoint(
        operations,
        reactor=reactor,
        threadpool=threadpool,
        wsdl=lambda url: wsdl(_public(settings, url, path)),
        context_factory=transaction_context({a: op.transaction for a, op in operations.items()}),
    )


def audit_node(settings: Settings):
    """How this node names itself in its audit messages (atna.events.AuditNode)."""
    from atna.events import AuditNode

    base = settings.base_url
    return AuditNode.local(
        audit_source_id=settings.audit_source_id,
        audit_enterprise_site_id=settings.enterprise_site_id or None,
        endpoints={
            "ITI-18": base + REGISTRY_PATH, "ITI-42": base + REGISTRY_PATH,
            "ITI-41": base + REPOSITORY_PATH, "ITI-43": base + REPOSITORY_PATH,
            "ITI-44": base + PIX_V3_PATH, "ITI-45": base + PIX_V3_PATH,
        },
    )


def build_audit(settings: Settings, reactor: Any, threadpool: Any, arr_store: Any, stoppers: list, *,
                deliver: bool = True):
    """The AuditSink of the settings (DESIGN.md rule 9): every event is built, written to the
    durable spool (data_dir/audit-spool.db) before any network, and the sender delivers the
    spool to the built-in ARR (acknowledged after its commit) and to every
    `[[atna.destinations]]` (TLS, TCP, UDP syslog). `audit = false`: a sink that keeps nothing.
    `deliver = False`: only the sink (another process runs the sender on the same spool file)."""
    if not settings.audit:
        return NullAuditSink(), None
    from atna.sender import SpoolingAuditSink

    spool = open_spool(settings)
    sender = build_audit_sender(settings, reactor, threadpool, spool, arr_store) if deliver else None
    sink = SpoolingAuditSink(spool, node=audit_node(settings),
                             on_spooled=sender.wake_threadsafe if sender is not None else None)

    def stop() -> None:
        # On the reactor thread at shutdown: the sender's stop is asynchronous; the spool keeps
        # whatever was not delivered for the next start.
        if sender is None:
            spool.close()
            return
        d = sender.stop()
        d.addBoth(lambda _: spool.close())

    if sender is not None:
        _on_reactor(reactor, sender.start)
    stoppers.append(lambda: _on_reactor(reactor, stop))
    return sink, sender


def open_spool(settings: Settings):
    """The durable audit spool. `spool_synchronous = "auto"`: as durable as the registry it
    audits — on SQLite (the embedded defaults, `synchronous=NORMAL`) an event commit survives a
    process kill or restart, as registrations do, without an fsync each; on PostgreSQL (power-loss
    safe commits) every append is fsynced (`FULL`). "full" / "normal" force one or the other."""
    from atna.spool import Spool

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    mode = settings.spool_synchronous
    if mode == "auto":
        mode = "normal" if settings.registry_database_url.startswith("sqlite") else "full"
    return Spool(settings.data_dir / "audit-spool.db", max_events=settings.spool_max_events,
                 synchronous=mode.upper())


def build_audit_sender(settings: Settings, reactor: Any, threadpool: Any, spool: Any, arr_store: Any):
    """The AuditSender draining `spool` to the built-in ARR (`arr_store`, when on) and to the
    configured `[[atna.destinations]]`."""
    from atna.sender import AuditSender, Destination, TlsClientSettings

    destinations = []
    if arr_store is not None:
        from atna.arr.local import LocalArrDestination

        local = LocalArrDestination(arr_store, reactor=reactor, threadpool=threadpool)
        destinations.append(Destination("local-arr", "local", deliver=local.deliver_blocking))
    tls = settings.tls()
    default_tls = (
        TlsClientSettings(tls.certificate, tls.private_key, tls.ca_bundle)
        if tls is not None and tls.ca_bundle is not None else None
    )
    for table in settings.audit_destinations:
        d = Destination.from_mapping(dict(table), default_tls=default_tls)
        if d.transport == "tls" and tls is not None and "certificate" not in table:
            # the node's own ITI-19 settings (TLS 1.2+, BCP195 suites, its certificate)
            from config.tls import client_context_factory

            d = attrs.evolve(d, tls_options=client_context_factory(
                tls, (d.tls.server_name if d.tls else None) or d.host,
                verify_hostname=settings.tls_verify_server_hostname))
        destinations.append(d)
    return AuditSender(reactor, spool, destinations, thread_pool=threadpool)


def run_audit_sender(settings: Settings) -> int:
    """`carnet serve`'s audit delivery process: drains the spool the serving processes append
    to, into the built-in ARR and the destinations. Apart from the serving processes so that
    storing and sending events never competes with transactions for their interpreter (GIL);
    it stops with the process that started it. The spool's lease makes it the only sender."""
    from twisted.internet import reactor

    engine = make_engine(settings.registry_database_url, pool_size=2)
    threadpool = WorkerPool(2, name="carnet-audit")
    threadpool.start()
    spool = open_spool(settings)
    sender = build_audit_sender(settings, reactor, threadpool, spool, _arr_store(settings, engine))
    reactor.callWhenRunning(sender.start)

    def stop():
        d = sender.stop()
        d.addBoth(lambda _: (spool.close(), threadpool.stop(), engine.dispose()))
        return d

    reactor.addSystemEventTrigger("before", "shutdown", stop)
    _stop_when_orphaned(reactor)
    reactor.run()
    return 0


def build_pix_v2(settings: Settings, reactor: Any, threadpool: Any, xref: Any, audit: Any, stoppers: list):
    """ITI-8 / ITI-9 over MLLP: the protocol factory (serve() listens on it) and the ITI-10
    sender when MLLP consumers are configured."""
    from pix import er7
    from pix.hl7v2_service import Hl7v2Service
    from pix.iti10_update import Consumer
    from pix.mllp_edge import MllpFactory, MllpUpdateSender

    authorities = er7.AuthorityTable(
        [er7.AssigningAuthority(str(a["oid"]), str(a.get("namespace", "")), frozenset(a.get("sources", ())))
         for a in settings.pix_authorities],
        default_by_source={src: str(a["oid"]) for a in settings.pix_authorities for src in a.get("default_for", ())},
    )
    me = er7.ResponderIdentity(settings.pix_application, settings.pix_facility)
    consumers = [
        Consumer(str(c["host"]), int(c["port"]), tuple(c.get("domains", ())),
                 str(c.get("application", "")), str(c.get("facility", "")), tls=bool(c.get("tls", False)))
        for c in settings.pix_consumers if c.get("protocol") == "mllp"
    ]
    sender = None
    if consumers:
        tls = settings.tls()
        creator = None
        if tls is not None:
            from config.tls import client_context_factory

            def creator(host: str):  # ITI-19: the node's certificate to a consumer over TLS
                return client_context_factory(tls, host, verify_hostname=settings.tls_verify_server_hostname)
        sender = MllpUpdateSender(reactor, consumers, authorities, sender=me, tls_creator=creator)
        if audit is not None:
            from pix.audit import iti10_recorder

            sender.on_outcome = iti10_recorder(audit)
        stoppers.append(lambda: _on_reactor(reactor, sender.stop))
    service = Hl7v2Service(xref, sender, authorities=authorities, responder=me)
    if audit is not None:
        from pix.audit import v2_recorder

        service.on_outcome = v2_recorder(audit)
    return MllpFactory(service, reactor=reactor, threadpool=threadpool,
                       max_message_bytes=settings.mllp_max_message_bytes)


def build_cross_references(settings: Settings, engine: Any):
    """The PIX Manager's cross-reference store; also the registry's PatientIdentities (both read
    the registry's `patient` table, which the PIX feeds fill)."""
    from pix.identities import SqlCrossReferences
    from pix.ins import InsPolicy

    return SqlCrossReferences(engine, settings.pix_domains, InsPolicy(accepted_oids=frozenset(settings.ins_oids)))


def build_pix_v3(settings: Settings, reactor: Any, threadpool: Any, xref: Any, audit: Any, stoppers: list):
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
        agent = None
        tls = settings.tls()
        if tls is not None:  # ITI-19: HTTPS consumers get the node's certificate
            from twisted.web.client import Agent

            from config.tls import HttpsPolicy

            agent = Agent(reactor, contextFactory=HttpsPolicy(
                tls, verify_hostname=settings.tls_verify_server_hostname), connectTimeout=30)
        notifier = UpdateSender(reactor, consumers, Responder(device_id or DEFAULT_DEVICE_ID), agent=agent)
        if audit:
            from pix.audit import iti46_recorder

            notifier.on_outcome = iti46_recorder(audit)
        stoppers.append(lambda: _on_reactor(reactor, notifier.stop))
    from pix.audit import v3_recorder

    manager = PixV3Manager(xref, notifier, device_id=device_id, on_outcome=v3_recorder(audit) if audit else None)
    operations = manager.operations()
    endpoint = _soap_endpoint(operations, settings, reactor, threadpool, pix_manager_wsdl, PIX_V3_PATH)
    return manager, endpoint


class _Notifiers:
    """Several update notifiers (ITI-10 over MLLP, ITI-46 over SOAP) behind one."""

    def __init__(self, notifiers: list) -> None:
        self.notifiers = notifiers

    def notify(self, change: Any) -> None:
        for n in self.notifiers:
            try:
                n.notify(change)
            except Exception:  # noqa: BLE001 - one consumer kind failing must not stop the other
                log.exception("PIX update notification could not be queued")


def _on_reactor(reactor: Any, fn: Any) -> None:
    """Run `fn` on the reactor thread: at once when called there, else through callFromThread."""
    from twisted.python import threadable

    if reactor is None:  # a site built without a reactor (tests of its shape) starts nothing
        return
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
            ca_file=str(_relative(settings, settings.s3_ca_file)) if settings.s3_ca_file else None,
            cert_check=settings.s3_cert_check,
        )
    from repository.blobs.fs import FilesystemBlobStore

    return FilesystemBlobStore(settings.blob_path)


def build_seal(settings: Settings):
    """The repository's sealing identity (`repository.seal`), or None when no seal is configured."""
    if settings.seal_certificate is None and settings.seal_key is None:
        return None
    if settings.seal_certificate is None or settings.seal_key is None:
        raise ValueError("the repository seal needs both seal_certificate and seal_key")
    from repository.seal import RepositorySeal

    return RepositorySeal.from_files(_relative(settings, settings.seal_certificate),
                                     _relative(settings, settings.seal_key))


def _relative(settings: Settings, path: Path) -> Path:
    """A path of the settings, relative ones taken from the config file's directory."""
    base = settings.config_dir
    return path if path.is_absolute() or base is None else Path(base) / path


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
        ssl_context = None
        tls = settings.tls()
        if tls is not None and settings.registry_url.startswith("https:"):
            from config.tls import ssl_context_for_client

            # ITI-19: the repository presents the node's certificate to a remote registry
            ssl_context = ssl_context_for_client(tls, verify_hostname=settings.tls_verify_server_hostname)
        client = SoapRegistryClient(settings.registry_url, audit=registry.audit, ssl_context=ssl_context)
    else:
        client = InProcessRegistryClient(registry, audit=registry.audit,
                                          registry_url=settings.base_url + REGISTRY_PATH)
    signatures = (
        SignaturePolicy.from_mapping(settings.signatures, base_dir=settings.config_dir)
        if settings.signatures else None
    )
    pending = PendingJournal(engine)
    seal = build_seal(settings)
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
        seal=seal,
    )
    sweeper = OrphanSweeper(blobs, client.known_document_unique_ids, pending)
    return repository, sweeper


def _public(settings: Settings, seen_url: str, path: str) -> str:
    """The address written in the WSDL: the configured public URL, else the one the client used."""
    if settings.public_url:
        return settings.public_url.rstrip("/") + path
    return seen_url


def serve(settings: Settings, *, inherited_fd: int | None = None, ready_fd: int | None = None,
          balance: tuple[int, int] | None = None) -> int:
    """`carnet serve`: migrate, build, listen, run until interrupted.

    With `workers` > 1, this process opens the listening socket and starts `workers - 1` more
    processes (the same command, plus `--inherited-fd`) that accept on the same socket: Carnet is
    bound to one core per process by the GIL, and the nodes share nothing but the database and the
    blob store (DESIGN.md §5). The first process alone runs the orphan sweep.

    This process starts accepting once every worker does (each says so on its `--ready-fd` pipe)
    and then prints "All N serving processes are accepting.": clients that connect before are
    taken by whichever process is ready, and keep-alive clients stay where they landed (seen: the
    bench's 8 clients all on the first process, the other one idle, `--workers 2` no faster).
    From then on the processes share the connections evenly (`config.balance`; `balance` is a
    worker's (table descriptor, slot))."""
    from twisted.internet import reactor

    from registry.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if inherited_fd is None:
        upgrade(settings.registry_database_url)
    separate_sender = settings.audit and settings.audit_sender_process
    carnet = build(settings, reactor, deliver_audit=not separate_sender)
    tls = settings.tls()
    server_tls = None
    if tls is not None and (settings.tls_http or settings.tls_mllp or settings.arr_syslog_port):
        from config.tls import server_context_factory

        server_tls = server_context_factory(tls, on_failure=node_authentication_failure(carnet))
    if settings.tls_http and server_tls is None:
        raise SystemExit("[tls] http = true needs [tls] certificate")
    http_factory: Any = carnet.site
    if settings.tls_http:
        from config.tls import tls_server_factory

        http_factory = tls_server_factory(carnet.site, server_tls)
    if inherited_fd is not None:
        port = reactor.adoptStreamPort(inherited_fd, socket.AF_INET, http_factory)
        if balance is not None:
            fd, slot = balance
            balancer = AcceptBalancer(reactor, port, ConnectionTable.attach(fd), slot)
            balancer.install(http_factory)
            reactor.callWhenRunning(balancer.start)
        reactor.addSystemEventTrigger("before", "shutdown", carnet.stop)
        _stop_when_orphaned(reactor)
        tune_garbage_collector()
        if ready_fd is not None:
            reactor.callWhenRunning(_say_ready, ready_fd)
        reactor.run()
        return 0
    children: list[subprocess.Popen] = []
    if settings.workers > 1:
        listener = socket.create_server((settings.host, settings.http_port), backlog=1024)
        listener.setblocking(False)
        port = reactor.adoptStreamPort(listener.fileno(), socket.AF_INET, http_factory)
        table = ConnectionTable.create(settings.workers)  # slot 0: this process; k: worker k
        balancer = AcceptBalancer(reactor, port, table, 0)
        balancer.install(http_factory)
        readiness = [os.pipe() for _ in range(settings.workers - 1)]
        children = [
            _start_worker(listener.fileno(), ready_fd=w, balance=(table.fd, k))
            for k, (_r, w) in enumerate(readiness, 1)
        ]
        listener.close()  # the reactor's port and the children hold their own descriptors
        reactor.addSystemEventTrigger("before", "shutdown", lambda: _stop_workers(children))
        port.stopReading()  # accepting from when every worker does (see above)

        def all_accepting() -> None:  # on the reactor
            balancer.start()
            print(f"All {settings.workers} serving processes are accepting.", flush=True)

        def wait_for_workers() -> None:  # on its own thread: _wait_ready blocks
            _wait_ready(children, readiness)
            reactor.callFromThread(all_accepting)

        threading.Thread(target=wait_for_workers, name="carnet-workers-ready", daemon=True).start()
    else:
        port = reactor.listenTCP(settings.http_port, http_factory, interface=settings.host)
    listening = _listen_other_ports(settings, reactor, carnet, server_tls)
    if separate_sender:
        audit_process = _start_worker(None, "--audit-sender")
        children.append(audit_process)
        if settings.workers <= 1:
            reactor.addSystemEventTrigger("before", "shutdown", lambda: _stop_workers([audit_process]))
    reactor.addSystemEventTrigger("before", "shutdown", carnet.stop)
    _schedule_sweep(reactor, carnet)
    _audit_application(carnet, "application-start")
    reactor.addSystemEventTrigger("before", "shutdown", lambda: _audit_application(carnet, "application-stop"))
    actual = port.getHost().port
    scheme = "https" if settings.tls_http else "http"
    base = settings.public_url or f"{scheme}://{settings.host}:{actual}"
    print(f"Carnet is listening on {settings.host}:{actual} with {max(1, settings.workers)} process(es) "
          f"(registry: {settings.registry_database_url})")
    for name, url in carnet.endpoints(base).items():
        print(f"  {name}: {url}   (WSDL: {url}?wsdl)")
    for name, where in listening.items():
        print(f"  {name}: {where}")
    if carnet.arr_store is not None:
        print(f"  ITI-81 audit events: {base}/atna/AuditEvent   patient access history: {base}/atna/history/<patient>")
    print("Stop with Ctrl-C.", flush=True)
    tune_garbage_collector()
    reactor.run()
    return 0


def _listen_other_ports(settings: Settings, reactor: Any, carnet: Carnet, server_tls: Any) -> dict[str, str]:
    """The first process's non-HTTP listeners: MLLP (ITI-8/9), the ARR's syslog receivers."""
    listening: dict[str, str] = {}
    if settings.mllp_port and carnet.mllp_factory is not None:
        if settings.tls_mllp:
            if server_tls is None:
                raise SystemExit("[tls] mllp = true needs [tls] certificate")
            from config.tls import listen_tls

            p = listen_tls(reactor, settings.mllp_port, carnet.mllp_factory, server_tls, interface=settings.host)
        else:
            p = reactor.listenTCP(settings.mllp_port, carnet.mllp_factory, interface=settings.host)
        listening["ITI-8 / ITI-9 PIX Manager (HL7v2, MLLP" + (" over TLS)" if settings.tls_mllp else ")")] = (
            f"{settings.host}:{p.getHost().port}")
    if carnet.arr_store is not None and (settings.arr_syslog_port or settings.arr_udp_port):
        from atna.arr import receiver

        ingest = receiver.BatchedIngest(carnet.arr_store, reactor=reactor, threadpool=carnet.threadpool)
        if settings.arr_syslog_port:
            if server_tls is None:
                raise SystemExit("[atna] arr_syslog_port needs [tls] certificate (syslog over TLS, RFC 5425)")
            p = receiver.listen_tls(reactor, ingest, server_tls, port=settings.arr_syslog_port, interface=settings.host)
            listening["Audit Record Repository (syslog over TLS)"] = f"{settings.host}:{p.getHost().port}"
        if settings.arr_udp_port:
            p = receiver.listen_udp(reactor, ingest, port=settings.arr_udp_port, interface=settings.host)
            listening["Audit Record Repository (syslog over UDP)"] = f"{settings.host}:{p.getHost().port}"
        reactor.addSystemEventTrigger("before", "shutdown", ingest.stop)
        carnet.metrics["arr_receiver"] = lambda: attrs.asdict(ingest.counters)
    return listening


def node_authentication_failure(carnet: Carnet):
    """`config.tls` on_failure hook: a refused node is audited (DCM 110113 Security Alert,
    110126 Node Authentication; ITI TF-2a §3.19.6) — off the reactor thread, the spool fsyncs."""
    from twisted.internet.threads import deferToThreadPool

    from registry.ports import AuditRecord, TransactionContext

    def on_failure(failure: Any) -> None:
        record = AuditRecord(
            transaction="node-authentication-failure",
            outcome="serious-failure",
            context=TransactionContext("node-authentication-failure", remote_host=failure.peer_host,
                                       endpoint=f"port {failure.local_port}"),
            peer_user_id=failure.subject,
            peer_address=failure.peer_host,
            error_codes=(f"{failure.reason.name}: {failure.detail}",),
        )
        from twisted.internet import reactor

        d = deferToThreadPool(reactor, carnet.threadpool, carnet.audit.record, record)
        d.addErrback(lambda f: log.error("auditing a node authentication failure failed: %s", f.getErrorMessage()))

    return on_failure


def _audit_application(carnet: Carnet, what: str) -> None:
    """Application start / stop (DCM 110100, ITI TF-2a §3.20.4.1.1.1)."""
    from registry.ports import AuditRecord, TransactionContext

    try:
        carnet.audit.record(AuditRecord(transaction=what, outcome="success", context=TransactionContext(what)))
    except Exception:  # noqa: BLE001 - starting and stopping must not depend on the audit
        log.exception("auditing %s failed", what)


def _start_worker(fd: int | None, *extra: str, ready_fd: int | None = None,
                  balance: tuple[int, int] | None = None) -> subprocess.Popen:
    """Another process of this `carnet serve`: a serving process on the listening socket `fd`
    (`balance`: the connection table's descriptor and the process's slot in it), or
    (`--audit-sender`) the audit delivery process; this process's own command line."""
    argv = [sys.executable, "-m", "config.cli", *sys.argv[1:]]
    argv += ["--inherited-fd", str(fd)] if fd is not None else []
    argv += ["--ready-fd", str(ready_fd)] if ready_fd is not None else []
    argv += ["--balance-fd", str(balance[0]), "--balance-slot", str(balance[1])] if balance is not None else []
    argv += list(extra)
    env = dict(os.environ, CARNET_SERVE_PARENT=str(os.getpid()))
    fds = tuple(f for f in (fd, ready_fd, balance[0] if balance else None) if f is not None)
    child = subprocess.Popen(argv, pass_fds=fds, env=env)
    if ready_fd is not None:
        os.close(ready_fd)  # the child's copy is the only writer left
    return child


WORKER_START_TIMEOUT_S = 120.0


def _wait_ready(children: list[subprocess.Popen], readiness: list[tuple[int, int]]) -> None:
    """Block until every worker process accepts on the shared socket (a byte on its pipe), died,
    or `WORKER_START_TIMEOUT_S` passed (then this process serves alone meanwhile, logged)."""
    import select

    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    waiting = {r: child for (r, _w), child in zip(readiness, children)}
    while waiting and time.monotonic() < deadline:
        ready, _, _ = select.select(list(waiting), [], [], min(1.0, max(0.0, deadline - time.monotonic())))
        for r in ready:
            os.read(r, 1)  # b"1", or b"" if the worker exited before it was ready
            os.close(r)
            child = waiting.pop(r)
            if child.poll() is not None:
                log.error("serving process %d exited (%s) before it was ready", child.pid, child.returncode)
    for r, child in waiting.items():
        log.error("serving process %d not ready after %.0f s", child.pid, WORKER_START_TIMEOUT_S)
        os.close(r)


def _say_ready(ready_fd: int) -> None:
    try:
        os.write(ready_fd, b"1")
    finally:
        os.close(ready_fd)


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
