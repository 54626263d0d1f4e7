"""ATNA (issue 5, "Speed"): the ARR's ingest over TLS, and what auditing costs ITI-18.

(a) ARR ingest over TLS: a `carnet serve` child (embedded defaults: SQLite in a temp data dir;
    `CARNET_ARR_SYSLOG_PORT` on a free port; certificates made here with `cryptography`: a CA, a
    server and a client certificate, client certificates required) receives N audit messages —
    real DICOM PS3.15 messages from the `atna.events` builders (ITI-18, ITI-42, ITI-43 events of
    distinct patients), each in an RFC 5424 message with its own `[carnet@32473 eventId="…"]`,
    so none is deduplicated — octet-counted (RFC 5425 §4.3) over ONE mutually-authenticated TLS
    connection from this process. The figure is N / (first byte sent → the N-th row committed in
    `audit_record`, polled with SQLite every 20 ms). A warm-up batch is sent and stored first.
    Floor: `python -m bench.atna floor`, a bare Twisted TLS listener (the same
    `config.tls.server_context_factory`, client certificates required) that only frames
    (`OctetCountingDecoder`) and counts, fed by the same client with the same bytes in the same run.
(b) ITI-18 with auditing on vs off: two `carnet serve` children on ONE PostgreSQL bench database
    (`carnet_bench_atna`, dropped and recreated; `--atna-entries` DocumentEntries, 200 per patient,
    loaded by `bench.dataset`), one with `CARNET_AUDIT=false` (`registry.ports.NullAuditSink`) and
    one with `CARNET_AUDIT=true` (the embedded default: every query spooled, fsync'd, then stored
    by the built-in ARR in the same database). The same sequential FindDocuments workload as
    `python -m bench` (one keep-alive client, LeafClass, Approved, 200 entries per answer, every
    answer checked) runs against both, in alternating rounds so that the shared machine's noise
    falls on both; the ratio of throughputs is the figure (target ≥ 0.80). The audited server's
    ARR is then checked to hold one ITI-18 event per query.

(c) `python -m bench.atna sink` (alone, not in the suite): what the request thread pays to audit, in one
    process: `SpoolingAuditSink.record` of an ITI-43 event (real `atna.events` builder, spool with
    `synchronous=FULL` in a temp dir), one thread, per event; `record_many` in batches of 10 and 50, per
    event; the floor is building and framing the same events without a spool. Then 8 threads recording
    while an `AuditSender` drains the spool to a `local` destination: the appends' latency.

`python -m bench.atna` runs this part alone; `python -m bench --only atna` from the suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import random
import shutil
import socket
import sqlite3
import ssl
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.procs import (
    Process, carnet_command, drop_database, free_port, listening_port, recreate_database, start_carnet_server,
)
from bench.table import Row, print_report

ARR_TARGET = 2000.0  # events/s over TLS (issue 5, "Speed")
AUDIT_RATIO_TARGET = 0.80  # ITI-18 audited / null sink (issue 5, "Speed")
BENCH_DB = "carnet_bench_atna"
REGISTRY_PATH = "/xds/registry"


# --- PKI (ITI-19 node authentication: mutual TLS) -------------------------------------------------


def make_pki(where: Path) -> dict[str, Path]:
    """A CA, a server certificate (localhost, 127.0.0.1; serverAuth) and a client certificate
    (clientAuth), EC P-256, written as PEM files; returns their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    where.mkdir(parents=True, exist_ok=True)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Carnet bench"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def pem_key(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("bench CA")).issuer_name(name("bench CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, server: bool):
        key = ec.generate_private_key(ec.SECP256R1())
        b = (
            x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if server:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return key, b.sign(ca_key, hashes.SHA256())

    paths = {k: where / f"{k}.pem" for k in ("ca", "server", "server_key", "client", "client_key")}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who, server in (("server", True), ("client", False)):
        key, cert = leaf(f"bench {who}", server)
        paths[who].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{who}_key"].write_bytes(pem_key(key))
    return paths


def tls_env(pki: dict[str, Path]) -> dict[str, str]:
    return {
        "CARNET_TLS_CERTIFICATE": str(pki["server"]),
        "CARNET_TLS_PRIVATE_KEY": str(pki["server_key"]),
        "CARNET_TLS_CA_BUNDLE": str(pki["ca"]),
        "CARNET_TLS_REQUIRE_CLIENT_CERTIFICATE": "true",
    }


# --- messages ------------------------------------------------------------------------------------


def audit_frames(n: int, *, first: int = 0) -> list[bytes]:
    """N octet-counted RFC 5424 audit messages (RFC 5425 §4.3), each with its own eventId.

    The DICOM messages come from the real builders: ITI-18 (with the AdhocQueryRequest as
    ParticipantObjectQuery), ITI-42 and ITI-43 events, patients and documents distinct per message."""
    from atna.events import AuditNode, build_events
    from atna.spool import EVENT_ID_PARAM, EVENT_ID_SD
    from atna.syslog import audit_message, format_message, format_structured_data, format_timestamp, octet_frame
    from bench import messages as M
    from lxml import etree
    from registry import constants as C
    from registry.ports import AuditRecord, TransactionContext

    node = AuditNode(audit_source_id="bench-node", host="bench.example", process_id="4242",
                     endpoints={"ITI-18": "https://bench.example/xds/registry",
                                "ITI-42": "https://bench.example/xds/registry",
                                "ITI-43": "https://bench.example/xds/repository"})
    now = dt.datetime.now(dt.timezone.utc)
    stamp = format_timestamp(now)
    out = []
    for i in range(first, first + n):
        patient = M.bench_patient(5_000_000 + i)
        kind = i % 3
        if kind == 0:
            body = M.adhoc_query_request(C.SQ_FIND_DOCUMENTS, {
                "$XDSDocumentEntryPatientId": [M.quote_sq(patient)],
                "$XDSDocumentEntryStatus": [f"({M.quote_sq(C.STATUS_APPROVED)})"],
            })
            record = AuditRecord(transaction="ITI-18", outcome="success",
                                 context=TransactionContext("ITI-18", remote_host="192.0.2.18", reply_to=M.WSA_ANONYMOUS),
                                 patient_ids=(patient,), query_id=C.SQ_FIND_DOCUMENTS, query_body=etree.tostring(body))
        elif kind == 1:
            record = AuditRecord(transaction="ITI-42", outcome="success",
                                 context=TransactionContext("ITI-42", remote_host="192.0.2.42"),
                                 patient_ids=(patient,), submission_set_unique_id=f"1.2.250.1.999.42.{i}")
        else:
            record = AuditRecord(transaction="ITI-43", outcome="success",
                                 context=TransactionContext("ITI-43", remote_host="192.0.2.43"),
                                 patient_ids=(patient,),
                                 document_refs=((f"1.2.250.1.999.43.{i}", M.BENCH_REPOSITORY, M.BENCH_HOME),))
        for xml in build_events(record, node, now):
            sd = format_structured_data([(EVENT_ID_SD, [(EVENT_ID_PARAM, str(uuid.uuid4()))])])
            msg = audit_message(xml, timestamp=stamp, hostname="bench.example", app_name="bench",
                                procid="4242", structured_data=sd)
            out.append(octet_frame(format_message(msg)))
    return out[:n]


class TlsClient:
    """ONE mutually-authenticated TLS connection (client certificate, server checked against the CA)."""

    def __init__(self, port: int, pki: dict[str, Path]) -> None:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki["ca"]))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(pki["client"]), str(pki["client_key"]))
        raw = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")

    def send(self, frames: list[bytes], chunk: int = 64 * 1024) -> None:
        buf: list[bytes] = []
        size = 0
        for f in frames:
            buf.append(f)
            size += len(f)
            if size >= chunk:
                self.sock.sendall(b"".join(buf))
                buf, size = [], 0
        if buf:
            self.sock.sendall(b"".join(buf))

    def close(self) -> None:
        try:
            self.sock.unwrap()
        except (OSError, ValueError):
            pass
        self.sock.close()


# --- the floor (a child process) -----------------------------------------------------------------


def run_floor(pki: dict[str, Path]) -> int:
    """TLS with client certificates (config.tls, as Carnet's ports), RFC 5425 framing, a count.
    Prints `LISTENING <port>`, then `COUNT <n>` each time it is asked with `COUNT?` on stdin."""
    from twisted.internet import reactor, protocol

    from atna.syslog import OctetCountingDecoder
    from config.tls import TlsSettings, server_context_factory

    tls = TlsSettings.from_mapping({"certificate": str(pki["server"]), "private_key": str(pki["server_key"]),
                                    "ca_bundle": str(pki["ca"]), "require_client_certificate": True})
    state = {"count": 0}

    class Counter(protocol.Protocol):
        def connectionMade(self):
            self.decoder = OctetCountingDecoder()

        def dataReceived(self, data):
            state["count"] += sum(1 for item in self.decoder.feed(data) if isinstance(item, bytes))

    factory = protocol.Factory.forProtocol(Counter)
    port = reactor.listenSSL(0, factory, server_context_factory(tls), interface="127.0.0.1")
    print(f"LISTENING {port.getHost().port}", flush=True)

    def ask() -> None:  # a thread reading stdin; answers on the reactor thread
        for line in sys.stdin:
            if line.strip() == "COUNT?":
                reactor.callFromThread(lambda: print(f"COUNT {state['count']}", flush=True))
        reactor.callFromThread(reactor.stop)

    threading.Thread(target=ask, daemon=True).start()
    reactor.run()
    return 0


class FloorProcess(Process):
    def __init__(self, workdir: Path, pki: dict[str, Path]) -> None:
        argv = [sys.executable, "-m", "bench.atna", "floor", "--pki", str(pki["ca"].parent)]
        super().__init__("atna-floor", argv, workdir / "atna-floor.log", stdout_pipe=True, stdin_pipe=True)
        self.port = listening_port(self, "the ATNA floor")

    def count(self) -> int:
        self.proc.stdin.write(b"COUNT?\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline().split()[1])


# --- (a) ARR ingest ------------------------------------------------------------------------------


@dataclass
class IngestFigure:
    events: int
    seconds: float  # first byte sent → all counted/stored
    send_seconds: float  # first byte → last byte accepted by the kernel

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (f"{self.events} events in {self.seconds:.2f} s: {self.rate:.0f} events/s"
                f" (sending took {self.send_seconds:.2f} s)")


def measure_ingest(port: int, pki: dict[str, Path], warmup: list[bytes], frames: list[bytes],
                   count: Callable[[], int], timeout: float) -> IngestFigure:
    """Send `warmup`, wait until stored; then send `frames` on the same connection and time until
    `count()` has grown by len(frames)."""
    client = TlsClient(port, pki)
    try:
        base = count()
        client.send(warmup)
        _wait_count(count, base + len(warmup), timeout)
        base = count()
        target = base + len(frames)
        sent: dict[str, float] = {}
        errors: list[BaseException] = []

        def send() -> None:
            try:
                client.send(frames)
                sent["at"] = time.perf_counter()
            except BaseException as exc:  # noqa: BLE001 - reported by the caller
                errors.append(exc)

        t0 = time.perf_counter()
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        t_end = _wait_count(count, target, timeout, errors)
        sender.join(timeout)
        if errors:
            raise errors[0]
        return IngestFigure(len(frames), t_end - t0, sent.get("at", t_end) - t0)
    finally:
        client.close()


def _wait_count(count: Callable[[], int], target: int, timeout: float,
                errors: list[BaseException] | None = None) -> float:
    deadline = time.perf_counter() + timeout
    while True:
        now = time.perf_counter()
        n = count()
        if n >= target:
            return time.perf_counter()
        if errors:
            raise errors[0]
        if now > deadline:
            raise RuntimeError(f"only {n} of {target} events after {timeout:.0f} s")
        time.sleep(0.02)


def sqlite_counter(db: Path) -> Callable[[], int]:
    def count() -> int:
        if not db.exists():
            return 0
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute("SELECT COUNT(*) FROM audit_record").fetchone()[0]
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()

    return count


def start_carnet(name: str, workdir: Path, argv_tail: list[str], env: dict[str, str]) -> tuple[Process, str]:
    env = {"CARNET_MLLP_PORT": "0", **env}  # no MLLP listener: several servers, and other benches, run at once
    return start_carnet_server(argv_tail, REGISTRY_PATH, workdir / f"{name}.log", env=env, name=name)


def arr_ingest(opts: "Options", workdir: Path, log: Callable[[str], None]) -> dict[str, IngestFigure]:
    pki = make_pki(workdir / "pki")
    t = time.perf_counter()
    warmup = audit_frames(opts.warmup_events, first=10_000_000)
    frames = audit_frames(opts.events)
    size = sum(len(f) for f in frames)
    log(f"  {len(frames)} audit messages built in {time.perf_counter() - t:.1f} s"
        f" ({size / len(frames):.0f} B each on average)")
    out: dict[str, IngestFigure] = {}
    floor = FloorProcess(workdir, pki)
    try:
        out["floor"] = measure_ingest(floor.port, pki, warmup, frames, floor.count, opts.timeout)
        log(f"  floor:  {out['floor'].summary()}")
    finally:
        floor.stop()
    syslog_port = free_port()
    data_dir = workdir / "arr"
    env = {**tls_env(pki), "CARNET_ARR_SYSLOG_PORT": str(syslog_port)}
    srv, _url = start_carnet("carnet-arr", workdir, ["--data-dir", str(data_dir)], env)
    try:
        counter = sqlite_counter(data_dir / "audit.db")  # the built-in ARR's own file on SQLite (config.site._arr_store)
        out["carnet"] = measure_ingest(syslog_port, pki, warmup, frames, counter, opts.timeout)
        log(f"  carnet: {out['carnet'].summary()}")
        if not srv.alive():
            raise RuntimeError(f"Carnet exited during the ARR run:\n{srv.log_tail()}")
    finally:
        srv.stop()
    return out


# --- (b) ITI-18 audited vs not -------------------------------------------------------------------


def iti18_audit(opts: "Options", workdir: Path, log: Callable[[str], None]) -> dict[str, object]:
    import psycopg

    from bench import dataset
    from bench import messages as M
    from bench.load import LoadResult, check_query_response, run_load

    db_url = recreate_database(opts.admin_url, BENCH_DB)
    servers: list[Process] = []
    try:
        carnet_command(["db", "upgrade", "--data-dir", str(workdir / "db-upgrade"), "--database-url", db_url])
        info = dataset.load(db_url, opts.entries, log=lambda _line: None)
        log(f"  data set: {info['entries']} entries, {info['patients']} patients on PostgreSQL ({BENCH_DB})"
            f" in {info['total_s']:.1f} s")
        patients = dataset.patients_with_entries(opts.entries)
        urls = {}
        for who, audit in (("null", "false"), ("audited", "true")):
            srv, url = start_carnet(f"carnet-{who}", workdir,
                                    ["--data-dir", str(workdir / who), "--database-url", db_url],
                                    {"CARNET_AUDIT": audit})
            servers.append(srv)
            urls[who] = url
        results: dict[str, list[LoadResult]] = {"null": [], "audited": []}
        rng = random.Random(2)
        per_round = max(1, opts.queries // opts.rounds)
        check = check_query_response(dataset.ENTRIES_PER_PATIENT)
        for r in range(opts.rounds):
            order = ("null", "audited") if r % 2 == 0 else ("audited", "null")
            for who in order:
                url = urls[who]
                res = run_load(url, lambda _i, url=url: M.find_documents_request(rng.choice(patients), url),
                               check=check, clients=opts.clients, duration=600.0, max_requests=per_round,
                               warmup=20 if r == 0 else 5)
                results[who].append(res)
        merged = {who: _merge(rs) for who, rs in results.items()}
        for who in ("null", "audited"):
            log(f"  {who:8s} {merged[who].summary()}, mean {_mean(merged[who].latencies) * 1000:.2f} ms")
        # the audited server must have stored one ITI-18 event per query (after its spool drained)
        expected = sum(r.requests for r in results["audited"]) + opts.clients * (20 + 5 * (opts.rounds - 1))
        stored = _wait_pg_count(db_url, expected, 60.0)
        log(f"  audited server's ARR: {stored} ITI-18 events stored ({expected} queries sent)")
        for srv in servers:
            if not srv.alive():
                raise RuntimeError(f"{srv.name} exited during the run:\n{srv.log_tail()}")
        return {"null": merged["null"], "audited": merged["audited"], "stored": stored, "expected": expected}
    finally:
        for srv in reversed(servers):
            srv.stop()
        if not opts.keep_db:
            try:
                drop_database(opts.admin_url, BENCH_DB)
            except psycopg.Error:
                pass


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _merge(results):
    from bench.load import LoadResult

    lat = [x for r in results for x in r.latencies]
    first = next((r.first_failure for r in results if r.first_failure), None)
    return LoadResult(len(lat), sum(r.failures for r in results), sum(r.seconds for r in results), lat, first)


def _wait_pg_count(db_url: str, expected: int, timeout: float) -> int:
    import psycopg

    from bench import dataset

    deadline = time.monotonic() + timeout
    n = 0
    with psycopg.connect(dataset.libpq_url(db_url), autocommit=True) as conn:
        while time.monotonic() < deadline:
            n = conn.execute("SELECT COUNT(*) FROM audit_record WHERE event_id_code = '110112'").fetchone()[0]
            if n >= expected:
                break
            time.sleep(0.2)
    return n


# --- the part of `python -m bench` ----------------------------------------------------------------


@dataclass
class Options:
    quick: bool = False
    events: int = 20_000
    warmup_events: int = 500
    entries: int = 20_000  # ITI-18 registry size (PostgreSQL), 200 entries per patient
    queries: int = 1_000  # ITI-18 requests per server, over `rounds` alternating rounds
    rounds: int = 4
    clients: int = 1
    admin_url: str = "postgresql://postgres@127.0.0.1:5432/test"
    keep_db: bool = False
    timeout: float = 300.0
    skip_arr: bool = False
    skip_iti18: bool = False


def run(opts: Options, log: Callable[[str], None] = print) -> tuple[list[Row], list[str]]:
    """Run the ATNA benchmarks; returns the table rows and the failures (never raises)."""
    if opts.quick:
        opts.events, opts.entries, opts.queries, opts.warmup_events = 3_000, 4_000, 200, 200
    workdir = Path(tempfile.mkdtemp(prefix="carnet-bench-atna-"))
    failures: list[str] = []
    ingest: dict[str, IngestFigure] = {}
    q: dict[str, object] = {}
    log(f"atna: ARR ingest of {opts.events} audit messages over one TLS connection;"
        f" ITI-18 FindDocuments audited vs null sink, {opts.queries} queries each, {opts.clients} client(s),"
        f" {opts.entries} entries on PostgreSQL")
    if not opts.skip_arr:
        try:
            log("ARR ingest over TLS …")
            ingest = arr_ingest(opts, workdir, log)
        except Exception as exc:  # noqa: BLE001 - report, then the table with what was measured
            failures.append(f"ARR ingest: {type(exc).__name__}: {exc}")
    if not opts.skip_iti18:
        try:
            log("ITI-18 audited vs null sink …")
            q = iti18_audit(opts, workdir, log)
        except Exception as exc:  # noqa: BLE001
            failures.append(f"ITI-18 audit: {type(exc).__name__}: {exc}")
    for who in ("null", "audited"):
        r = q.get(who)
        if r is not None and r.failures:
            failures.append(f"ITI-18 {who}: {r.failures} failed requests; first:\n{r.first_failure}")
    if q and q["stored"] < q["expected"]:
        failures.append(f"ITI-18 audited: only {q['stored']} of {q['expected']} ITI-18 events reached the ARR")

    def ok_fig(r) -> bool:
        return r is not None and r.requests > 0 and not r.failures

    null, audited = q.get("null"), q.get("audited")
    both = ok_fig(null) and ok_fig(audited)
    ratio = audited.throughput / null.throughput if both else None
    # The load generator's own time (building the request, parsing and checking 200 entries) is in
    # the throughput; the ratio of mean latencies leaves it out: the server's share alone, stricter.
    server_ratio = _mean(null.latencies) / _mean(audited.latencies) if both else None
    rows = [
        Row("ARR ingest over TLS (1 connection, SQLite)", "events/s",
            ingest["carnet"].rate if "carnet" in ingest else None,
            ingest["floor"].rate if "floor" in ingest else None,
            f"≥ {ARR_TARGET:.0f}/s", lambda v: v >= ARR_TARGET, True),
        Row(f"ITI-18 audited ({opts.clients} client): throughput", "/s",
            audited.throughput if ok_fig(audited) else None, null.throughput if ok_fig(null) else None,
            "-", lambda v: True, True),
        Row("  audited / null sink, throughput", "×", ratio, 1.0 if ratio is not None else None,
            f"≥ {AUDIT_RATIO_TARGET:.2f}", lambda v: v >= AUDIT_RATIO_TARGET, True),
        Row("  audited / null sink, server time (mean latency)", "×", server_ratio,
            1.0 if server_ratio is not None else None,
            f"≥ {AUDIT_RATIO_TARGET:.2f}", lambda v: v >= AUDIT_RATIO_TARGET, True),
        Row("ITI-18 audited: p50 (floor column: null sink)", "ms", audited.p50 if ok_fig(audited) else None,
            null.p50 if ok_fig(null) else None, "-", lambda v: True, False),
        Row("ITI-18 audited: p99 (floor column: null sink)", "ms", audited.p99 if ok_fig(audited) else None,
            null.p99 if ok_fig(null) else None, "-", lambda v: True, False),
    ]
    if failures:
        log(f"atna: logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return rows, failures


# --- (c) the sink, in one process ------------------------------------------------------------------


def sink_bench(n: int = 2000) -> int:
    """Per-event cost of record / record_many against building without a spool (see the docstring, (c))."""
    from atna.events import AuditNode, build_events
    from atna.sender import AuditSender, Destination, SpoolingAuditSink
    from atna.spool import Spool
    from atna.syslog import AuditMessageFormatter
    from registry.ports import AuditRecord, TransactionContext

    node = AuditNode(audit_source_id="carnet@bench", host="carnet.bench", process_id="1")

    def record(i: int) -> AuditRecord:
        return AuditRecord(
            "ITI-43", "success", TransactionContext("ITI-43", remote_host="10.0.0.9",
                                                    endpoint="http://carnet.bench/xds/repository"),
            role="repository", patient_ids=(f"{i:013d}^^^&1.2.250.1.213.1.4.8&ISO",),
            document_unique_ids=(f"1.2.250.1.999.{i}",), repository_unique_id="1.2.250.1.999",
            document_refs=((f"1.2.250.1.999.{i}", "1.2.250.1.999", None),),
        )

    records = [record(i) for i in range(n)]
    workdir = Path(tempfile.mkdtemp(prefix="carnet-bench-sink-"))
    now = dt.datetime.now(dt.timezone.utc)
    fmt = AuditMessageFormatter(hostname="carnet.bench", app_name="carnet", procid="1")
    rows: list[tuple[str, float, float]] = []
    try:
        t = time.perf_counter()
        for r in records:
            for xml in build_events(r, node, now):
                fmt.format(xml, now, [("carnet@32473", [("eventId", str(uuid.uuid4()))])])
        floor = (time.perf_counter() - t) / n
        for label, batch in (("record", 1), ("record_many ×10", 10), ("record_many ×50", 50)):
            with Spool(workdir / f"{batch}.db") as spool:
                sink = SpoolingAuditSink(spool, node=node, hostname="carnet.bench")
                t = time.perf_counter()
                if batch == 1:
                    for r in records:
                        sink.record(r)
                else:
                    for i in range(0, n, batch):
                        sink.record_many(records[i:i + batch])
                per = (time.perf_counter() - t) / n
                m = spool.metrics()
            rows.append((f"{label}: per event ({m['appended'] / max(1, m['append_commits']):.0f} events/commit)",
                         per * 1000, floor * 1000))
        # a request auditing three transactions (ITI-41 on the embedded defaults: ITI-41, its ITI-42 and the
        # registry's ITI-42), 8 threads: three `record` calls, each waiting for its commit, vs `batched()`
        for label, batch in (("3 records per request, 8 threads", False), ("  the same in sink.batched()", True)):
            with Spool(workdir / f"req-{batch}.db") as spool:
                sink = SpoolingAuditSink(spool, node=node, hostname="carnet.bench")
                per_request: list[float] = []
                lock = threading.Lock()

                def request(k: int, sink=sink, batch=batch, per_request=per_request, lock=lock) -> None:
                    for i in range(k * 3, n, 24):
                        t0 = time.perf_counter()
                        if batch:
                            with sink.batched():
                                for r in records[i:i + 3]:
                                    sink.record(r)
                        else:
                            for r in records[i:i + 3]:
                                sink.record(r)
                        with lock:
                            per_request.append(time.perf_counter() - t0)
                        time.sleep(0.002)  # the request's other work

                threads = [threading.Thread(target=request, args=(k,)) for k in range(8)]
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
                m = spool.metrics()
            per_request.sort()
            p50 = per_request[len(per_request) // 2]
            rows.append((f"{label}: p50 per request ({m['appended'] / max(1, m['append_commits']):.1f} ev/commit)",
                         p50 * 1000, 3 * floor * 1000))
        # 8 threads recording while the sender drains to a local destination (the reactor in a thread)

        from twisted.internet import reactor
        from twisted.internet.threads import blockingCallFromThread

        threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True).start()
        latencies: list[float] = []
        lock = threading.Lock()
        with Spool(workdir / "drained.db") as spool:
            sender = AuditSender(reactor, spool, [Destination("arr", "local", deliver=lambda batch: None)])
            sink = SpoolingAuditSink(spool, node=node, hostname="carnet.bench", on_spooled=sender.wake_threadsafe)
            blockingCallFromThread(reactor, sender.start)

            def work(k: int) -> None:
                for r in records[k::8]:
                    t0 = time.perf_counter()
                    sink.record(r)
                    with lock:
                        latencies.append(time.perf_counter() - t0)
                    time.sleep(0.002)  # a request's other work

            threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            deadline = time.monotonic() + 30
            while spool.metrics()["depth"] and time.monotonic() < deadline:
                time.sleep(0.05)
            blockingCallFromThread(reactor, sender.stop)
            m = spool.metrics()
        reactor.callFromThread(reactor.stop)
        latencies.sort()
        pct = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000  # noqa: E731
        print(f"8 threads recording {n} ITI-43 events while the sender drains (local destination): "
              f"p50 {pct(0.5):.2f} ms, p90 {pct(0.9):.2f} ms, p99 {pct(0.99):.2f} ms; delivered "
              f"{sum(m['delivered'].values())}, {m['appended'] / max(1, m['append_commits']):.1f} events/commit")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{'audit sink, ' + str(n) + ' ITI-43 events (1 thread unless said)':<66} {'ms':>7} {'floor':>7} {'ratio':>7}")
    for label, v, f in rows:
        print(f"{label:<66} {v:>7.3f} {f:>7.3f} {v / f:>6.2f}×")
    print("floor: building and framing the same events (per request: its three), no spool")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.atna", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")
    fl = sub.add_parser("floor", help="(child) the bare TLS syslog receiver")
    fl.add_argument("--pki", type=Path, required=True)
    sk = sub.add_parser("sink", help="the audit sink's cost per event (record, record_many), in one process")
    sk.add_argument("--n", type=int, default=2000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--events", type=int, default=Options.events)
    ap.add_argument("--entries", type=int, default=Options.entries)
    ap.add_argument("--queries", type=int, default=Options.queries)
    ap.add_argument("--rounds", type=int, default=Options.rounds)
    ap.add_argument("--clients", type=int, default=Options.clients)
    ap.add_argument("--skip-arr", action="store_true")
    ap.add_argument("--skip-iti18", action="store_true")
    ap.add_argument("--keep-db", action="store_true")
    ap.add_argument("--admin-url", default=os.environ.get("CARNET_BENCH_ADMIN_URL", Options.admin_url))
    args = ap.parse_args(argv)
    if args.cmd == "sink":
        return sink_bench(args.n)
    if args.cmd == "floor":
        d = args.pki
        return run_floor({"ca": d / "ca.pem", "server": d / "server.pem", "server_key": d / "server_key.pem"})
    rows, failures = run(Options(
        quick=args.quick, events=args.events, entries=args.entries, queries=args.queries, rounds=args.rounds,
        clients=args.clients, admin_url=args.admin_url, keep_db=args.keep_db, skip_arr=args.skip_arr,
        skip_iti18=args.skip_iti18,
    ))
    print_report(rows, failures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
